"""The shape of sglang's test/registered/rl/test_weight_checker_e2e.py (PR #24559), against the
lab's reference LLM server. One server for the class (setUpClass), tests that post to it, the
process tree killed in tearDownClass. The lab's ladder reaches the server through
$LAB_SERVER_EXTRA_ARGS, which the launcher appends (lab.e2e.with_lab_args).

Run by hand: python -m lab.e2e configs/tests/test_weight_checker_e2e.py --junit /tmp/junit.xml
"""

import unittest

import requests

from lab.e2e import default_url, kill_process_tree, model_for_test, popen_launch_server

MODEL = model_for_test("ref-llm://tiny")  # $LAB_MODEL: the case's model


class TestWeightCheckerE2E(unittest.TestCase):
    """The reset case mutates the weights; it is named to sort last."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.url = default_url()
        # sglang's default --mem-fraction-static (0.88); the ladder lowers it
        cls.process = popen_launch_server(MODEL, cls.url, timeout=300, other_args=[])

    @classmethod
    def tearDownClass(cls) -> None:
        kill_process_tree(cls.process.pid)

    def _post(self, action: str) -> requests.Response:
        return requests.post(f"{self.url}/weights_checker", json={"action": action}, timeout=120)

    def test_a_chat_completion_answers(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        r = requests.post(f"{self.url}/v1/chat/completions", json=body, timeout=120)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["usage"]["completion_tokens"], 4)

    def test_b_snapshot_then_compare_unchanged_succeeds(self) -> None:
        resp = self._post("snapshot")
        self.assertEqual(resp.status_code, 200, resp.text)
        self.assertTrue(resp.json()["success"])
        resp = self._post("compare")
        self.assertEqual(resp.status_code, 200, resp.text)
        self.assertTrue(resp.json()["success"], resp.json())

    def test_z_reset_then_compare_reports_a_difference(self) -> None:
        self.assertTrue(self._post("snapshot").json()["success"])
        self.assertTrue(self._post("reset").json()["success"])
        resp = self._post("compare")
        self.assertEqual(resp.status_code, 200, resp.text)
        self.assertFalse(resp.json()["success"])


if __name__ == "__main__":
    unittest.main()
