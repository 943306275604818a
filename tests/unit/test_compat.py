"""`lab compat sglang --upstream PATH` against a small upstream-shaped checkout the test writes:
its run_comparison.py prints the --dry-run lines in upstream's format (`Case: … | Framework: …`,
`[DRY-RUN] Would run: …`), from rules the test states itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import argparse, json, shlex
p = argparse.ArgumentParser()
p.add_argument("--config"); p.add_argument("--dry-run", action="store_true")
p.add_argument("--output")
a = p.parse_args()
EXTRA = {extra!r}
for case in json.load(open(a.config))["cases"]:
    for fw, cfg in case["frameworks"].items():
        print(f"Case: {{case['id']}} | Model: {{case['model']}} | Framework: {{fw}}")
        serve = shlex.split(cfg.get("serve_args", ""))
        cmd = ["sglang", "serve", "--model-path", case["model"], "--port", "30000", "--host",
               "127.0.0.1", "--strict-ports", "--master-port", "30005", "--scheduler-port", "30055"]
        if case["num_gpus"] > 1:
            cmd += ["--num-gpus", str(case["num_gpus"])]
        cmd += serve
        if "server" in serve:
            cmd += ["--warmup-resolutions", f"{{case['width']}}x{{case['height']}}"]
            if case.get("num_frames") is not None:
                cmd += ["--warmup-num-frames", str(case["num_frames"])]
        print(f"  [DRY-RUN] Would run: {{' '.join(cmd + EXTRA)}}")
"""

CASES = [
    {"id": "img", "model": "org/img", "task": "text-to-image", "prompt": "p", "width": 512,
     "height": 512, "seed": 1, "num_gpus": 2,
     "frameworks": {"sglang": {"serve_args": "--warmup-mode server --tp-size 2", "extra_env": {}}}},
    {"id": "vid", "model": "org/vid", "task": "text-to-video", "prompt": "p", "width": 640,
     "height": 352, "num_frames": 9, "seed": 1, "num_gpus": 1,
     "frameworks": {"sglang": {"serve_args": "--warmup-mode server", "extra_env": {}}}},
]  # fmt: skip


def checkout(tmp: Path, extra: list[str] | None = None, cases: list | None = None) -> Path:
    d = tmp / "sglang" / "scripts" / "ci" / "utils" / "diffusion"
    d.mkdir(parents=True, exist_ok=True)
    (d / "run_comparison.py").write_text(SCRIPT.format(extra=extra or []))
    config = {"measurement_repeats": 3, "cases": cases or CASES}
    (d / "comparison_configs.json").write_text(json.dumps(config))
    return tmp / "sglang"


def compat(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", "compat", "sglang", "--upstream", str(path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


def test_identical_command_lines_exit_0(tmp_path: Path) -> None:
    r = compat(checkout(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 command line(s) upstream, 2 from the lab" in r.stdout
    assert r.stdout.strip().endswith("identical")


def test_a_new_upstream_flag_exits_1_with_the_token_diff(tmp_path: Path) -> None:
    r = compat(checkout(tmp_path, extra=["--enable-new-thing"]))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "img [sglang]: token 21: upstream '--enable-new-thing', lab '(nothing)'" in r.stdout
    assert "vid [sglang]: token 19: upstream '--enable-new-thing'" in r.stdout


def test_an_unknown_config_key_exits_1_naming_case_and_key(tmp_path: Path) -> None:
    r = compat(checkout(tmp_path, cases=[dict(CASES[0], sglang_future_knob=True), CASES[1]]))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "unknown key (the lab's validator does not know it): img.sglang_future_knob" in r.stdout
    assert "the lab cannot dry-run this file" in r.stdout


def test_a_folder_that_is_no_sglang_checkout_is_exit_2(tmp_path: Path) -> None:
    r = compat(tmp_path)
    assert r.returncode == 2
    assert "run_comparison.py" in r.stderr and str(tmp_path) in r.stderr
