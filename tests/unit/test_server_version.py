"""The server's reported version is provenance: asked once the server is ready, and a server
without the endpoint (or with a strange answer) leaves it None, never failing the attempt."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lab.sandbox.client import server_version

ANSWERS: dict[str, tuple[int, bytes]] = {
    "/server_info": (200, json.dumps({"version": "0.5.23", "tp_size": 1}).encode()),
    "/version": (200, b"not json"),
    "/no_version": (200, json.dumps({"model_path": "m"}).encode()),
    "/list": (200, b"[1, 2]"),
}


class _Server(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code, body = ANSWERS.get(self.path, (404, b'{"detail": "Not Found"}'))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_reported_version_is_read_from_the_framework_s_endpoint(base_url: str) -> None:
    assert server_version(base_url, "/server_info") == "0.5.23"


@pytest.mark.parametrize("path", [None, "/missing", "/version", "/no_version", "/list"])
def test_no_endpoint_or_no_version_in_the_answer_is_none(base_url: str, path: str | None) -> None:
    assert server_version(base_url, path) is None


def test_a_server_that_no_longer_answers_is_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused
        assert server_version(f"http://127.0.0.1:{port}", "/server_info") is None
