"""The host's `lab` subcommands: validate, list, nightly, repro, replay, report, export,
history, clean, selftest, fit. Each parses its arguments and hands them on: a suite to
lab/host/suite_run.py, which plans it and runs it (lab/host/run.py)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from lab.config import EXPORTS, load_suite
from lab.errors import LabError
from lab.host.gpus import resolve_gpus
from lab.host.models import add_models_command
from lab.host.plan import (
    DEFAULT_CONFIG,
    REFERENCE_CONFIG,
    config_path,
    find_case,
    plan_cases,
    repro_suite,
    select_cases,
)
from lab.host.runtimes.registry import RUNTIME_NAMES
from lab.results.history import HistoryRow


def positive_float(text: str) -> float:
    """An option's value that must be a finite number above 0 (argparse: exit 2, nothing run)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number above 0")
    return v


def add_host_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("validate", help="check suite files; exit 2 naming file, case and field")
    s.add_argument("configs", nargs="+", help="suite files to check")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("list", help="cases, GPUs needed, frameworks, aliases, runnable here")
    s.add_argument("--config", default=DEFAULT_CONFIG, help="suite file (default: the shipped one)")
    s.add_argument("--gpus", default=None, help="0,1,… or none (default: all NVML sees)")
    s.add_argument(
        "--plan",
        action="store_true",
        help="also each case's learned VRAM and time estimates, where they came from, and "
        "where the pool would place it (GPU sharing)",
    )
    s.add_argument("--out", default="runs", help="root of run directories (its history.sqlite)")
    s.set_defaults(func=cmd_list)

    for name, helptext in (
        ("nightly", "run a suite"),
        ("repro", "one case, as the nightly runs it"),
    ):
        s = sub.add_parser(name, help=helptext)
        if name == "repro":
            s.add_argument("target", help="case id, alias or model id")
            s.add_argument(
                "--vram-gib",
                type=positive_float,
                default=None,
                help="offer only N GiB per GPU to the server (VRAM emulation)",
            )
            s.add_argument(
                "--shell",
                action="store_true",
                help="open a shell in the case's sandbox, with the server command ready",
            )
        else:
            s.add_argument("--case", action="append", dest="cases", metavar="ID", help="only it")
            s.add_argument("--dry-run", action="store_true", help="print commands, start nothing")
            s.add_argument(
                "--fail-on-degraded",
                action="store_true",
                help="exit 1 when a case passed only on a later rung (junit marks it failed)",
            )
            s.add_argument(
                "--fail-on-skipped",
                action="store_true",
                help="exit 1 when a case could not run here (too few GPUs, missing image, ...)",
            )
            s.add_argument(
                "--commit", default=None, help="commit of the code under test (results.json)"
            )
            s.add_argument(
                "--allow-flaky",
                action="store_true",
                help="a flaky case (failed, passed on its re-run) does not fail the run",
            )
            s.add_argument(
                "--fail-on-new-only",
                action="store_true",
                help="only failures neither known (known_failures.json) nor failing since an "
                "earlier night fail the run",
            )
            s.add_argument(
                "--fail-on-flake-budget",
                action="store_true",
                help="exit 1 when a case was flaky on more of its last nights than its "
                "flake_budget allows (as the suite key fail_on_flake_budget)",
            )
        s.add_argument("--config", default=None, help="suite file (default configs/nightly.json)")
        s.add_argument("--runtime", choices=RUNTIME_NAMES, default=None, help="the sandbox")
        s.add_argument("--gpus", default=None, help="0,1,… or none (default: all NVML sees)")
        s.add_argument("--out", default="runs", help="root of run directories")
        s.add_argument("-v", "--verbose", action="store_true", help="follow the servers' logs")
        s.set_defaults(func=cmd_nightly if name == "nightly" else cmd_repro)

    s = sub.add_parser("replay", help="re-run exactly what a run's manifest.json recorded")
    s.add_argument("manifest", help="a run's manifest.json")
    s.add_argument("--case", action="append", dest="cases", metavar="ID", help="only it")
    s.add_argument("--out", default="runs", help="root of run directories")
    s.add_argument("--runtime", choices=RUNTIME_NAMES, default=None, help="the sandbox")
    s.add_argument("-v", "--verbose", action="store_true", help="follow the servers' logs")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("report", help="regenerate summary.md, junit.xml, report.html of a run")
    s.add_argument("run_dir", help="a run directory (runs/<run id>)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("export", help="a run's results in another tool's dialect")
    s.add_argument("dialect", choices=EXPORTS, help="sglang-dashboard: sglang's dashboard reads it")
    s.add_argument("run_dir", help="a run directory (runs/<run id>) or its results.json")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write it")
    s.add_argument(
        "--stand-in",
        default=None,
        metavar="FRAMEWORK",
        help="export this lab server's rows as sglang's (a CPU demo; the export says so)",
    )
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("history", help="trend of a case over past runs")
    s.add_argument("case_id", help="case id, or an alias or model id the suite knows")
    s.add_argument("--config", default=None, help="suite whose aliases to read (default: shipped)")
    s.add_argument("--out", default="runs", help="root of run directories (its history.sqlite)")
    s.add_argument("--limit", type=int, default=20, help="the last N runs of the case")
    s.add_argument("--changes", action="store_true", help="change points of its series")
    s.add_argument("--json", action="store_true", help="with --changes: series and changes as JSON")
    s.set_defaults(func=cmd_history)

    s = sub.add_parser(
        "compat", help="diff an upstream checkout's nightly --dry-run with the lab's"
    )
    s.add_argument("framework", choices=["sglang"], help="whose nightly to compare")
    s.add_argument("--upstream", required=True, metavar="PATH", help="an sglang checkout")
    s.add_argument("--config", default=None, help="default: the checkout's comparison_configs.json")
    s.set_defaults(func=_cmd_compat)

    s = sub.add_parser("fit", help="which emulated card size a case needs (lab/host/fit.py)")
    s.add_argument("target", help="case id, alias or model id")
    s.add_argument("--vram-gib", default=None, help="sizes to try, e.g. 24,32,48,80 (GiB)")
    s.add_argument("--lo", type=float, default=None, help="bisect from (GiB; default --step)")
    s.add_argument("--hi", type=float, default=None, help="bisect to (GiB; default the card)")
    s.add_argument("--step", type=float, default=None, help="resolution (1 GiB; CPU 0.01)")
    s.add_argument("--config", default=None, help="suite file (default configs/nightly.json)")
    s.add_argument("--runtime", choices=RUNTIME_NAMES, default=None, help="the sandbox")
    s.add_argument("--gpus", default=None, help="0,1,… or none (default: all NVML sees)")
    s.add_argument("--out", default="runs", help="root of run directories")
    s.set_defaults(func=cmd_fit)

    add_models_command(sub)

    s = sub.add_parser("clean", help="remove every sandbox a lab run left behind")
    s.add_argument("--out", default="runs", help="root of run directories")
    s.set_defaults(func=cmd_clean)

    s = sub.add_parser(
        "selftest", help="a suite's quick cases (suite: selftest): is this node sane?"
    )
    s.add_argument("--config", default=REFERENCE_CONFIG, help="suite file (its selftest cases)")
    s.add_argument("--runtime", choices=RUNTIME_NAMES, default=None, help="the sandbox")
    s.add_argument("-v", "--verbose", action="store_true", help="follow the servers' logs")
    s.add_argument("--gpus", default=None, help="0,1,… or none (default: all NVML sees)")
    s.add_argument("--out", default="runs", help="root of run directories")
    s.set_defaults(func=cmd_selftest)

    from lab.host.render_k8s import add_render_commands  # kubernetes itself is imported on use

    add_render_commands(sub)


# --- inputs ---------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from lab.results.gating import load_known_failures, load_quarantine

    bad = 0
    for path in args.configs:
        try:
            loaded = load_suite(path)
            # the files beside the suite that the nightly reads before it starts
            known = load_known_failures(loaded.config_dir)
            held = load_quarantine(loaded.config_dir, [c.id for c in loaded.suite.cases])
            extra = "".join(
                f", {n} {what}"
                for n, what in ((len(known), "known"), (len(held), "quarantined"))
                if n
            )
            print(f"ok   {path}: {len(loaded.suite.cases)} cases{extra}")
        except LabError as e:
            print(f"FAIL {e}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    loaded = load_suite(config_path(args.config))
    gpus = resolve_gpus(args.gpus)
    plans = plan_cases(loaded, loaded.suite.cases, gpus, None)
    from lab.host.case_list import case_list

    print(case_list(plans))
    if args.plan:
        from pathlib import Path

        from lab.host.dry_run import sharing_plan
        from lab.host.estimates import describe_placement
        from lab.host.plan import RunContext
        from lab.host.runtimes.registry import default_runtime_name

        root = Path(args.out).resolve()
        ctx = RunContext(loaded, gpus, root / "PLAN", "PLAN")
        ests, placed = sharing_plan(ctx, plans, default_runtime_name(), root)
        for cid, est in ests.items():
            where = f"; placed {describe_placement(placed[cid])}" if cid in placed else ""
            print(f"{cid}: {est.describe()}{where}")
    return 0


def _cmd_compat(args: argparse.Namespace) -> int:
    from lab.host.compat import cmd_compat

    return cmd_compat(args)


def cmd_nightly(args: argparse.Namespace) -> int:
    from lab.host.suite_run import run_suite

    loaded = load_suite(config_path(args.config))
    cases = select_cases(loaded, args.cases)
    return run_suite(
        loaded,
        cases,
        args,
        fail_on_degraded=args.fail_on_degraded,
        fail_on_skipped=args.fail_on_skipped,
        dry_run=args.dry_run,
        fail_on_flake_budget=args.fail_on_flake_budget,
    )


def cmd_fit(args: argparse.Namespace) -> int:
    from lab.host.fit import parse_sizes, run_fit
    from lab.host.suite_run import open_runtime, remove_leftovers, writable_out_root

    loaded = repro_suite(args.config, args.target)
    case = find_case(loaded, args.target)
    sizes = parse_sizes(args.vram_gib) if args.vram_gib else None
    runtime = open_runtime(args.runtime, loaded)
    gpus = resolve_gpus(args.gpus)
    root = writable_out_root(args.out)
    remove_leftovers(runtime)
    return run_fit(loaded, case, runtime, gpus, root, sizes, args.lo, args.hi, args.step)


def cmd_repro(args: argparse.Namespace) -> int:
    from lab.host.suite_run import open_repro_shell, run_suite

    loaded = repro_suite(args.config, args.target)
    case = find_case(loaded, args.target)
    if args.shell:
        return open_repro_shell(loaded, case, args)
    print(f"lab repro: {case.id} from {loaded.path}", file=sys.stderr)
    return run_suite(loaded, [case], args, vram_gib=args.vram_gib, kind="repro")


def cmd_replay(args: argparse.Namespace) -> int:
    from lab.host.replay import load_replay
    from lab.host.suite_run import run_suite

    loaded, cases, runtime_name = load_replay(Path(args.manifest), args.cases)
    args.runtime = args.runtime or runtime_name
    args.gpus = None
    return run_suite(loaded, cases, args, kind="replay")


def cmd_report(args: argparse.Namespace) -> int:
    from lab.results import reports

    run_dir = Path(args.run_dir)
    reports.regenerate(run_dir, run_dir.parent / "history.sqlite")
    print(f"lab: wrote {run_dir}/summary.md, junit.xml, report.html")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lab.files import write_json_atomic
    from lab.results import upstream
    from lab.results.store import load_results

    upstream.check_stand_in(args.stand_in)  # before reading anything: a typo says so first
    export = upstream.sglang_dashboard(load_results(args.run_dir), args.stand_in)
    path = write_json_atomic(Path(args.output), export)
    cases = len({r["case_id"] for r in export["results"]})
    print(f"lab: wrote {path}: {cases} case(s), {len(export['left_out'])} left out")
    for note in export["methodology_notes"]:
        print(f"  {note}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from lab.results import history

    db = Path(args.out) / "history.sqlite"
    if not db.exists():
        raise LabError(f"no history yet at {db}: run `make nightly` first")
    rows = history.case_history(db, args.case_id, limit=args.limit)
    if not rows:  # an alias or model id: the case the suite gives it
        try:
            case = find_case(repro_suite(args.config, args.case_id), args.case_id)
        except LabError:
            case = None
        if case is not None:
            rows = history.case_history(db, case.id, limit=args.limit)
    if not rows:
        raise LabError(f"case {args.case_id!r} has no history in {db}")
    if args.changes or args.json:
        return _print_changes(rows, as_json=args.json)
    print(history.format_history(rows))
    return 0


def _print_changes(rows: list[HistoryRow], *, as_json: bool) -> int:
    """`lab history CASE --changes [--json]`: every framework's comparable series and its
    change points (latency median, peak GPU memory)."""
    from lab.results import changes
    from lab.results.regression import comparable_series

    series: list[HistoryRow] = []
    found: list[changes.Change] = []
    for fw in dict.fromkeys(r.framework for r in rows):
        mine = comparable_series(rows, fw)
        series += mine
        for metric in changes.METRICS:
            found += changes.series_changes(mine, metric)
    if as_json:
        doc = {"series": changes.series_json(series), "changes": [c.to_json() for c in found]}
        print(json.dumps(doc, indent=1))
        return 0
    print(f"{len(series)} comparable nights; {len(found)} change(s)")
    for c in found:
        print("  " + c.describe())
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from lab.host.runtimes.registry import get_runtime

    removed: list[str] = []
    for name in RUNTIME_NAMES:
        rt = get_runtime(name)
        try:
            rt.check()
        except LabError:
            continue
        removed += rt.cleanup(None)
    for r in removed:
        print(f"removed {r}")
    print(f"lab clean: removed {len(removed)} leftover(s)")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from lab.host.suite_run import run_suite

    loaded = load_suite(args.config)
    quick = [c for c in loaded.suite.cases if (c.suite or "") == "selftest"] or loaded.suite.cases[
        :1
    ]
    return run_suite(loaded, quick, args, kind="selftest")
