"""The lab speaks sglang's nightly dialect: its server command lines and the flags on them.

Upstream facts were read from sgl-project/sglang, scripts/ci/utils/diffusion/run_comparison.py
and comparison_configs.json at commit 03635624690c11ff6ea89d288ca1854b521d9b1c. That sglang's own
parser accepts every line: tests/integration/test_real_parsers.py."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from lab.config import load_suite
from lab.frameworks.sglang import SGLANG_TAG, SGLANG_VERSION
from lab.host.commandlines import suite_command_lines

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
PINNED = DATA / "nightly_command_lines.json"


def _pinned_text(lines: dict) -> dict:
    return {
        case: {
            rung: {
                fw: shlex.join(argv).replace(sys.executable, "{python}") for fw, argv in f.items()
            }
            for rung, f in rungs.items()
        }
        for case, rungs in lines.items()
    }


def test_every_case_and_rung_of_the_nightly_has_its_pinned_command_line() -> None:
    got = _pinned_text(suite_command_lines(load_suite(REPO / "configs" / "nightly.json")))
    if os.environ.get("LAB_REPIN_COMMAND_LINES") == "1":  # after a deliberate change
        PINNED.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(PINNED.read_text())
    assert set(got) == set(want), "cases differ from the pinned set"
    for case in want:
        assert got[case] == want[case], f"{case}: command lines moved (see {PINNED.name})"


def test_sglang_cases_get_upstreams_warmup_shape_flags() -> None:
    """run_comparison.py's rule: --warmup-mode server → + --warmup-resolutions WxH, and for a
    case with num_frames + --warmup-num-frames N; a flag serve_args already set is kept."""
    lines = suite_command_lines(load_suite(DATA / "sglang_comparison_configs.json"))
    t2i = lines["flux1_dev_t2i_1024"]["as-configured"]["sglang"]
    assert t2i[-2:] == ["--warmup-resolutions", "1024x1024"]
    assert "--warmup-num-frames" not in t2i
    video = lines["wan22_t2v_a14b_720p"]["as-configured"]["sglang"]
    assert video[-4:] == ["--warmup-resolutions", "1280x720", "--warmup-num-frames", "81"]
    # every upstream case warms up on the server, so every line carries the shape
    assert all(
        "--warmup-resolutions" in rungs["as-configured"]["sglang"] for rungs in lines.values()
    )


def test_warmup_shape_is_not_added_twice_nor_without_server_warmup(tmp_path: Path) -> None:
    cases = [
        ("given", "--warmup-mode=server --warmup-resolutions 64x64 --warmup-num-frames=4"),
        ("request", "--warmup-mode request"),
        ("none", ""),
    ]
    suite = {
        "cases": [
            {
                "id": cid,
                "model": "m/x",
                "task": "text-to-video",
                "width": 320,
                "height": 240,
                "num_frames": 9,
                "frameworks": {"sglang": {"serve_args": args}},
            }
            for cid, args in cases
        ]
    }
    (tmp_path / "s.json").write_text(json.dumps(suite))
    lines = suite_command_lines(load_suite(tmp_path / "s.json"))
    given = lines["given"]["as-configured"]["sglang"]
    assert given.count("--warmup-resolutions") == 1 and "320x240" not in given
    assert not any(
        a.startswith("--warmup-num-frames") and a != "--warmup-num-frames=4" for a in given
    )
    for cid in ("request", "none"):
        assert "--warmup-resolutions" not in lines[cid]["as-configured"]["sglang"]


def test_dry_run_prints_the_pinned_first_rung_even_without_gpus() -> None:
    """`lab nightly --dry-run` on a machine without GPUs still shows what the nightly starts."""
    config = str(DATA / "sglang_comparison_configs.json")
    proc = subprocess.run(
        [sys.executable, "-m", "lab.cli", "nightly", "--config", config, "--dry-run",
         "--runtime", "local", "--gpus", "none"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = {}
    case = None
    for line in proc.stdout.splitlines():
        if line.startswith("== "):
            case = line.split()[1]
        elif line.startswith("   sglang (not started): "):
            printed[case] = shlex.split(line.split(": ", 1)[1])
    lines = suite_command_lines(load_suite(DATA / "sglang_comparison_configs.json"))
    assert printed == {c: r["as-configured"]["sglang"] for c, r in lines.items()}


def test_sglang_version_is_one_setting_the_image_build_and_docs_follow() -> None:
    """lab/frameworks/sglang.py sets it; the build script reads it, compose and README agree."""
    assert f"v{SGLANG_VERSION}" == SGLANG_TAG
    build = (REPO / "docker" / "build-images.sh").read_text()
    assert "lab/frameworks/sglang.py" in build and "v0.5." not in build
    assert "SGLANG_TAG=" not in (REPO / "docker" / "sglang.Dockerfile").read_text()
    assert f"SGLANG_TAG:-{SGLANG_TAG}}}" in (REPO / "compose.yaml").read_text()
    readme = (REPO / "README.md").read_text()
    assert f"`{SGLANG_TAG}`" in readme and f"lmsysorg/sglang:{SGLANG_TAG}" in readme


def test_comfyui_is_stated_precisely_in_list_and_dry_run() -> None:
    """What upstream would start for comfyui and why it runs neither there nor here."""
    config = str(DATA / "sglang_comparison_configs.json")
    for argv in (["list"], ["nightly", "--dry-run", "--runtime", "local"]):
        proc = subprocess.run(
            [sys.executable, "-m", "lab.cli", *argv, "--config", config, "--gpus", "none"],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        line = next(ln for ln in proc.stdout.splitlines() if "comfyui: upstream would start" in ln)
        assert "${COMFY_ROOT}/main.py --listen 127.0.0.1 --port 30000 --fast-disk" in line
        assert "comfyui_workflows/minimax_h3_i2va_5090.json" in line
        assert "never reaches comfyui" in line and "no comfyui adapter" in line
