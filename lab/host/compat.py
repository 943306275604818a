"""`lab compat sglang --upstream PATH`: is the lab still a drop-in for a checkout's nightly?

Runs the checkout's own scripts/ci/utils/diffusion/run_comparison.py --dry-run on its own
comparison_configs.json (in a throwaway folder, offline, nothing started), runs the lab's
`--dry-run` on the same file, and diffs the server command lines case by case, token by token.
It also lists the config keys the lab's validator does not know. Exit 0 when identical, 1 with
the differences, 2 when the checkout lacks the files."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lab.config import Case, FrameworkConfig, Suite
from lab.errors import LabError

SCRIPT = Path("scripts/ci/utils/diffusion/run_comparison.py")
CONFIG = Path("scripts/ci/utils/diffusion/comparison_configs.json")
DRY_RUN_TIMEOUT_S = 300

Lines = dict[tuple[str, str], list[str]]  # (case, framework) → tokens


def _offline_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "HF_"))}
    # upstream's lightx2v builder asks the Hub for a snapshot; offline, it keeps the model id
    env |= {"HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp), "HOME": str(tmp), "PYTHONNOUSERSITE": "1"}
    return env


def upstream_lines(checkout: Path, config: Path) -> Lines:
    """What the checkout's own script prints under --dry-run: `Case: ID | … | Framework: FW`
    followed by `[DRY-RUN] Would run: CMD` (CMD joined with spaces, so split on them)."""
    with tempfile.TemporaryDirectory(prefix="lab-compat-") as tmp:
        r = subprocess.run(
            [sys.executable, "-I", str(checkout / SCRIPT), "--config", str(config), "--dry-run",
             "--output", str(Path(tmp) / "comparison-results.json")],
            capture_output=True, text=True, cwd=tmp, env=_offline_env(Path(tmp)),
            timeout=DRY_RUN_TIMEOUT_S,
        )  # fmt: skip
    if r.returncode != 0:
        raise LabError(
            f"{checkout / SCRIPT} --dry-run exited with code {r.returncode}: "
            f"{(r.stderr or r.stdout).strip()[-600:]}"
        )
    out: Lines = {}
    current: tuple[str, str] | None = None
    for line in r.stdout.splitlines():
        if line.startswith("Case: ") and "| Framework: " in line:
            current = (line[6:].split(" | ", 1)[0].strip(), line.rsplit("| Framework: ", 1)[1])
        elif "[DRY-RUN] Would run: " in line and current is not None:
            out[current] = line.split("[DRY-RUN] Would run: ", 1)[1].split()
    return out


def lab_lines(config: Path) -> Lines:
    """What `lab nightly --dry-run` prints for the same file (every case: a case this machine
    cannot run still shows the command line it would start)."""
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "nightly", "--config", str(config), "--dry-run",
         "--runtime", "local", "--gpus", "none"],
        capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT_S,
    )  # fmt: skip
    if r.returncode != 0:
        raise LabError(f"lab nightly --dry-run of {config} failed: {r.stderr.strip()[-600:]}")
    out: Lines = {}
    case = None
    for line in r.stdout.splitlines():
        if line.startswith("== "):
            case = line.split()[1]
        elif line.startswith("   ") and ": " in line and case is not None:
            head, cmd = line.strip().split(": ", 1)
            fw = head.removesuffix(" (not started)")
            if " " not in fw and not fw.startswith(("sandbox.", "ladder", "note", "skipped")):
                out[(case, fw)] = cmd.split()  # as upstream prints it: joined with spaces
    return out


def unknown_keys(config: Path) -> list[str]:
    """Keys of the upstream config that the lab's schema does not define ("_" keys are comments)."""
    raw = json.loads(config.read_text())

    def extra(obj: Any, known: set[str], where: str) -> list[str]:
        if not isinstance(obj, dict):
            return []
        return [f"{where}.{k}" for k in obj if not k.startswith("_") and k not in known]

    found = extra(raw, set(Suite.model_fields), "(top)")
    for case in raw.get("cases") or []:
        cid = case.get("id", "?") if isinstance(case, dict) else "?"
        found += extra(case, set(Case.model_fields), cid)
        for fw, cfg in (case.get("frameworks") or {}).items() if isinstance(case, dict) else []:
            found += extra(cfg, set(FrameworkConfig.model_fields), f"{cid}.frameworks.{fw}")
    return found


def diff_lines(upstream: Lines, lab: Lines) -> list[str]:
    report: list[str] = []
    for key in sorted(set(upstream) | set(lab)):
        where = f"{key[0]} [{key[1]}]"
        if key not in lab:
            report.append(f"{where}: upstream runs `{' '.join(upstream[key])}`; the lab runs none")
            continue
        if key not in upstream:
            report.append(f"{where}: the lab runs `{' '.join(lab[key])}`; upstream runs none")
            continue
        up, ours = upstream[key], lab[key]
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(
            a=up, b=ours, autojunk=False
        ).get_opcodes():
            if op != "equal":
                report.append(
                    f"{where}: token {i1}: upstream {' '.join(up[i1:i2]) or '(nothing)'!r}, "
                    f"lab {' '.join(ours[j1:j2]) or '(nothing)'!r}"
                )
    return report


def cmd_compat(args: argparse.Namespace) -> int:
    checkout = Path(args.upstream).resolve()
    config = Path(args.config).resolve() if args.config else checkout / CONFIG
    for need in (checkout / SCRIPT, config):
        if not need.is_file():
            raise LabError(f"--upstream {checkout}: no {need} (is it an sglang checkout?)")
    upstream = upstream_lines(checkout, config)
    keys = unknown_keys(config)
    try:
        lab = lab_lines(config)
        report = diff_lines(upstream, lab)
    except LabError as e:  # e.g. the lab's validator rejects the file: say so, with the keys
        lab, report = {}, [f"the lab cannot dry-run this file: {e}"]
    print(f"upstream: {checkout / SCRIPT} --dry-run on {config}")
    print(f"  {len(upstream)} command line(s) upstream, {len(lab)} from the lab")
    for line in report:
        print(f"  differs: {line}")
    for k in keys:
        print(f"  unknown key (the lab's validator does not know it): {k}")
    same = not report and not keys
    print("identical" if same else f"{len(report)} difference(s), {len(keys)} unknown key(s)")
    return 0 if same else 1
