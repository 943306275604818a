"""The run directory `runs/<run-id>/`: its layout, results.json, manifest.json, `runs/latest`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import lab
from lab.errors import LabError
from lab.files import write_json_atomic
from lab.redact import redact_env
from lab.results import upstream
from lab.results.model import RunResults, may_be_baseline

MANIFEST_SCHEMA = "nightly-lab/manifest/v1"
LATEST = "latest"


def new_run_id(now: datetime | None = None) -> str:
    """`20261121T174700Z-ab12`: sorts by start time; the suffix keeps two runs of a second apart."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunDir:
    """Where one run's files live. `RunDir.create(root, run_id)` makes the folders."""

    path: Path

    @classmethod
    def create(cls, root: str | os.PathLike[str], run_id: str | None = None) -> RunDir:
        run_dir = cls(Path(root) / (run_id or new_run_id()))
        for sub in (run_dir.logs, run_dir.attempts, run_dir.artifacts):
            sub.mkdir(parents=True, exist_ok=True)
        return run_dir

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.md"

    @property
    def junit(self) -> Path:
        return self.path / "junit.xml"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    def export(self, name: str) -> Path:
        """`lab export NAME` written by the nightly (a suite's "exports")."""
        return self.path / f"{name}.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def attempts(self) -> Path:
        return self.path / "attempts"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    def attempt_dir(self, case_id: str, attempt: int) -> Path:
        """One attempt's spec.json, result.json and sandbox.json."""
        return self.attempts / f"{case_id}__a{attempt}"


def as_run_dir(run_dir: RunDir | str | os.PathLike[str]) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


def write_results(run_dir: RunDir | str | os.PathLike[str], results: RunResults) -> Path:
    return write_json_atomic(as_run_dir(run_dir).results, results.to_results_json())


def write_exports(
    run_dir: RunDir | str | os.PathLike[str], results: RunResults, exports: Iterable[str]
) -> list[Path]:
    """The exports a suite asks for (`"exports"`), each beside results.json as `<name>.json`. A
    finished nightly that did not share the host (a run regression detection may take as a
    baseline) also puts its sglang-dashboard export in `<out root>/diffusion-comparisons/`,
    named as sglang's dashboard reads its history (`--history-dir` that folder)."""
    rd = as_run_dir(run_dir)
    written = []
    for name in exports:
        if name != upstream.NAME:  # lab/config.py lets no other name through
            raise LabError(f"no export named {name!r}")
        export = upstream.sglang_dashboard(results)
        written.append(write_json_atomic(rd.export(name), export))
        baseline = may_be_baseline(results.kind, results.shared_host)
        if results.status == "finished" and baseline:
            folder = rd.root / upstream.HISTORY_DIR
            written.append(write_json_atomic(folder / upstream.history_file_name(results), export))
    return written


def load_results(run_dir: RunDir | str | os.PathLike[str]) -> RunResults:
    """Read `results.json` of a run folder (or the file itself)."""
    path = Path(run_dir.path if isinstance(run_dir, RunDir) else run_dir)
    if path.is_dir():
        path = RunDir(path).results
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabError(f"{path}: no such file (is this a run folder of `lab nightly`?)") from None
    except OSError as e:
        raise LabError(f"{path}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LabError(f"{path}: expected a JSON object at the top level")
    try:
        return RunResults.from_results_json(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise LabError(f"{path}: not a lab results file: {where}: {err['msg']}") from None


def update_latest(root: str | os.PathLike[str], run_dir: RunDir | str | os.PathLike[str]) -> Path:
    """Point `root/latest` at `run_dir`, replacing the old link in one rename."""
    root = Path(root)
    target = as_run_dir(run_dir).path
    link = root / LATEST
    # Relative when the run is inside root, so the runs folder can be moved or mounted elsewhere.
    rel = target.name if target.parent.resolve() == root.resolve() else str(target.resolve())
    if link.exists() and not link.is_symlink():
        raise LabError(f"{link} exists and is not a symlink; move it away so it can point at runs")
    tmp = root / f".{LATEST}.{secrets.token_hex(4)}.tmp"
    os.symlink(rel, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return link


def write_manifest(run_dir: RunDir | str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    return write_json_atomic(as_run_dir(run_dir).manifest, dict(manifest))


def canonical_sha256(obj: Any) -> str:
    """SHA-256 of the JSON with sorted keys and no spaces: equal content, equal hash."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def lab_commit_and_reason(repo_dir: str | os.PathLike[str] | None = None) -> tuple[str | None, str]:
    """HEAD of the lab's own source checkout (the folder holding lab/), or None and why: an
    enclosing repository's HEAD (an unpacked archive inside another checkout) is not the lab's."""
    root = Path(repo_dir) if repo_dir else Path(lab.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=root, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"git could not be run ({e})"
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return None, f"{root} is not a git checkout with a commit"
    if Path(lines[0]).resolve() != root.resolve():
        return None, f"{root} is not the top of a git checkout (git found {lines[0]})"
    return lines[1], ""


COMMIT_ENV = ("LAB_COMMIT_SHA", "GITHUB_SHA")
# Image labels that name the source of the framework in an image, most exact first. The lab's
# sglang image sets both (docker/sglang.Dockerfile), so a base image's own (Ubuntu sets
# org.opencontainers.image.version=22.04) cannot show through.
SOURCE_LABELS = ("org.opencontainers.image.revision", "org.opencontainers.image.version")


def run_commit_fields(explicit: str | None = None) -> dict[str, Any]:
    """results.json's commit fields when a run starts (settle_commit completes them)."""
    sha, source = run_commit_and_source(explicit)
    why = None if sha else "not known yet: image labels and server versions are read at the end"
    return {"commit_sha": sha, "commit_source": source, "commit_unknown_because": why}


def run_commit_and_source(explicit: str | None = None) -> tuple[str | None, str | None]:
    """The commit a night is of, and where it came from, as far as known before it runs:
    `--commit`, else what CI says it checked out (LAB_COMMIT_SHA, GITHUB_SHA). The lab's own
    checkout is not the code under test; settle_commit tries the later sources."""
    if explicit and explicit.strip():
        return explicit.strip(), "--commit"
    for name in COMMIT_ENV:
        if os.environ.get(name, "").strip():
            return os.environ[name].strip(), name
    return None, None


def _one_value(found: dict[str, list[str]], what: str) -> tuple[str | None, str]:
    """The value all holders agree on and its first holder, or None and why not."""
    if len(found) == 1:
        value, holders = next(iter(found.items()))
        return value, holders[0]
    listed = "; ".join(f"{v} ({', '.join(h)})" for v, h in found.items())
    return None, f"{what} disagree: {listed}" if found else ""


def settle_commit(
    results: RunResults, image_labels: Callable[[str], Mapping[str, str] | None]
) -> None:
    """When the run is over and neither --commit nor CI named the commit: the source label of
    the cases' framework images (`image_labels(image)`, None where it cannot tell), else the
    version the frameworks' servers reported; else commit_sha stays null with the reason."""
    if results.commit_sha:
        results.commit_unknown_because = None
        return
    labelled: dict[str, list[str]] = {}
    versions: dict[str, list[str]] = {}
    for case in results.cases:
        image = case.image
        labels = image_labels(image) if image else None
        value = next((labels[k] for k in SOURCE_LABELS if labels and labels.get(k)), None)
        if value and image and image not in labelled.get(value, []):  # a value needs an image
            labelled.setdefault(value, []).append(image)
        for fr in case.framework_results():
            if fr.server_version and fr.framework not in versions.get(fr.server_version, []):
                versions.setdefault(fr.server_version, []).append(fr.framework)
    reasons = []
    for found, source, what, none in (
        (labelled, "image-label", "the framework images' source labels",
         f"no framework image has a label {' or '.join(SOURCE_LABELS)}"),
        (versions, "server-version", "the servers' reported versions",
         "no server reported its version"),
    ):  # fmt: skip
        value, holder_or_why = _one_value(found, what)
        if value:
            results.commit_sha, results.commit_source = value, f"{source}:{holder_or_why}"
            results.commit_unknown_because = None
            return
        reasons.append(holder_or_why or none)
    results.commit_source = None
    reasons.insert(0, "no --commit, LAB_COMMIT_SHA or GITHUB_SHA")
    results.commit_unknown_because = "; ".join(reasons)


_UNSET: Any = object()


def _lab_commit_fields(given: str | None) -> dict[str, str | None]:
    if given is not _UNSET:
        return {"commit": given}
    sha, why = lab_commit_and_reason()
    return {"commit": sha} if sha else {"commit": None, "commit_unknown_because": why}


def build_manifest(
    results: RunResults,
    *,
    case_json: Mapping[str, Mapping[str, Any]],
    config_path: str | os.PathLike[str] | None = None,
    config_sha256: str | None = None,
    host_gpu: Mapping[str, Any] | None = None,
    lab_version: str | None = None,
    lab_commit: str | None = _UNSET,
    secret_names: Iterable[str] = (),
) -> dict[str, Any]:
    """Everything needed to run the same cases again: config and case JSON with their hashes,
    images, the exact command line and environment of every attempt, methodology, host GPU.

    `case_json` maps case id to the case as the suite defined it (LoadedSuite.case_json).
    `host_gpu` is what the caller knows of the GPUs (model, driver, CUDA), or None.
    `lab_commit` defaults to `git rev-parse HEAD` of the lab checkout."""
    secret_names = list(secret_names)
    cases = []
    for case in results.cases:
        spec = case_json.get(case.case_id)
        attempts = []
        for att in case.attempts:
            attempts.append(
                {
                    "attempt": att.attempt,
                    "rung": att.rung,
                    "outcome": str(att.outcome),
                    "gpus": att.gpus,
                    "vram_gib": att.vram_gib,
                    "extra_args": att.extra_args,
                    "frameworks": [
                        {
                            "framework": fr.framework,
                            "command": fr.command,
                            "command_line": shlex.join(fr.command) if fr.command else "",
                            # The sandbox redacted already; again here so a manifest never leaks.
                            "env": redact_env(fr.env, secret_names),
                        }
                        for fr in att.frameworks
                    ],
                }
            )
        cases.append(
            {
                "id": case.case_id,
                "sha256": canonical_sha256(spec) if spec is not None else None,
                "case": dict(spec) if spec is not None else None,
                "image": case.image,
                "image_id": case.image_id,
                "runtime": case.runtime or results.runtime,
                "vram_gib": case.vram_gib,
                "num_gpus": case.num_gpus,
                "frameworks": case.frameworks,
                "outcome": str(case.outcome),
                "attempts": attempts,
            }
        )
    return {
        "schema": MANIFEST_SCHEMA,
        "run_id": results.run_id,
        "timestamp": results.timestamp,
        "status": results.status,
        "lab": {
            "version": lab_version or results.lab_version or lab.__version__,
            **_lab_commit_fields(lab_commit),
        },
        "config": {
            "path": str(config_path) if config_path is not None else results.config_path,
            "sha256": config_sha256 or results.config_sha256,
        },
        "runtime": results.runtime,
        "methodology": {
            "name": results.methodology,
            "warmup_requests": results.warmup_requests,
            "measurement_repeats": results.measurement_repeats,
        },
        "host": {"gpu": dict(host_gpu) if host_gpu is not None else None},
        "cases": cases,
    }
