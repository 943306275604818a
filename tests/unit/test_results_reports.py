from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from PIL import Image
from test_results_support import case, framework, night, run

from lab.contract import Outcome, Phase
from lab.errors import LabError
from lab.results import charts
from lab.results.history import record_run, rows_for_run
from lab.results.reports import record_and_report, regenerate, write_reports
from lab.results.store import RunDir, load_results, write_results

XSD = Path(__file__).parents[1] / "data" / "junit.xsd"
OOM_LINE = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB | GPU 0"


def every_outcome(run_dir: Path, n: int = 6, status: str = "finished"):
    """A night with one case of each kind a user meets in a report."""
    log = str(run_dir / "logs" / "wan__sglang__a1.log")
    return run(
        n,
        [
            case(
                "flux",
                [
                    framework("sglang", 1.1, peak_mib=30_000),
                    framework("vllm-omni", 1.6, peak_mib=41_000, speedup=0.69),
                ],
            ),
            case(
                "wan",
                [
                    framework(
                        "sglang",
                        None,
                        Outcome.oom,
                        reason=OOM_LINE,
                        phase=Phase.startup,
                        log_path=log,
                        # Server logs carry ANSI colours and other bytes XML 1.0 cannot hold.
                        log_tail=["\x1b[31mERROR\x1b[0m worker died \x00\x08", OOM_LINE],
                    )
                ],
                Outcome.oom,
                reason=OOM_LINE,
                phase=Phase.startup,
            ),
            case(
                "ltx",
                [framework("sglang", 9.5, peak_mib=20_000)],
                Outcome.degraded,
                rung="text-encoder-cpu-offload",
                original_failure="oom: torch.OutOfMemoryError: CUDA out of memory.",
                vram_gib=32.0,
            ),
            case("hunyuan", [], Outcome.skipped, reason="needs 8 GPUs, this machine has 2"),
            case("infra", [], Outcome.infra_error, reason="docker: image not found"),
        ],
        status=status,
    )


@pytest.fixture
def written(tmp_path):
    """Five quiet nights, then night 6 with every outcome and `flux` 10 % slower."""
    db = tmp_path / "history.sqlite"
    for n in range(1, 6):
        record_run(
            db,
            run(
                n,
                [
                    case("flux", [framework("sglang", 1.0), framework("vllm-omni", 1.6)]),
                    case("wan", [framework("sglang", 30.0)]),
                ],
            ),
        )
    rd = RunDir.create(tmp_path, "20261106T010000Z-ab06")
    results = every_outcome(rd.path)
    record_and_report(rd, results, db)
    return rd, results, db


def test_junit_validates_against_the_schema_ci_reads(written):
    rd, _, _ = written
    xmlschema.XMLSchema(XSD).validate(str(rd.junit))  # raises with the offending element


def test_junit_says_per_case_what_ci_should_show(written):
    rd, _, _ = written
    suite = ET.parse(rd.junit).getroot().find("testsuite")
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == ("5", "1", "1", "1")
    cases = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert set(cases) == {"flux", "wan", "ltx", "hunyuan", "infra"}
    assert {tc.get("classname") for tc in cases.values()} == {"nightly-lab.nightly"}
    assert cases["wan"].get("time") == "60.000"

    failure = cases["wan"].find("failure")
    assert failure.get("type") == "oom" and OOM_LINE in failure.get("message")
    assert "ERROR worker died" in failure.text and "logs/wan__sglang__a1.log" in failure.text
    assert cases["infra"].find("error").get("type") == "infra_error"
    assert cases["hunyuan"].find("skipped").get("message") == "needs 8 GPUs, this machine has 2"
    ltx = cases["ltx"]
    assert ltx.find("failure") is None and ltx.find("error") is None  # degraded stays green
    assert "passed on rung text-encoder-cpu-offload" in ltx.find("system-out").text
    assert ltx.get("time") == "120.000"  # both attempts
    assert "regressed" in cases["flux"].find("system-out").text


def test_summary_has_a_section_per_outcome_with_the_reasons(written):
    rd, _, _ = written
    md = rd.summary.read_text()
    assert "**1 passed · 1 degraded · 2 failed · 1 skipped · 0 interrupted (5 cases)**" in md

    degraded = md.split("## Degraded (1)")[1].split("##")[0]
    row = next(line for line in degraded.splitlines() if line.startswith("| ltx"))
    assert "`text-encoder-cpu-offload`" in row and "torch.OutOfMemoryError" in row

    failed = md.split("## Failed (2)")[1].split("##")[0]
    wan = next(line for line in failed.splitlines() if line.startswith("| wan"))
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", wan)[1:-1]]
    assert cells[:4] == ["wan", "sglang", "oom", "startup"]
    assert cells[4] == OOM_LINE.replace("|", "\\|")  # the pipe in the log line is escaped
    assert cells[5] == "`logs/wan__sglang__a1.log`"

    regressions = md.split("## Regressions and improvements")[1].split("##")[0]
    assert "| flux | sglang | **regressed** | 1.100 s | +10.0 % vs median 1.00 s of 5 runs" in (
        regressions
    )
    assert "vllm-omni" not in regressions  # 1.6 s tonight as every night
    passed = md.split("## Passed (2)")[1].split("##")[0]
    row = (
        "| flux | vllm-omni | 1.600 s | n = 3: too few for a 3 % verdict; 6 repeats needed "
        "| 0.5 % | - | 1.0 % | 40.04 GiB | 0.69× |"
    )
    assert row in passed
    assert "| hunyuan | needs 8 GPUs, this machine has 2 |" in md


def test_an_interrupted_run_says_so_in_every_report(tmp_path):
    rd = RunDir.create(tmp_path, "20261106T010000Z-ab06")
    results = run(
        6,
        [case("flux"), case("wan", [], Outcome.interrupted, phase=Phase.measure, reason="SIGTERM")],
        status="interrupted",
    )
    write_results(rd, results)
    write_reports(rd, results, tmp_path / "history.sqlite")

    md = rd.summary.read_text()
    assert "**Interrupted**" in md and "## Interrupted (1)" in md
    assert "| wan | - | measure | SIGTERM |" in md
    err = ET.parse(rd.junit).getroot().find(".//testcase[@name='wan']/error")
    assert err.get("type") == "interrupted"
    xmlschema.XMLSchema(XSD).validate(str(rd.junit))
    assert "Interrupted</b>" in rd.report.read_text()


def test_report_html_is_one_self_contained_file_with_four_charts(written):
    rd, _, _ = written
    html = rd.report.read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:|//|file:)", html)  # nothing to fetch
    pngs = re.findall(r'<img class="chart" alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    assert [alt for alt, _ in pngs] == [
        "Outcome per night",
        "Latency per case over the history",
        "Peak GPU memory",
        "Speedup vs baseline",
    ]
    for _, data in pngs:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()  # a truncated or bad PNG fails here
        assert img.width > 300 and img.height > 100
    assert "text-encoder-cpu-offload" in html and "CUDA out of memory" in html


def test_report_html_without_history_still_has_its_own_run(tmp_path):
    rd = RunDir.create(tmp_path, "20261101T010000Z-ab01")
    results = night(1, {"flux": 1.0})
    write_reports(rd, results, None)
    html = rd.report.read_text()
    assert html.count("data:image/png;base64,") == 2  # outcome grid and latency of this night
    assert "no case compared two frameworks" in html


def test_a_corrupt_history_does_not_stop_the_reports(tmp_path):
    db = tmp_path / "history.sqlite"
    db.write_bytes(b"\x00garbage" * 512)
    rd = RunDir.create(tmp_path, "20261101T010000Z-ab01")
    reports = write_reports(rd, night(1, {"flux": 1.0}), db)
    assert reports.notes and "History unavailable" in reports.notes[0]
    assert "History unavailable" in rd.summary.read_text()
    assert "History unavailable" in rd.report.read_text()
    assert list(tmp_path.glob("history.sqlite.corrupt-*"))


def test_reports_are_appended_to_the_github_step_summary(tmp_path, monkeypatch):
    step = tmp_path / "step_summary.md"
    step.write_text("# build step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    rd = RunDir.create(tmp_path, "20261101T010000Z-ab01")
    write_reports(rd, night(1, {"flux": 1.0}), None)
    text = step.read_text()
    assert text.startswith("# build step\n")
    assert text.endswith(rd.summary.read_text() + "\n")


def test_lab_report_rewrites_the_reports_from_results_json(written):
    rd, _, db = written
    before = {p: p.read_text() for p in (rd.summary, rd.junit)}
    for p in (rd.summary, rd.junit, rd.report):
        p.unlink()
    regenerate(rd.path, db)
    assert {p: p.read_text() for p in (rd.summary, rd.junit)} == before
    assert rd.report.stat().st_size > 10_000


def test_finishing_a_run_on_a_corrupt_history_keeps_results_and_reports_then_fails(tmp_path):
    db = tmp_path / "history.sqlite"
    db.write_bytes(b"\x13garbage" * 512)
    rd = RunDir.create(tmp_path, "20261101T010000Z-ab01")
    results = night(1, {"flux": 1.0})
    with pytest.raises(LabError, match="not a readable SQLite database"):
        record_and_report(rd, results, db)
    assert load_results(rd) == results
    assert "History unavailable" in rd.summary.read_text()
    assert rd.junit.exists() and rd.report.exists()
    assert not db.exists()  # moved aside, and no new history made in the same breath
    assert len(list(tmp_path.glob("history.sqlite.corrupt-*"))) == 1


def test_an_interrupted_run_heads_its_stopped_cases_interrupted_not_failures(tmp_path):
    rd = RunDir.create(tmp_path, "20261106T010000Z-ab06")
    results = run(
        6,
        [case("flux"), case("wan", [], Outcome.interrupted, phase=Phase.measure, reason="SIGTERM")],
        status="interrupted",
    )
    write_reports(rd, results, tmp_path / "history.sqlite")
    headings = re.findall(r"<h2>([^<]*)</h2>", rd.report.read_text())
    assert "Interrupted (1)" in headings
    assert not any(h.startswith("Failures") for h in headings)


def test_report_html_lists_a_skipped_case_once_with_its_reason(written):
    rd, _, _ = written
    html = rd.report.read_text()
    assert html.count(">hunyuan<") == 1
    assert "needs 8 GPUs, this machine has 2" in html


def test_latency_chart_dates_carry_the_time(monkeypatch: pytest.MonkeyPatch):
    """Two runs on one day must not read as the same night on the chart's axis."""
    morning, evening = night(2, {"flux": 1.0}), night(3, {"flux": 1.1})
    morning.timestamp, evening.timestamp = "2026-12-02T01:00:00Z", "2026-12-02T13:30:00Z"
    drawn: list = []
    real_png = charts._png
    monkeypatch.setattr(charts, "_png", lambda fig: drawn.append(fig) or real_png(fig))
    rows = rows_for_run(morning) + rows_for_run(evening)
    assert charts.latency_history(rows, ["flux"], evening.run_id) is not None
    (fig,) = drawn
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["12-02 01:00", "12-02 13:30"]


def test_the_header_names_both_commits_whole_and_labelled(tmp_path):
    from lab.results.store import build_manifest, write_manifest

    tonight = run(3, [case("a", [framework("reference", 0.5)])])
    tonight.commit_sha, tonight.commit_source = (
        "nightly-lab-refserver 0.1.0",
        "server-version:reference",
    )
    rd = RunDir.create(tmp_path, tonight.run_id)
    lab_sha = "0123456789abcdef0123456789abcdef01234567"
    write_manifest(rd, build_manifest(tonight, case_json={}, lab_commit=lab_sha))
    reports = record_and_report(rd, tonight, tmp_path / "history.sqlite")
    summary, html = reports.summary.read_text(), reports.html.read_text()
    assert f"lab commit `{lab_sha}`" in summary
    served = "nightly-lab-refserver 0.1.0 (from server-version:reference)"
    assert f"served framework version/commit `{served}`" in summary
    assert lab_sha in html and served in html and "nightly-lab- (" not in html
