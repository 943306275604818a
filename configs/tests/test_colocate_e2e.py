"""An e2e test of a chosen size, for GPU sharing (configs/gpu-colocate.json): launch the reference
LLM server on a device of $LAB_COLOCATE_GIB (its pool takes 0.88 of that), ask a few chat
completions over $LAB_COLOCATE_HOLD_S seconds, stop it.

$LAB_COLOCATE_NEEDS_GIB plays a process the lab cannot cap: it needs that much of the card and,
placed on a smaller share ($LAB_GPU_SHARE_GIB, set by the lab on a shared GPU), fails with
torch's own OutOfMemoryError, as such a process would. Run by hand:
LAB_COLOCATE_GIB=5 python -m lab.e2e configs/tests/test_colocate_e2e.py --junit /tmp/junit.xml
"""

import os
import time
import unittest

import requests

from lab.e2e import default_url, kill_process_tree, model_for_test, popen_launch_server

MODEL = model_for_test("ref-llm://tiny")
GIB = os.environ.get("LAB_COLOCATE_GIB", "")
HOLD_S = float(os.environ.get("LAB_COLOCATE_HOLD_S", "0") or 0)
NEEDS_GIB = os.environ.get("LAB_COLOCATE_NEEDS_GIB", "")


class TestColocate(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        share = os.environ.get("LAB_GPU_SHARE_GIB", "")
        if NEEDS_GIB and share and float(share) < float(NEEDS_GIB):
            from lab.refserver.budget import GIB as B
            from lab.refserver.budget import device_oom

            raise device_oom(0, int(float(NEEDS_GIB) * B), int(float(share) * B), 0)
        cls.url = default_url()
        args = ["--device-memory-gib", GIB] if GIB else []
        cls.process = popen_launch_server(MODEL, cls.url, timeout=300, other_args=args)

    @classmethod
    def tearDownClass(cls) -> None:
        kill_process_tree(cls.process.pid)

    def test_chat_completions_answer(self) -> None:
        deadline = time.monotonic() + HOLD_S
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        while True:
            r = requests.post(f"{self.url}/v1/chat/completions", json=body, timeout=120)
            self.assertEqual(r.status_code, 200, r.text)
            self.assertEqual(r.json()["usage"]["completion_tokens"], 4)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)


if __name__ == "__main__":
    unittest.main()
