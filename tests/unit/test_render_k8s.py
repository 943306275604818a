"""`lab render k8s`: one Job per case, valid for the Kubernetes API (the official client's models),
running the very spec the nightly builds for rung 1, with no secret in any file."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from lab.cli import main
from lab.config import load_suite
from lab.frameworks import get_framework
from lab.host.gpus import GpuInfo
from lab.host.plan import RunContext, attempt_bound_s, attempt_request, plan_cases
from lab.host.render_k8s import POD_CONFIG_DIR, POD_RESULTS_ROOT
from lab.host.runtimes.base import LABEL_ATTEMPT, LABEL_CASE, LABEL_RUN

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "20260101T000000Z-abcd"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def render(tmp_path: Path, *args: str) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    out = tmp_path / "out"
    rc = main(["render", "k8s", "--out", str(out), "--run-id", RUN_ID, *args])
    docs = {p.stem: list(yaml.safe_load_all(p.read_text())) for p in sorted(out.glob("*.yaml"))}
    return rc, docs


def job_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [d for d in docs if d["kind"] == "Job"]
    return job


def configmap_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return cm


def spec_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return json.loads(configmap_of(docs)["data"]["spec.json"])


def nightly_spec(config: Path, case_id: str) -> dict[str, Any]:
    """What `lab nightly` itself builds for the case's first rung (on a machine with GPUs)."""
    loaded = load_suite(config)
    case = loaded.case(case_id)
    gpus = [GpuInfo(i, "H200", "", math.inf) for i in range(8)]
    plan = plan_cases(loaded, [case], gpus, None)[0]
    ctx = RunContext(loaded, gpus, Path("/x/runs") / RUN_ID, RUN_ID)
    rung = plan.ladder.rungs[0]
    spec, _ = attempt_request(ctx, plan, rung, 1, list(range(rung.num_gpus)))
    return spec.model_dump(mode="json")


@pytest.mark.parametrize("config", ["configs/reference.json", "configs/nightly.json"])
def test_one_valid_job_per_case(tmp_path: Path, config: str) -> None:
    loaded = load_suite(ROOT / config)
    rc, docs = render(tmp_path, "--config", str(ROOT / config))
    assert rc == 0
    assert sorted(docs) == sorted(c.id for c in loaded.suite.cases)  # every shipped case runs
    api = ApiClient()
    for name, objs in docs.items():
        assert [d["kind"] for d in objs] == ["ConfigMap", "Job"], name
        for obj, model in zip(objs, ["V1ConfigMap", "V1Job"], strict=True):
            # Deserializing drops keys the API does not know; equal again means none were there.
            back = api._ApiClient__deserialize(obj, model)  # type: ignore[attr-defined]
            assert api.sanitize_for_serialization(back) == obj, name
        # the suite's folder travels byte for byte (YAML block scalars keep every newline)
        assert configmap_of(objs)["data"][Path(config).name] == (ROOT / config).read_text()
        job = job_of(objs)
        assert job["apiVersion"] == "batch/v1"
        assert DNS_LABEL.match(job["metadata"]["name"]), job["metadata"]["name"]
        assert job["spec"]["backoffLimit"] == 0
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values())
            assert labels[LABEL_RUN] == RUN_ID and labels[LABEL_ATTEMPT] == "1"
        case_id = job["metadata"]["annotations"][LABEL_CASE]
        assert job["metadata"]["labels"][LABEL_CASE] == re.sub(r"[^A-Za-z0-9_.-]", "-", case_id)


def test_pod_is_the_sandbox_and_hardened(tmp_path: Path) -> None:
    rc, docs = render(tmp_path, "--config", str(ROOT / "configs/nightly.json"))
    assert rc == 0
    for name, objs in docs.items():
        pod = job_of(objs)["spec"]["template"]["spec"]
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name  # own netns
        assert pod["automountServiceAccountToken"] is False
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"] + pod["initContainers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        vols = {v["name"]: v for v in pod["volumes"]}
        assert "/tmp" in mounts and vols[mounts["/tmp"]["name"]]["emptyDir"] == {}
        shm = vols[mounts["/dev/shm"]["name"]]["emptyDir"]
        assert shm == {"medium": "Memory", "sizeLimit": "2Gi"}  # the suite's shm_size 2g
        assert mounts[str(POD_CONFIG_DIR)]["readOnly"] is True
        assert vols[mounts[str(POD_RESULTS_ROOT)]["name"]]["persistentVolumeClaim"] == {
            "claimName": "nightly-lab-runs"
        }


def test_command_gpus_and_deadline_follow_the_nightly(tmp_path: Path) -> None:
    config = ROOT / "configs/nightly.json"
    loaded = load_suite(config)
    rc, docs = render(tmp_path, "--config", str(config))
    assert rc == 0
    for case in loaded.suite.cases:
        objs = docs[case.id]
        spec = spec_of(objs)
        pod = job_of(objs)["spec"]["template"]["spec"]
        (box,) = pod["containers"]
        spec_path = f"{POD_RESULTS_ROOT}/{RUN_ID}/attempts/{case.id}__a1/spec.json"
        assert box["command"] == ["lab", "case", spec_path]  # the docker runtime's command
        assert box["image"] == plan_cases(loaded, [case], [], None)[0].image
        limits = (box.get("resources") or {}).get("limits", {})
        if case.num_gpus:
            assert limits["nvidia.com/gpu"] == str(case.num_gpus) == str(spec["num_gpus"])
            env = {e["name"]: e["value"] for e in box["env"]}
            assert env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, range(case.num_gpus)))
        else:
            assert "nvidia.com/gpu" not in limits
            assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in box["env"]
        # the init container puts spec.json where the command reads it
        assert pod["initContainers"][0]["args"][-1] == spec_path
        from lab.contract import AttemptSpec

        bound = attempt_bound_s(AttemptSpec.model_validate(spec))
        assert pod["activeDeadlineSeconds"] == math.ceil(bound)


@pytest.mark.parametrize("config", ["configs/reference.json", "configs/nightly.json"])
def test_spec_is_what_the_nightly_builds_for_rung_one(tmp_path: Path, config: str) -> None:
    rc, docs = render(tmp_path, "--config", str(ROOT / config))
    assert rc == 0
    paths = ("out_dir", "log_dir", "config_dir", "test_image_path")
    for case in load_suite(ROOT / config).suite.cases:
        got = spec_of(docs[case.id])
        want = nightly_spec(ROOT / config, case.id)
        assert {k: v for k, v in got.items() if k not in paths} == {
            k: v for k, v in want.items() if k not in paths
        }, case.id
        assert got["out_dir"] == f"/runs/{RUN_ID}/attempts/{case.id}__a1"
        assert got["config_dir"] == str(POD_CONFIG_DIR)
        for fw in got["frameworks"]:  # the same server command line, config dir aside
            cmds = [
                get_framework(fw).command(
                    load_suite(ROOT / config).case(case.id),
                    load_suite(ROOT / config).case(case.id).frameworks[fw],
                    s["host"],
                    s["port"],
                    s["num_gpus"],
                    s["extra_args"].get(fw, []),
                    "{config_dir}",
                )
                for s in (got, want)
            ]
            assert cmds[0] == cmds[1]


def test_ladder_args_and_vram_emulation_reach_the_spec(tmp_path: Path) -> None:
    suite = {
        "image": "registry.example/lab:1",
        "shm_size": "512m",
        "model_cache": "/models",
        "cases": [
            {
                "id": "Big.Case_with_a_rather_long_identifier_that_will_not_fit_in_a_label_1",
                "model": "ref://tiny",
                "num_gpus": 1,
                "vram_gib": 24,
                "memory_limit_mib": 4096,
                "frameworks": {"reference": {"serve_args": "--warmup-mode server"}},
                "ladder": [{"name": "offload", "args": "--dit-cpu-offload"}],
            }
        ],
    }
    cfg = tmp_path / "suite" / "s.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(suite))
    rc, docs = render(tmp_path, "--config", str(cfg), "--namespace", "ci", "--results-pvc", "res")
    assert rc == 0
    (objs,) = docs.values()
    spec = spec_of(objs)
    assert spec["rung"] == "offload" and spec["extra_args"] == {"reference": ["--dit-cpu-offload"]}
    assert spec["ballast"] == {"keep_gib": 24.0, "devices": [0]}
    job = job_of(objs)
    assert job["metadata"]["namespace"] == "ci" and len(job["metadata"]["name"]) <= 63
    assert all(len(v) <= 63 for v in job["metadata"]["labels"].values())
    assert job["metadata"]["annotations"][LABEL_CASE] == suite["cases"][0]["id"]
    pod = job["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    assert box["image"] == "registry.example/lab:1"
    assert box["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "4096Mi"}
    mounts = {m["mountPath"]: m for m in box["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/dev/shm"]["name"]]["emptyDir"]["sizeLimit"] == "512Mi"
    assert vols[mounts["/runs"]["name"]]["persistentVolumeClaim"]["claimName"] == "res"
    assert vols[mounts["/models"]["name"]]["persistentVolumeClaim"]["readOnly"] is True
    assert "s.json" in configmap_of(objs)["data"]


def test_no_secret_value_in_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", "secret-value")
    monkeypatch.setenv("NCCL_DEBUG", "also-not-written")
    suite = json.loads((ROOT / "configs/reference.json").read_text())
    suite["pass_env"] = ["HF_TOKEN", "NCCL_*"]
    suite["cases"][0]["frameworks"]["reference"]["extra_env"] = {"TOKEN_FOR_SERVER": "${HF_TOKEN}"}
    cfg = tmp_path / "suite" / "reference.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(suite))
    rc, docs = render(tmp_path, "--config", str(cfg))
    assert rc == 0 and len(docs) == len(suite["cases"])
    written = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert "secret-value" not in written and "also-not-written" not in written
    assert "${HF_TOKEN}" in written  # the template travels; the sandbox fills it in
    box = job_of(next(iter(docs.values())))["spec"]["template"]["spec"]["containers"][0]
    assert box["envFrom"] == [
        {"secretRef": {"name": "nightly-lab-env", "optional": True}},
        {"configMapRef": {"name": "nightly-lab-env", "optional": True}},
    ]
    err = capsys.readouterr().err
    assert "HF_TOKEN" in err and "secret-value" not in err


def test_unknown_case_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, docs = render(
        tmp_path, "--config", str(ROOT / "configs/reference.json"), "--case", "no_such_case"
    )
    assert rc == 2 and not docs
    err = capsys.readouterr().err
    assert "no_such_case" in err and "ref_t2i_tiny" in err


def test_bad_config_exits_2_naming_file_case_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"cases": [{"id": "x", "model": "m", "num_gpuz": 1}]}))
    rc, _ = render(tmp_path, "--config", str(cfg))
    err = capsys.readouterr().err
    assert rc == 2 and str(cfg) in err and "'x'" in err and "num_gpuz" in err

    cfg.write_text(
        json.dumps(
            {
                "image": "host",
                "cases": [{"id": "x", "model": "ref://tiny", "frameworks": {"reference": {}}}],
            }
        )
    )
    rc, _ = render(tmp_path, "--config", str(cfg))
    err = capsys.readouterr().err
    assert rc == 2 and "'x'" in err and "image" in err

    cfg.write_text(
        json.dumps(
            {
                "shm_size": "lots",
                "cases": [{"id": "x", "model": "ref://tiny", "frameworks": {"reference": {}}}],
            }
        )
    )
    rc, _ = render(tmp_path, "--config", str(cfg))
    assert rc == 2 and "shm_size" in capsys.readouterr().err


def test_without_the_client_it_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ImportError
    rc, docs = render(tmp_path, "--config", str(ROOT / "configs/reference.json"))
    assert rc == 2 and not docs
    assert "pip install 'nightly-lab[k8s]'" in capsys.readouterr().err
