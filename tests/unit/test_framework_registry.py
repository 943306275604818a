"""A framework is one module and one registry line: the config accepts it, and the lab asks the
class for its command line, image, VRAM flag and request body; nothing else needs to name it."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image
from pydantic import ValidationError

from lab import config, frameworks
from lab.config import Case, FrameworkConfig
from lab.frameworks.base import Framework
from lab.host.plan import default_image
from lab.host.vram import plan_vram
from lab.sandbox.client import Client


class Toy(Framework):
    """A throwaway server: `toy-serve MODEL`, its own image, its own budget flag and body."""

    name = "toy"
    image = "example.org/toy:1"
    device_memory_flag = "--toy-memory-gib"

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        return ["toy-serve", case.model, "--port", str(port)]

    def request_body(self, case: Case, prompt: str, image_input: bytes | None) -> dict[str, Any]:
        return {"toy_prompt": prompt, "toy_side": case.width}


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(frameworks.REGISTRY, Toy.name, Toy)  # the one registry line


def _case() -> Case:
    return Case.model_validate(
        {
            "id": "toy_t2i",
            "model": "toy/model",
            "task": "text-to-image",
            "prompt": "p",
            "width": 8,
            "height": 8,
            "num_gpus": 0,
            "frameworks": {"toy": {}},
        }
    )


class _Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        _Recorder.bodies.append(json.loads(self.rfile.read(n)))
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG")
        answer = json.dumps({"data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_a_new_framework_is_planned_with_its_image_flag_command_and_body(
    toy: None, tmp_path: Path
) -> None:
    case = _case()  # the config validates it: "toy" is a known framework now
    assert case.runnable_frameworks == ["toy"]
    cfg = FrameworkConfig()
    adapter = frameworks.get_framework("toy")
    assert adapter.command(case, cfg, "127.0.0.1", 30000, 0, [], "/c") == [
        "toy-serve",
        "toy/model",
        "--port",
        "30000",
    ]
    assert default_image("toy") == "example.org/toy:1"
    assert plan_vram("toy_t2i", 4.0, [], ["toy"]) == (None, {"toy": ["--toy-memory-gib", "4"]})
    assert "toy" in frameworks.framework_names()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = Client(url, case, adapter, cfg, 10.0, None, tmp_path).send("a red cube")
    finally:
        server.shutdown()
    assert _Recorder.bodies == [{"toy_prompt": "a red cube", "toy_side": 8}]
    assert out.kind == "image"


def test_without_its_registry_line_the_config_refuses_the_framework() -> None:
    with pytest.raises(ValidationError, match="unknown framework 'toy'; known: sglang"):
        _case()


def test_the_config_s_llm_servers_are_the_registry_s_chat_servers() -> None:
    assert config.llm_frameworks() == ("sglang-srt", "vllm", "reference-llm", "transformers")
