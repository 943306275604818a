"""report.html as a user sees it: opened from disk in Debian's real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab.contract import AttemptResult, FrameworkResult, Outcome, Phase, Telemetry
from lab.results.history import record_run
from lab.results.model import CaseResult, RunResults
from lab.results.reports import record_and_report
from lab.results.store import RunDir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)"
    ),
    pytest.mark.slow,
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
WIDTH, HEIGHT = 1200, 4000
CASES = {"flux_t2i": 1.2, "qwen_image": 2.4, "wan_t2v": 38.0, "ltx_ti2v": 12.0, "zimage": 0.8}


def _night(n: int) -> RunResults:
    """Night n: every case on sglang and vllm-omni; wan OOMs on nights 4 and 6, ltx degrades."""
    run_id = f"202611{n:02d}T010000Z-ab{n:02d}"
    t0 = 1_795_000_000.0 + n * 86_400
    cases = []
    for i, (cid, lat) in enumerate(CASES.items()):
        slow = 1.12 if (n == 6 and cid == "flux_t2i") else 1.0
        frs = [
            FrameworkResult(
                framework=fw,
                outcome=Outcome.passed,
                latency_s=lat * k * slow,
                latency_samples_s=[lat * k * slow * f for f in (0.99, 1.0, 1.01)],
                measurement_count=3,
                telemetry=Telemetry(peak_gpu_memory_mib=(20 + 6 * i + 4 * j) * 1024),
                speedup_vs_baseline=None if j == 0 else 1 / k,
            )
            for j, (fw, k) in enumerate((("sglang", 1.0), ("vllm-omni", 1.35)))
        ]
        outcome, reason, rung = Outcome.passed, "", None
        if cid == "wan_t2v" and n in (4, 6):
            outcome, reason = Outcome.oom, "torch.OutOfMemoryError: CUDA out of memory."
            frs = [
                FrameworkResult(
                    framework="sglang",
                    outcome=Outcome.oom,
                    phase=Phase.startup,
                    reason=reason,
                    log_tail=["loading weights", reason],
                )
            ]
        elif cid == "ltx_ti2v" and n == 6:
            outcome, rung = Outcome.degraded, "cpu-offload"
        attempt = AttemptResult(
            run_id=run_id,
            case_id=cid,
            attempt=1,
            rung=rung or "as-configured",
            outcome=Outcome.passed if outcome is Outcome.degraded else outcome,
            reason=reason,
            frameworks=frs,
            started_at=t0,
            finished_at=t0 + 90,
        )
        cases.append(
            CaseResult(
                case_id=cid,
                model=f"org/{cid}",
                frameworks=["sglang", "vllm-omni"],
                outcome=outcome,
                phase=Phase.startup if outcome is Outcome.oom else None,
                reason=reason,
                degraded_rung=rung,
                original_failure="oom: CUDA out of memory" if rung else None,
                attempts=[attempt],
            )
        )
    return RunResults(
        run_id=run_id,
        timestamp=f"2026-11-{n:02d}T01:00:00Z",
        gpu_model="NVIDIA H100 80GB HBM3",
        runtime="docker",
        cases=cases,
    )


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _color_mask(rgb: np.ndarray, hex_color: str, tol: int = 12) -> np.ndarray:
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(rgb.astype(int) - target) <= tol).all(axis=-1)


def _has_solid_block(mask: np.ndarray, size: int) -> bool:
    """Whether some size×size square is all of the colour (a chart area, not a text badge)."""
    # Summed-area table: the count of matching pixels in every window in O(pixels).
    s = np.pad(mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]
    return bool((win == size * size).any())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    db = root / "history.sqlite"
    for n in range(1, 6):
        record_run(db, _night(n))
    tonight = _night(6)
    run_dir = RunDir.create(root, tonight.run_id)
    # Where a real run keeps them: one log per framework and attempt, the generated image in
    # the attempt's folder; absolute paths, as results.json records them.
    for cs in tonight.cases:
        for a in cs.attempts:
            for fr in a.frameworks:
                log = run_dir.logs / f"{cs.case_id}__{fr.framework}__a{a.attempt}.log"
                log.write_text("server log\n")
                fr.log_path = str(log)
                if fr.outcome is Outcome.passed:
                    art = run_dir.path / "attempts" / f"{cs.case_id}__a{a.attempt}" / "artifacts"
                    art.mkdir(parents=True, exist_ok=True)
                    (art / f"{cs.case_id}__{fr.framework}.png").write_bytes(b"png")
                    fr.artifact = str(art / f"{cs.case_id}__{fr.framework}.png")
    tonight.commit_sha, tonight.commit_source = "0123456789abcdef0123", "GITHUB_SHA"
    tonight.host, tonight.shared_host = "gpu-node-7", True
    tonight.shared_with = ["20261106T005500Z-cd01"]
    return record_and_report(run_dir, tonight, db).html


def test_report_links_every_cases_logs_and_images_relative_to_its_folder(report, tmp_path):
    # Moved, as an archived run folder is: the links must still resolve.
    moved = tmp_path / "archive" / report.parent.name
    shutil.copytree(report.parent, moved)
    dom = _chromium("--dump-dom", (moved / report.name).as_uri(), profile=tmp_path / "p").stdout
    hrefs = re.findall(r'<a class="file" href="([^"]+)">([^<]+)</a>', dom)
    for href, _ in hrefs:
        assert not href.startswith(("/", "file:")), href
        assert (moved / href).is_file(), f"{href} does not resolve inside the moved folder"
    labels = {label for _, label in hrefs}
    assert {"log a1", "image a1"} <= labels
    for cid in CASES:  # passing cases too
        assert any(href.startswith(f"logs/{cid}__") for href, _ in hrefs), cid
    assert sum(label == "image a1" for _, label in hrefs) >= len(CASES) - 1


def test_report_header_says_commit_host_runtime_duration_and_sharing(report, tmp_path):
    dom = _chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile").stdout
    facts = dict(
        re.findall(r'<tr class="fact" data-fact="([^"]+)"><th>[^<]*</th><td>([^<]*)</td>', dom)
    )
    # Two labelled commits, each whole: the served framework's and the lab's own.
    assert facts["served framework version/commit"] == "0123456789abcdef0123 (from GITHUB_SHA)"
    assert facts["lab commit"]
    assert facts["host"] == "gpu-node-7"
    assert facts["runtime"] == "docker"
    assert facts["duration"].startswith("1 min 30 s")
    assert "20261106T005500Z-cd01" in facts["host shared"]
    assert facts["started"] == "2026-11-06T01:00:00Z"


def test_report_dom_holds_the_four_charts_inline(report, tmp_path):
    dom = _chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile").stdout
    srcs = re.findall(
        r'<img class="chart" alt="([^"]+)" src="(data:image/png;base64,[^"]{200,})"', dom
    )
    assert [alt for alt, _ in srcs] == [
        "Outcome per night",
        "Latency per case over the history",
        "Peak GPU memory",
        "Speedup vs baseline",
    ]
    assert "flux_t2i" in dom and "regressed" in dom and "cpu-offload" in dom


def test_report_renders_its_charts_in_chromium(report, tmp_path):
    shot = tmp_path / "report.png"
    _chromium(
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        report.as_uri(),
        profile=tmp_path / "profile",
    )
    rgb = np.asarray(Image.open(shot).convert("RGB"))
    assert rgb.shape[:2] == (HEIGHT, WIDTH)
    non_white = (rgb < 235).any(axis=-1).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the page is drawn"

    # The outcome grid: cells are solid squares in the outcome colours, bigger than any badge.
    for name, color in (("passed", "#2e7d32"), ("failed", "#c62828"), ("degraded", "#f9a825")):
        assert _has_solid_block(_color_mask(rgb, color), 30), f"no {name} cell in the outcome grid"
    # The latency lines: matplotlib's default blue and orange, used nowhere in the page's CSS.
    assert _color_mask(rgb, "#ff7f0e", tol=30).sum() > 500, "no vllm-omni line in the latency chart"
    # The peak-memory bars.
    assert _has_solid_block(_color_mask(rgb, "#1f77b4"), 12), "no peak-memory bars"
