from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from test_results_support import case, framework, run

from lab.contract import Outcome, Phase
from lab.errors import LabError
from lab.redact import REDACTED, is_secret_name, redact_env
from lab.results.store import (
    RunDir,
    build_manifest,
    canonical_sha256,
    load_results,
    new_run_id,
    update_latest,
    write_manifest,
    write_results,
)


def test_run_ids_sort_by_start_time_and_do_not_collide_within_a_second():
    t = datetime(2026, 11, 21, 17, 47, 0, tzinfo=UTC)
    later = new_run_id(t + timedelta(seconds=1))
    same_second = {new_run_id(t) for _ in range(50)}
    assert re.fullmatch(r"20261121T174700Z-[0-9a-f]{4}", new_run_id(t))
    assert all(rid < later for rid in same_second)
    assert len(same_second) > 40  # a random suffix, not a counter that restarts


def test_results_json_round_trips_and_keeps_sglangs_top_level_keys(tmp_path):
    results = run(5, [case("flux", [framework("sglang", 1.5, peak_mib=2048)])])
    rd = RunDir.create(tmp_path, results.run_id)
    path = write_results(rd, results)

    data = json.loads(path.read_text())
    assert list(data)[:5] == ["timestamp", "commit_sha", "run_id", "measurement_repeats", "results"]
    assert data["results"][0]["latency_s"] == 1.5
    assert load_results(rd) == results
    assert load_results(rd.results) == results  # the file itself works too
    assert [p.name for p in rd.path.iterdir() if p.name.endswith(".tmp")] == []
    assert {p.name for p in rd.path.iterdir()} >= {"results.json", "logs", "attempts", "artifacts"}


def test_an_interrupted_runs_results_are_readable_with_unfinished_cases_interrupted(tmp_path):
    results = run(
        6,
        [
            case("done", [framework("sglang", 1.0)]),
            case("cut", [], Outcome.interrupted, phase=Phase.measure, reason="SIGTERM"),
        ],
        status="interrupted",
    )
    rd = RunDir.create(tmp_path, results.run_id)
    write_results(rd, results)

    back = load_results(rd.path)
    assert back.status == "interrupted"
    assert [c.outcome for c in back.cases] == [Outcome.passed, Outcome.interrupted]
    rows = json.loads(rd.results.read_text())["results"]
    assert rows[1]["error"] == "interrupted: SIGTERM"


@pytest.mark.parametrize(
    "content, words",
    [(b"{not json", "not valid JSON"), (b'{"run_id": 3}', "not a lab results file"), (b"[]", "")],
)
def test_an_unreadable_results_file_is_a_lab_error_naming_it(tmp_path, content, words):
    (tmp_path / "results.json").write_bytes(content)
    with pytest.raises(LabError, match=re.escape(str(tmp_path / "results.json"))) as err:
        load_results(tmp_path)
    assert words in str(err.value)


def test_a_missing_results_file_is_a_lab_error(tmp_path):
    with pytest.raises(LabError, match="no such file"):
        load_results(tmp_path / "nope")


def test_latest_points_at_the_newest_run_and_is_replaced_not_rewritten(tmp_path):
    first, second = RunDir.create(tmp_path, "a"), RunDir.create(tmp_path, "b")
    update_latest(tmp_path, first)
    update_latest(tmp_path, second)

    link = tmp_path / "latest"
    assert link.is_symlink() and os.readlink(link) == "b"  # relative: the folder can move
    assert (link / "logs").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "latest"]  # no temp links


def test_latest_refuses_to_replace_a_real_folder(tmp_path):
    (tmp_path / "latest").mkdir()
    with pytest.raises(LabError, match="not a symlink"):
        update_latest(tmp_path, RunDir.create(tmp_path, "a"))


def test_manifest_has_what_a_replay_needs_and_no_secret_values(tmp_path):
    cmd = ["sglang", "serve", "--model-path", "org/flux", "--port", "30000"]
    env = {"HF_TOKEN": "hf_realvalue", "MY_API_KEY": "k-123", "CUDA_VISIBLE_DEVICES": "0"}
    results = run(3, [case("flux", [framework("sglang", 1.0, command=cmd, env=env)])])
    results.cases[0].image, results.cases[0].image_id = "lab/sglang:nightly", "sha256:abc"
    spec = {"id": "flux", "model": "org/flux", "frameworks": {"sglang": {"serve_args": ""}}}
    reordered = dict(reversed(list(spec.items())))

    m = build_manifest(
        results,
        case_json={"flux": reordered},
        host_gpu={"model": "H100", "driver": "580.1", "cuda": "13.0"},
        lab_commit=None,
    )
    path = write_manifest(RunDir.create(tmp_path, results.run_id), m)
    text = path.read_text()

    assert "hf_realvalue" not in text and "k-123" not in text
    c = json.loads(text)["cases"][0]
    assert c["sha256"] == canonical_sha256(spec)  # key order does not change the hash
    assert (c["image"], c["image_id"]) == ("lab/sglang:nightly", "sha256:abc")
    fw = c["attempts"][0]["frameworks"][0]
    assert fw["command"] == cmd
    assert fw["command_line"] == "sglang serve --model-path org/flux --port 30000"
    assert fw["env"] == {"HF_TOKEN": REDACTED, "MY_API_KEY": REDACTED, "CUDA_VISIBLE_DEVICES": "0"}
    assert m["methodology"] == {
        "name": "client-e2e-v1",
        "warmup_requests": 1,
        "measurement_repeats": 3,
    }
    assert m["config"]["sha256"] == "0" * 64 and m["runtime"] == "docker"
    assert m["host"]["gpu"]["driver"] == "580.1" and m["lab"]["commit"] is None


def test_manifest_records_the_lab_checkouts_commit_or_none():
    m = build_manifest(run(1, []), case_json={})
    commit = m["lab"]["commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "OPENAI_API_KEY",
        "DB_PASSWORD",
        "client_secret",
    ],
)
def test_secret_names_are_recognised(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES", "PATH", "PYTHONPATH", "HF_HOME"]
)
def test_ordinary_names_are_not_secrets(name):
    assert not is_secret_name(name)


def test_redact_env_hides_declared_names_too_and_leaves_the_input_alone():
    env = {"HF_TOKEN": "hf_x", "WANDB_ENTITY": "team", "EMPTY_TOKEN": ""}
    out = redact_env(env, secret_names=["wandb_entity"])
    assert out == {"HF_TOKEN": REDACTED, "WANDB_ENTITY": REDACTED, "EMPTY_TOKEN": ""}
    assert env["HF_TOKEN"] == "hf_x"
