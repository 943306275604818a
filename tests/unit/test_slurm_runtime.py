"""The slurm runtime's decisions without a cluster: the sbatch line, what Slurm's job states
mean for an attempt, the GPUs a node was granted, and that secrets never reach a file. (The real
cluster: tests/integration/test_slurm.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lab.config import SlurmSettings, load_suite
from lab.contract import Outcome
from lab.errors import ConfigError, LabError
from lab.host.gpus import GpuInfo
from lab.host.plan import RunContext, attempt_request, plan_cases
from lab.host.runtimes.base import SandboxRequest, places_work
from lab.host.runtimes.slurm import SlurmRuntime
from lab.host.runtimes.slurm_job import build_request, fill_spec, granted_gpus
from lab.host.runtimes.slurm_states import (
    JobState,
    format_time_limit,
    parse_comment,
    parse_duration,
    parse_scontrol,
    verdict,
)
from lab.host.runtimes.slurm_submit import (
    job_comment,
    job_script,
    load_node_request,
    node_request,
    sbatch_argv,
)

GIB = 1024.0


def request(tmp_path: Path, **over: object) -> SandboxRequest:
    kw: dict[str, object] = {
        "run_id": "20261121T000000Z-abcd",
        "case_id": "big_case",
        "attempt": 2,
        "spec_path": tmp_path / "attempts" / "big_case__a2" / "spec.json",
        "run_dir": tmp_path,
        "config_dir": tmp_path,
        "env": {"CUDA_VISIBLE_DEVICES": "", "HF_TOKEN": "hf_very_secret", "NCCL_DEBUG": "INFO"},
        "gpu_count": 2,
        "time_limit_s": 330.0,
    }
    kw.update(over)
    return SandboxRequest(**kw)  # type: ignore[arg-type]


def suite(tmp_path: Path, cases: list[dict[str, object]], **top: object) -> Path:
    p = tmp_path / "suite.json"
    p.write_text(json.dumps({"cases": cases, **top}))
    return p


def test_sbatch_line_names_the_attempt_asks_gpus_and_time_and_suite_args_come_last(
    tmp_path: Path,
) -> None:
    req = request(tmp_path)
    settings = SlurmSettings(partition="gpu", sbatch_args=["--time=5", "--qos=nightly"])
    argv = sbatch_argv(settings, req, Path("/s/job.sh"), job_comment(req, "host:1:2.0"))
    assert argv[:2] == ["sbatch", "--parsable"]
    assert "--job-name=lab-20261121T000000Z-abcd-big_case-a2" in argv
    assert (
        "--comment=nightly-lab;run=20261121T000000Z-abcd;case=big_case;attempt=2;host=host:1:2.0"
        in argv
    )
    assert "--gres=gpu:2" in argv and "--partition=gpu" in argv and "--no-requeue" in argv
    assert "--time=0-00:08:00" in argv  # 330 s bound + 120 s start-up, in whole minutes
    assert argv[-3:] == ["--time=5", "--qos=nightly", "/s/job.sh"]  # sbatch: the last one wins
    typed = SlurmSettings(gpu_option="gpus", gpu_type="h100")
    assert "--gpus=h100:2" in sbatch_argv(typed, req, Path("j"), "c")
    cpu = sbatch_argv(SlurmSettings(), request(tmp_path, gpu_count=0), Path("j"), "c")
    assert not any(a.startswith(("--gres", "--gpus")) for a in cpu)


def test_durations_in_slurms_formats() -> None:
    assert parse_duration("UNLIMITED") is None
    assert parse_duration("1-02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    assert parse_duration("00:01:00") == 60
    assert parse_duration("5:30") == 330
    assert parse_duration("7") == 420  # bare minutes
    assert format_time_limit(61) == "0-00:02:00"
    assert format_time_limit(3 * 86400) == "3-00:00:00"


def test_scontrol_line_keeps_values_with_spaces() -> None:
    line = (
        "JobId=12 JobName=lab-r-c-a1 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15 "
        "TimeLimit=00:01:00 NodeList=node1 Command=/runs/a/slurm-job.sh 1 "
        "Comment=nightly-lab;run=r;case=c;attempt=1 AllocNode:Sid=vm:640 TresPerNode=gres:gpu:1"
    )
    f = parse_scontrol(line)
    assert f["Command"] == "/runs/a/slurm-job.sh 1" and f["AllocNode:Sid"] == "vm:640"
    assert parse_comment(f["Comment"]) == {"run": "r", "case": "c", "attempt": "1"}
    assert parse_comment("someone else's job") is None


def job(state: str, reason: str = "None", code: int = 0, sig: int = 0) -> JobState:
    return JobState("12", state, reason, "node1", 60.0, code, sig, "scontrol")


def test_how_a_job_ended_decides_the_attempt() -> None:
    assert verdict(job("COMPLETED"), False).exit_code == 0
    failed = verdict(job("FAILED", "NonZeroExitCode", 3), False)
    assert failed.exit_code == 3 and failed.outcome is None  # the result file decides
    assert verdict(job("FAILED", "RaisedSignal:9", 0, 9), False).exit_code == 137
    timed = verdict(job("TIMEOUT", "TimeLimit", 0, 15), False)
    assert timed.outcome is Outcome.timeout and "TimeLimit" in timed.reason
    assert "time limit 0-00:01:00" in timed.reason
    theirs = verdict(job("CANCELLED", code=0, sig=15), False)
    assert theirs.outcome is Outcome.infra_error and "not by the lab" in theirs.reason
    ours = verdict(job("CANCELLED", code=0, sig=15), True)
    assert ours.outcome is None and ours.exit_code is None  # the run is stopping
    for state in ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL"):
        sx = verdict(job(state, "NodeDown"), False)
        assert sx.outcome is Outcome.infra_error and state in sx.reason and "NodeDown" in sx.reason
    assert verdict(job("OUT_OF_MEMORY"), False).oom_killed


def test_secrets_travel_by_name_only(tmp_path: Path) -> None:
    req = request(tmp_path)
    data = node_request(req, "docker")
    assert data["secret_env"] == ["HF_TOKEN"]
    text = json.dumps(data) + job_script("/py", Path("/r/req.json"), Path("/lab"))
    assert "hf_very_secret" not in text and "NCCL_DEBUG" in text
    assert "hf_very_secret" not in " ".join(sbatch_argv(SlurmSettings(), req, Path("j"), "c"))


def test_granted_gpus_from_device_ids_else_the_count() -> None:
    nvml = [GpuInfo(i, "H100", f"GPU-{i}", 80 * GIB) for i in range(4)]
    assert granted_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, nvml) == (nvml[2:], "CUDA_VISIBLE_DEVICES")
    assert granted_gpus({"SLURM_JOB_GPUS": "1"}, nvml) == ([nvml[1]], "SLURM_JOB_GPUS")
    assert granted_gpus({"CUDA_VISIBLE_DEVICES": "GPU-3"}, nvml)[0] == [nvml[3]]
    infos, source = granted_gpus({"SLURM_GPUS_ON_NODE": "2"}, [])  # placeholder GRES, no NVML
    assert source == "SLURM_GPUS_ON_NODE" and [g.index for g in infos] == [0, 1]
    assert granted_gpus({}, nvml) == ([], "none")


def test_node_plans_the_vram_ballast_for_the_gpus_it_got(tmp_path: Path) -> None:
    loaded = load_suite(
        suite(
            tmp_path,
            [
                {
                    "id": "c",
                    "model": "m",
                    "num_gpus": 1,
                    "vram_gib": 32,
                    "frameworks": {"sglang": {}},
                }
            ],
        )
    )
    plans = plan_cases(loaded, loaded.suite.cases, [], None, lab_places=False)
    ctx = RunContext(loaded, [], tmp_path / "run", "r", places_work(SlurmRuntime()))
    spec, req = attempt_request(ctx, plans[0], plans[0].ladder.rungs[0], 1, [])
    assert spec.num_gpus == 1 and spec.gpus == [] and spec.ballast is None  # the host can't know
    assert req.gpu_count == 1 and req.time_limit_s and req.gpus == []
    filled = fill_spec(spec, [GpuInfo(5, "H100", "GPU-5", 80 * GIB)])
    assert filled.gpus == [5] and filled.gpu_uuids == ["GPU-5"]
    assert filled.ballast is not None and filled.ballast.keep_gib == 32
    with pytest.raises(LabError, match="more than GPU"):  # a placeholder GPU has no size
        fill_spec(spec, [GpuInfo(0, "unknown", "", 0.0)])


def test_slurm_places_gpu_cases_this_host_could_not_run(tmp_path: Path) -> None:
    loaded = load_suite(
        suite(tmp_path, [{"id": "two", "model": "m", "num_gpus": 2, "frameworks": {"sglang": {}}}])
    )
    here = plan_cases(loaded, loaded.suite.cases, [], None)[0]
    assert here.skip_reason and "needs 2 GPUs" in here.skip_reason
    there = plan_cases(loaded, loaded.suite.cases, [], None, lab_places=False)[0]
    assert there.skip_reason is None and there.ladder.rungs[0].num_gpus == 2
    assert not places_work(SlurmRuntime()) and places_work(object())


def test_slurm_settings_are_checked_and_name_the_field(tmp_path: Path) -> None:
    case = {"id": "c", "model": "m", "frameworks": {"sglang": {}}}
    ok = load_suite(suite(tmp_path, [case], slurm={"partition": "gpu", "sandbox": "netns"}))
    assert ok.suite.slurm.partition == "gpu" and ok.suite.slurm.max_jobs == 8
    with pytest.raises(ConfigError, match=r"slurm\.partiton"):
        load_suite(suite(tmp_path, [case], slurm={"partiton": "gpu"}))
    with pytest.raises(ConfigError, match=r"slurm\.sandbox"):
        load_suite(suite(tmp_path, [case], slurm={"sandbox": "local"}))


def test_run_folder_outside_the_shared_dir_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    rt = SlurmRuntime(SlurmSettings(shared_dir=str(shared)))
    rt.check_out_root(shared / "runs")
    with pytest.raises(LabError, match=r"not under slurm\.shared_dir"):
        rt.check_out_root(tmp_path / "runs")


def test_the_node_rebuilds_the_hosts_request_with_its_gpus_and_the_secrets_of_its_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slurm-request.json is a dump of the request: every field comes back on the node, which
    adds the GPUs Slurm granted and takes the secret's value from the job's environment."""
    req = request(tmp_path, model_cache=tmp_path / "models", command=["sleep", "1"], shm_size="8g")
    written = json.loads(json.dumps(node_request(req, "netns")))  # as the file holds it
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_job_env")
    nvml = [GpuInfo(i, "H100", f"GPU-{i}", 80 * GIB) for i in range(4)]
    node = load_node_request(written)
    assert node.sandbox == "netns" and node.secret_env == ["HF_TOKEN"]
    rebuilt = build_request(node, nvml[2:4])
    env = {**req.env, "HF_TOKEN": "hf_from_the_job_env", "CUDA_VISIBLE_DEVICES": "GPU-2,GPU-3"}
    assert rebuilt == replace(req, env=env, gpus=[2, 3], gpu_count=2)
