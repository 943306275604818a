"""A user's own image server for the `custom` framework: /health, and /v1/images/generations
answering a PNG of the asked size after DELAY_MS (the server's own work). With --perf-dumps it
writes sglang's perf dump where a request's `perf_dump_path` says; with --perf-dumps-until N it
stops writing them after N requests (a server that should write them and stops).

Its log says how long it took from its process's start to listening (`LISTENING <seconds>`)
and what each request cost it (`SERVED <seconds>`): benchmarks/attempt_overhead.py subtracts
those from an attempt's wall time.
Run: python image_server.py PORT [DELAY_MS] [--perf-dumps] [--perf-dumps-until N]"""

from __future__ import annotations

import base64
import http.server
import json
import os
import struct
import sys
import time
import zlib


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def since_process_start() -> float:
    """Seconds since this process began: /proc's start tick against the uptime, one clock."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = sys.argv[1:]
    port = int(args[0])
    delay_s = float(args[1]) / 1000 if len(args) > 1 and args[1][0].isdigit() else 0.2
    dumps = "--perf-dumps" in args
    until = int(args[args.index("--perf-dumps-until") + 1]) if "--perf-dumps-until" in args else -1
    served = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, code: int, doc: object) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self._answer(200 if self.path == "/health" else 404, {"ok": True})

        def do_POST(self) -> None:
            t0 = time.perf_counter()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            w, h = (int(v) for v in body.get("size", "64x64").split("x"))
            time.sleep(delay_s)
            image = base64.b64encode(png(w, h)).decode()
            served[0] += 1
            path = body.get("perf_dump_path")
            if dumps and path and (until < 0 or served[0] <= until):
                doc = {"total_duration_ms": delay_s * 1000, "steps": [], "denoise_steps_ms": []}
                with open(path + ".tmp", "w") as f:
                    json.dump(doc, f)
                os.replace(path + ".tmp", path)
            self._answer(200, {"data": [{"b64_json": image}]})
            print(f"SERVED {time.perf_counter() - t0:.6f}", flush=True)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", port), Handler)
    print(f"LISTENING {since_process_start():.3f}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
