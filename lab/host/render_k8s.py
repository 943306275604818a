"""`lab render k8s`: one Kubernetes Job per case, running the attempt the nightly would run first.

The spec inside each Job is built by the nightly's own code (lab/host/plan.py: `plan_cases`,
then `attempt_request` for rung 1), so a Job runs exactly what `lab nightly` would start in its
first sandbox; only the paths differ, because the suite is placed where the pod sees it:

  /etc/nightly-lab/config   the suite's folder (a ConfigMap), read-only, like docker's bind
  /etc/nightly-lab/spec     spec.json (the same ConfigMap), read-only; an init container copies
                            it into the attempt folder, so the command is the nightly's own
                            `lab case /runs/<run>/attempts/<case>__a1/spec.json` and spec.json
                            lies beside result.json on the results volume
  /runs                     the results PersistentVolumeClaim (compose.yaml mounts ./runs there)

The objects are built with the official `kubernetes` client's models, which reject a missing
required field or an unknown one, and serialized by its ApiClient. Nothing here talks to a
cluster. The ladder is not applied: Kubernetes retries nothing (backoffLimit 0).

Over 450 lines because `case_objects` spells out one Job, its ConfigMap, volumes and probes
field by field in the client's models: long, but one screen per object and no logic to split."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import __version__
from lab.config import Case, LoadedSuite, load_suite
from lab.contract import SPEC_FILE, AttemptSpec
from lab.errors import ConfigError, LabError
from lab.files import write_atomic
from lab.host.gpus import GpuInfo
from lab.host.plan import (
    RunContext,
    attempt_bound_s,
    attempt_request,
    config_path,
    plan_cases,
    select_cases,
)
from lab.host.runtimes.base import (
    LABEL_ATTEMPT,
    LABEL_CASE,
    LABEL_PREFIX,
    LABEL_RUN,
    SANDBOX_UID,
    SandboxRequest,
)

POD_RESULTS_ROOT = Path("/runs")
POD_CONFIG_DIR = Path("/etc/nightly-lab/config")
POD_SPEC_DIR = Path("/etc/nightly-lab/spec")
DEFAULT_RESULTS_PVC = "nightly-lab-runs"
DEFAULT_MODEL_CACHE_PVC = "nightly-lab-model-cache"
DEFAULT_ENV_FROM = "nightly-lab-env"
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's resource name
CONFIGMAP_MAX_BYTES = 1_000_000  # etcd stores at most ~1 MiB per object
LABEL_RUNG = f"{LABEL_PREFIX}.rung"
LABEL_SPEC = f"{LABEL_PREFIX}.spec"
LABEL_PASS_ENV = f"{LABEL_PREFIX}.pass-env"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
INSTALL_HINT = "pip install 'nightly-lab[k8s]'"


def add_render_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("render", help="write manifests that run a suite elsewhere (k8s)")
    rsub = s.add_subparsers(dest="render_target", required=True, metavar="{k8s}")
    k = rsub.add_parser(
        "k8s",
        help="one Kubernetes Job per case: rung 1 of the nightly, exactly",
        description="Write one YAML file per case (a ConfigMap with spec.json and the suite's "
        "folder, and a batch/v1 Job) for `kubectl apply -f`. Needs no cluster.",
    )
    k.add_argument("--config", default=None, help="suite file (default configs/nightly.json)")
    k.add_argument("--case", action="append", dest="cases", metavar="ID", help="only it")
    k.add_argument("--out", default=None, help="folder for the files (default runs/k8s-<run id>)")
    k.add_argument("--namespace", default=None, help="default: kubectl's current namespace")
    k.add_argument(
        "--results-pvc", default=DEFAULT_RESULTS_PVC, metavar="NAME", help="claim mounted at /runs"
    )
    k.add_argument(
        "--model-cache-pvc",
        default=DEFAULT_MODEL_CACHE_PVC,
        metavar="NAME",
        help="claim mounted read-only at the suite's model_cache",
    )
    k.add_argument(
        "--env-from",
        default=DEFAULT_ENV_FROM,
        metavar="NAME",
        help="Secret and ConfigMap (both optional) whose keys become the sandbox's environment",
    )
    k.add_argument("--run-id", default=None, help="default: a new one, as the nightly makes")
    k.set_defaults(func=cmd_render_k8s)


@dataclass
class RenderOptions:
    run_id: str
    out_dir: Path
    namespace: str | None = None
    results_pvc: str = DEFAULT_RESULTS_PVC
    model_cache_pvc: str = DEFAULT_MODEL_CACHE_PVC
    env_from: str = DEFAULT_ENV_FROM


@dataclass
class RenderedCase:
    case_id: str
    path: Path
    objects: list[dict[str, Any]]  # ConfigMap, Job: what the file holds


def cmd_render_k8s(args: argparse.Namespace) -> int:
    from lab.results.store import new_run_id

    require_client()
    loaded = load_suite(config_path(args.config))
    cases = select_cases(loaded, args.cases)
    run_id = args.run_id or new_run_id()
    out = Path(args.out) if args.out else Path("runs") / f"k8s-{run_id}"
    opts = RenderOptions(
        run_id=run_id,
        out_dir=out,
        namespace=args.namespace,
        results_pvc=args.results_pvc,
        model_cache_pvc=args.model_cache_pvc,
        env_from=args.env_from,
    )
    rendered = render_k8s(loaded, cases, opts)
    for r in rendered:
        print(r.path)
    if rendered:
        print(f"lab render k8s: apply with `kubectl apply -f {opts.out_dir}/`", file=sys.stderr)
    return 0


def require_client() -> None:
    try:
        import kubernetes  # noqa: F401
        import yaml  # noqa: F401 - a dependency of kubernetes
    except ImportError:
        raise LabError(
            f"`lab render k8s` builds its manifests with the official Kubernetes client, which "
            f"is not installed: {INSTALL_HINT}"
        ) from None


# --- the whole suite ------------------------------------------------------------------------------
def render_k8s(loaded: LoadedSuite, cases: list[Case], opts: RenderOptions) -> list[RenderedCase]:
    """Write one file per runnable case into opts.out_dir; skipped cases are said on stderr."""
    require_client()
    if not _RUN_ID.match(opts.run_id) or opts.run_id in (".", ".."):
        raise LabError(f"--run-id {opts.run_id!r}: use letters, digits, '.', '_' and '-' only")
    for flag, name in (
        ("--results-pvc", opts.results_pvc),
        ("--model-cache-pvc", opts.model_cache_pvc),
        ("--env-from", opts.env_from),
        ("--namespace", opts.namespace),
    ):
        if name is not None and not _DNS_LABEL.match(name):
            raise LabError(f"{flag} {name!r} is not a Kubernetes name (lowercase a-z, 0-9, '-')")
    config_files = _config_files(loaded)
    specs = build_specs(loaded, cases, opts.run_id)
    rendered: list[RenderedCase] = []
    host_env: set[str] = set()
    names: dict[str, str] = {}
    for case in cases:
        if case.id not in specs:
            continue
        spec, req = specs[case.id]
        host_env |= {k for k in req.env if k != "CUDA_VISIBLE_DEVICES"}
        objects = case_objects(loaded, spec, req.image or "", config_files, opts)
        name = objects[-1]["metadata"]["name"]
        if name in names:  # ids differing only in '_' vs '-' or case
            raise LabError(f"cases {names[name]!r} and {case.id!r} both make the Job {name!r}")
        names[name] = case.id
        path = opts.out_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', case.id)}.yaml"
        write_atomic(path, _yaml(objects))
        rendered.append(RenderedCase(case.id, path, objects))
    if host_env:  # names only: their values stay in this shell
        print(
            f"lab render k8s: the nightly would pass {', '.join(sorted(host_env))} from this "
            f"shell; in the cluster the sandbox takes its environment from the Secret and "
            f"ConfigMap {opts.env_from!r} instead (`kubectl create secret generic "
            f"{opts.env_from} --from-literal=NAME=…`)",
            file=sys.stderr,
        )
    return rendered


def build_specs(
    loaded: LoadedSuite, cases: list[Case], run_id: str
) -> dict[str, tuple[AttemptSpec, SandboxRequest]]:
    """Each runnable case's rung-1 spec and sandbox request, from the nightly's own code.

    The suite is relocated to where the pod sees it, so every path in the spec is a pod path.
    The cluster's GPUs are unknown here: a stand-in inventory as large as the largest case asks
    (no UUIDs, so CUDA_VISIBLE_DEVICES is 0..k-1, what the device plugin's container sees)."""
    pod_loaded = loaded.model_copy(update={"path": POD_CONFIG_DIR / loaded.path.name})
    if loaded.suite.test_image_path:
        img = (loaded.config_dir / loaded.suite.test_image_path).resolve()
        if not img.is_relative_to(loaded.config_dir.resolve()):
            raise ConfigError(
                str(loaded.path),
                None,
                "test_image_path",
                f"{img} lies outside the suite's folder, which is all a pod gets of this machine",
            )
    # memory_total inf: the card's size is known only on the node; the ballast checks it there.
    fake = [
        GpuInfo(index=i, name="kubernetes", uuid="", memory_total_mib=math.inf)
        for i in range(max([c.num_gpus for c in cases] + [0]))
    ]
    plans = plan_cases(pod_loaded, cases, fake, None)
    need = max([len(fake)] + [p.ladder.rungs[0].num_gpus for p in plans if p.ladder.rungs])
    fake += [
        GpuInfo(index=i, name="kubernetes", uuid="", memory_total_mib=math.inf)
        for i in range(len(fake), need)
    ]
    run_dir = POD_RESULTS_ROOT / run_id
    ctx = RunContext(pod_loaded, fake, run_dir, run_id)
    out: dict[str, tuple[AttemptSpec, SandboxRequest]] = {}
    for p in plans:
        if p.skip_reason or not p.ladder.rungs:
            why = p.skip_reason or "no rung to run"
            print(
                f"lab render k8s: {p.case.id}: skipped, as the nightly would: {why}",
                file=sys.stderr,
            )
            continue
        if p.image == "host":
            raise ConfigError(
                str(loaded.path),
                p.case.id,
                "image",
                "image 'host' (this machine's own environment) has no meaning in a cluster; "
                "name a container image the cluster can pull",
            )
        rung = p.ladder.rungs[0]
        out[p.case.id] = attempt_request(ctx, p, rung, 1, list(range(rung.num_gpus)))
    return out


# --- one case -------------------------------------------------------------------------------------
def case_objects(
    loaded: LoadedSuite,
    spec: AttemptSpec,
    image: str,
    config_files: dict[str, tuple[str, bytes]],
    opts: RenderOptions,
) -> list[dict[str, Any]]:
    """The ConfigMap (spec.json + the suite's folder) and the Job of one attempt, serialized."""
    from kubernetes import client as k

    suite = loaded.suite
    name = _dns_label("lab", spec.case.id, opts.run_id)
    spec_path = Path(spec.out_dir) / SPEC_FILE
    labels = {
        LABEL_RUN: _label_value(opts.run_id),
        LABEL_CASE: _label_value(spec.case.id),
        LABEL_ATTEMPT: str(spec.attempt),
        "app.kubernetes.io/name": "nightly-lab",
        "app.kubernetes.io/version": _label_value(__version__),
    }
    # Label values are limited to 63 of [A-Za-z0-9-_.]; the real ids ride in annotations.
    annotations = {
        LABEL_RUN: opts.run_id,
        LABEL_CASE: spec.case.id,
        LABEL_ATTEMPT: str(spec.attempt),
        LABEL_RUNG: spec.rung,
        LABEL_SPEC: str(spec_path),
        f"{LABEL_PREFIX}.config": f"{loaded.path.name} sha256:{loaded.sha256}",
    }
    meta = k.V1ObjectMeta(
        name=name, namespace=opts.namespace, labels=labels, annotations=annotations
    )

    spec_json = json.dumps(spec.model_dump(mode="json"), indent=2, default=str) + "\n"
    data: dict[str, str] = {SPEC_FILE: spec_json}
    binary: dict[str, bytes | str] = {}  # base64 text, typed as V1ConfigMap's binary_data
    for key, (_, raw) in config_files.items():
        try:
            data[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(raw).decode()
    size = sum(len(v.encode()) for v in data.values()) + sum(len(v) for v in binary.values())
    if size > CONFIGMAP_MAX_BYTES:
        raise LabError(
            f"the suite's folder {loaded.config_dir} and the spec of {spec.case.id} come to "
            f"{size} bytes, more than a ConfigMap holds ({CONFIGMAP_MAX_BYTES}); keep only suite "
            "files there"
        )
    configmap = k.V1ConfigMap(
        api_version="v1", kind="ConfigMap", metadata=meta, data=data, binary_data=binary or None
    )

    hardened = k.V1SecurityContext(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,  # like docker's --read-only; /tmp is an emptyDir
        capabilities=k.V1Capabilities(drop=["ALL"]),
        run_as_non_root=True,
        run_as_user=SANDBOX_UID,
        run_as_group=SANDBOX_UID,
    )
    volumes = [
        k.V1Volume(
            name="spec",
            config_map=k.V1ConfigMapVolumeSource(
                name=name, items=[k.V1KeyToPath(key=SPEC_FILE, path=SPEC_FILE)], default_mode=0o444
            ),
        ),
        k.V1Volume(
            name="config",
            config_map=k.V1ConfigMapVolumeSource(
                name=name,
                items=[k.V1KeyToPath(key=key, path=rel) for key, (rel, _) in config_files.items()]
                or None,
                default_mode=0o444,
            ),
        ),
        k.V1Volume(
            name="results",
            persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
                claim_name=opts.results_pvc
            ),
        ),
        # Disk-backed, not tmpfs as in docker: caches under /tmp must not eat the pod's memory.
        k.V1Volume(name="tmp", empty_dir=k.V1EmptyDirVolumeSource()),
    ]
    mounts = [
        k.V1VolumeMount(name="config", mount_path=str(POD_CONFIG_DIR), read_only=True),
        k.V1VolumeMount(name="results", mount_path=str(POD_RESULTS_ROOT)),
        k.V1VolumeMount(name="tmp", mount_path="/tmp"),
    ]
    host_ipc = _host_ipc(loaded, suite.ipc_mode)
    if not host_ipc:  # as docker: shm_size applies to a private IPC namespace only
        volumes.append(
            k.V1Volume(
                name="dshm",
                empty_dir=k.V1EmptyDirVolumeSource(
                    medium="Memory", size_limit=_quantity(loaded, suite.shm_size)
                ),
            )
        )
        mounts.append(k.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    if suite.model_cache:
        volumes.append(
            k.V1Volume(
                name="model-cache",
                persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
                    claim_name=opts.model_cache_pvc, read_only=True
                ),
            )
        )
        mounts.append(
            k.V1VolumeMount(name="model-cache", mount_path=suite.model_cache, read_only=True)
        )

    limits: dict[str, str] = {}
    if spec.num_gpus:
        limits[GPU_RESOURCE] = str(spec.num_gpus)
    if spec.case.memory_limit_mib:
        limits["memory"] = f"{spec.case.memory_limit_mib}Mi"

    # The attempt folder on the results volume, with spec.json in it, as the nightly leaves it.
    # Arguments, not an interpolated script: no path is ever parsed by the shell.
    place_spec = k.V1Container(
        name="place-spec",
        image=image,
        image_pull_policy="IfNotPresent",
        command=["sh", "-c", 'mkdir -p "$1" "$2" && cp "$3" "$4"', "place-spec"],
        args=[spec.out_dir, spec.log_dir, str(POD_SPEC_DIR / SPEC_FILE), str(spec_path)],
        volume_mounts=[
            k.V1VolumeMount(name="spec", mount_path=str(POD_SPEC_DIR), read_only=True),
            k.V1VolumeMount(name="results", mount_path=str(POD_RESULTS_ROOT)),
        ],
        security_context=hardened,
    )
    case_container = k.V1Container(
        name="case",
        image=image,
        image_pull_policy="IfNotPresent",
        command=["lab", "case", str(spec_path)],  # the docker runtime's command, unchanged
        working_dir=str(spec_path.parent),  # as docker: files a server drops stay with the attempt
        env=[k.V1EnvVar(name=n, value=v) for n, v in _pod_env(spec).items()],
        # Secrets never enter a manifest: the cluster's Secret and ConfigMap supply them.
        env_from=[
            k.V1EnvFromSource(secret_ref=k.V1SecretEnvSource(name=opts.env_from, optional=True)),
            k.V1EnvFromSource(
                config_map_ref=k.V1ConfigMapEnvSource(name=opts.env_from, optional=True)
            ),
        ],
        resources=k.V1ResourceRequirements(limits=limits) if limits else None,
        volume_mounts=mounts,
        security_context=hardened,
    )
    pod = k.V1PodSpec(
        restart_policy="Never",  # one attempt; the host's ladder is not Kubernetes' to climb
        # A pod gets its own network namespace unless hostNetwork is set: that is the sandbox.
        # Every server binds 127.0.0.1:30000 inside it, as under docker's --network none.
        host_network=False,
        host_pid=False,
        host_ipc=host_ipc,
        # The pause process becomes PID 1 and reaps the server's orphans (docker's --init).
        share_process_namespace=True,
        automount_service_account_token=False,  # the sandbox has no business with the API
        enable_service_links=False,  # no service variables: the environment is the spec's
        active_deadline_seconds=math.ceil(attempt_bound_s(spec)),
        termination_grace_period_seconds=math.ceil(_stop_grace()),
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=SANDBOX_UID,
            run_as_group=SANDBOX_UID,
            fs_group=SANDBOX_UID,  # the results volume writable by the sandbox user
            fs_group_change_policy="OnRootMismatch",  # no recursive chown of old runs
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),  # docker's default
        ),
        init_containers=[place_spec],
        containers=[case_container],
        volumes=volumes,
    )
    pod_annotations = {**annotations, LABEL_PASS_ENV: ",".join(suite.pass_env)}
    job = k.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=meta,
        spec=k.V1JobSpec(
            backoff_limit=0,
            template=k.V1PodTemplateSpec(
                metadata=k.V1ObjectMeta(labels=labels, annotations=pod_annotations), spec=pod
            ),
        ),
    )
    api = k.ApiClient()
    return [api.sanitize_for_serialization(configmap), api.sanitize_for_serialization(job)]


def _pod_env(spec: AttemptSpec) -> dict[str, str]:
    """The docker runtime's own variables (lab/host/runtimes/docker.py), for a pod.

    The device plugin shows the pod only its GPUs, numbered from 0, as docker's remap does."""
    env = {
        "HOME": "/tmp",  # caches go to the emptyDir, not the read-only root
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(spec.num_gpus)),
    }
    if not spec.num_gpus:
        # CUDA images say NVIDIA_VISIBLE_DEVICES=all; with nvidia as the node's default runtime
        # a pod that asked for no GPU would otherwise see every one.
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    return env


def _stop_grace() -> float:
    from lab.host.run import STOP_GRACE_S

    return STOP_GRACE_S


def _host_ipc(loaded: LoadedSuite, ipc_mode: str | None) -> bool:
    if ipc_mode in (None, "private", "shareable"):
        return False
    if ipc_mode == "host":
        return True  # the suite asked docker for --ipc host; a pod's equivalent
    raise ConfigError(
        str(loaded.path), None, "ipc_mode", f"{ipc_mode!r} has no Kubernetes equivalent"
    )


def _quantity(loaded: LoadedSuite, size: str) -> str:
    """Docker's size ("2g", binary units) as a Kubernetes quantity ("2Gi")."""
    m = _SIZE.match(size)
    if not m:
        raise ConfigError(
            str(loaded.path), None, "shm_size", f"{size!r} is not a size such as 2g or 512m"
        )
    power = " kmgtp".index((m.group(2) or " ").lower())
    n = int(float(m.group(1)) * 1024**power)
    for suffix, p in (("Pi", 5), ("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if n and n % 1024**p == 0:
            return f"{n // 1024**p}{suffix}"
    return str(n)


def _config_files(loaded: LoadedSuite) -> dict[str, tuple[str, bytes]]:
    """The suite's folder, as docker mounts it: ConfigMap key -> (relative path, content).

    Hidden files stay behind (a .env there is a secret, not a suite)."""
    root = loaded.config_dir
    files: dict[str, tuple[str, bytes]] = {}
    total = 0
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(
            part.startswith(".") or part == "__pycache__" for part in rel.parts
        ):
            continue
        total += p.stat().st_size
        if total > CONFIGMAP_MAX_BYTES:  # say so before reading a whole checkout
            raise LabError(
                f"the suite's folder {root} holds more than a ConfigMap can carry "
                f"({CONFIGMAP_MAX_BYTES} bytes); the pod gets that folder as docker mounts it: "
                "keep the suite in a folder of its own"
            )
        key = re.sub(r"[^-._A-Za-z0-9]", "_", rel.as_posix())
        if key == SPEC_FILE or key in files:
            raise LabError(f"{p}: two files of {root} map to the ConfigMap key {key!r}")
        files[key] = (rel.as_posix(), p.read_bytes())
    return files


def _dns_label(*parts: str) -> str:
    """A DNS-1123 label (Job and ConfigMap names): lowercase, '-', at most 63 characters."""
    whole = "-".join(parts)
    s = re.sub(r"[^a-z0-9-]+", "-", whole.lower())
    s = re.sub(r"-+", "-", s).strip("-")
    if len(s) > 63:
        digest = hashlib.sha256(whole.encode()).hexdigest()[:6]
        s = f"{s[: 63 - 7].rstrip('-')}-{digest}"
    return s


def _label_value(value: str) -> str:
    """A valid label value; shortened with a hash of the original when it is too long."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)
    s = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", s)
    if len(s) > 63:
        digest = hashlib.sha256(value.encode()).hexdigest()[:6]
        s = re.sub(r"[^A-Za-z0-9]+$", "", s[: 63 - 7]) + "-" + digest
    assert _LABEL_VALUE.match(s), s
    return s


def _yaml(objects: list[dict[str, Any]]) -> str:
    """YAML for people as much as for kubectl: header keys first, files as literal blocks."""
    import yaml

    # PyYAML ships no types (and types-PyYAML is not a dependency): SafeDumper is Any here.
    class Dumper(yaml.SafeDumper):  # type: ignore[misc]
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    first = ("apiVersion", "kind", "metadata")
    ordered = [
        {**{k: o[k] for k in first if k in o}, **{k: v for k, v in o.items() if k not in first}}
        for o in objects
    ]
    head = (
        f"# nightly-lab {__version__}: `lab render k8s`. Apply with `kubectl apply -f`; "
        "no secret values in here.\n"
    )
    body: str = yaml.dump_all(
        ordered, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True
    )
    return head + body
