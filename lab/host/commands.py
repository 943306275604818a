"""The host's `lab` subcommands: validate, list, nightly, repro, replay, report, history, clean,
selftest. Each turns arguments into a plan and hands it to the run (lab.host.run)."""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

from lab.config import Case, LoadedSuite, load_suite
from lab.errors import LabError
from lab.host.plan import (
    DEFAULT_CONFIG,
    REFERENCE_CONFIG,
    RunContext,
    attempt_request,
    config_path,
    find_case,
    plan_cases,
    repro_suite,
    select_cases,
)
from lab.host.runtimes.registry import RUNTIME_NAMES

find_cases = find_case  # the old name, for one session (#14)


def positive_float(text: str) -> float:
    """An option's value that must be a finite number above 0 (argparse: exit 2, nothing run)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number above 0")
    return v


def add_host_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("validate", help="check suite files; exit 2 naming file, case and field")
    s.add_argument("configs", nargs="+", help="suite files to check")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("list", help="cases, GPUs needed, frameworks, aliases, runnable here")
    s.add_argument("--config", default=DEFAULT_CONFIG, help="suite file (default: the shipped one)")
    s.add_argument("--gpus", default=None, help="0,1,… or none (default: all NVML sees)")
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

    s = sub.add_parser("history", help="trend of a case over past runs")
    s.add_argument("case_id", help="case id, or an alias or model id the suite knows")
    s.add_argument("--config", default=None, help="suite whose aliases to read (default: shipped)")
    s.add_argument("--out", default="runs", help="root of run directories (its history.sqlite)")
    s.add_argument("--limit", type=int, default=20, help="the last N runs of the case")
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
    bad = 0
    for path in args.configs:
        try:
            loaded = load_suite(path)
            print(f"ok   {path}: {len(loaded.suite.cases)} cases")
        except LabError as e:
            print(f"FAIL {e}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def resolve_gpus(arg: str | None):
    from lab.host.gpus import inventory

    found = inventory()
    if arg is None:
        return found
    if arg.strip().lower() == "none":
        return []
    try:
        wanted = [int(x) for x in arg.split(",") if x.strip()]
    except ValueError:
        raise LabError(
            f"--gpus {arg!r}: expected a comma-separated list of indices, or none"
        ) from None
    if not wanted:
        raise LabError(f"--gpus {arg!r}: expected a comma-separated list of indices, or none")
    if len(set(wanted)) != len(wanted):
        raise LabError(f"--gpus {arg}: a GPU is named twice")
    if not found:  # a sandbox would fail on the missing device, after retries: say it now
        from lab.host.gpus import unavailable_reason

        why = unavailable_reason() or "NVML lists no GPU"
        raise LabError(
            f"--gpus {arg}: this machine has no GPU the lab can use ({why}); "
            "use --gpus none for the CPU cases"
        )
    by_index = {g.index: g for g in found}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise LabError(f"--gpus {arg}: no GPU {missing} here; NVML sees {sorted(by_index)}")
    return [by_index[i] for i in wanted]


def _runtime(name: str | None, loaded: LoadedSuite | None = None):
    from lab.host.runtimes.registry import default_runtime_name, get_runtime

    rt = get_runtime(name or default_runtime_name(), loaded.suite if loaded else None)
    if name is None and rt.name != "docker":
        print(
            f"lab: no Docker engine answers; using the {rt.name} runtime "
            "(same port isolation, no image)",
            file=sys.stderr,
        )
    rt.check()
    return rt


def _out_root(out: str) -> Path:
    root = Path(out).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".lab-write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise LabError(
            f"output directory {root} is not writable ({e.strerror}); pick another with --out DIR"
        ) from None
    return root


def cmd_list(args: argparse.Namespace) -> int:
    loaded = load_suite(config_path(args.config))
    gpus = resolve_gpus(args.gpus)
    plans = plan_cases(loaded, loaded.suite.cases, gpus, None)
    from lab.host.case_list import case_list

    print(case_list(plans))
    return 0


# --- running --------------------------------------------------------------------------------------
def run_suite(
    loaded: LoadedSuite,
    cases: list[Case],
    args: argparse.Namespace,
    *,
    vram_gib: float | None = None,
    fail_on_degraded: bool = False,
    fail_on_skipped: bool = False,
    dry_run: bool = False,
    kind: str = "nightly",
) -> int:
    from lab.host.progress import LogFollower, Progress
    from lab.host.run import Nightly, RunOptions, install_signal_handlers
    from lab.host.runtimes.base import LABEL_RUN, places_work  # noqa: F401 - labels there
    from lab.results.store import RunDir, new_run_id
    from lab.results.triage import (
        fleet_fit,
        gating_failures,
        load_known_failures,
        sign_failures,
    )

    runtime = _runtime(args.runtime, loaded)
    lab_places = places_work(runtime)
    # Slurm places attempts on its nodes' GPUs: this host's GPUs take no part.
    gpus = resolve_gpus(getattr(args, "gpus", None)) if lab_places else []
    plans = plan_cases(loaded, cases, gpus, vram_gib, lab_places)
    known = load_known_failures(loaded.config_dir)  # a bad file stops the run before it starts
    if kind == "repro" and plans and plans[0].skip_reason:  # nothing to reproduce: say so now
        raise LabError(f"case {plans[0].case.id} cannot run here: {plans[0].skip_reason}")
    if dry_run:
        ctx = RunContext(loaded, gpus, Path("runs/DRY-RUN").resolve(), "DRY-RUN", lab_places)
        return _dry_run(ctx, plans, runtime)
    root = _out_root(args.out)
    if hasattr(runtime, "check_out_root"):  # Slurm: the nodes must see the run directory
        runtime.check_out_root(root)
    _clean_leftovers(runtime, root)
    _check_images(runtime, plans)
    run_dir = RunDir.create(root, new_run_id())
    progress = Progress()
    nightly = Nightly(
        loaded,
        plans,
        runtime,
        gpus,
        run_dir.path,
        run_dir.run_id,
        RunOptions(
            out_root=root,
            vram_gib=vram_gib,
            fail_on_degraded=fail_on_degraded,
            commit=getattr(args, "commit", None),
        ),
        progress,
    )
    seen = install_signal_handlers(nightly)
    print(
        f"lab: run {run_dir.run_id} → {run_dir.path} ({runtime.name} runtime, {len(gpus)} GPU(s))",
        file=sys.stderr,
    )
    follow = LogFollower(run_dir.path / "logs", progress.console) if args.verbose else nullcontext()
    if getattr(args, "target", None):  # repro: the sandbox by hand, before it runs
        p0 = plans[0]
        if not p0.skip_reason:
            rung = p0.ladder.rungs[0]
            gpu_ids = [g.index for g in gpus[: rung.num_gpus]]
            _, req = attempt_request(nightly.ctx, p0, rung, 1, gpu_ids)
            print(
                f"lab repro: the sandbox, by hand:\n  {runtime.repro_command(req)}", file=sys.stderr
            )
    try:
        with progress, follow:
            results = nightly.run()
    except OSError as e:  # the output folder filled up or went away mid-run
        nightly.interrupt()
        raise LabError(
            f"cannot write under {run_dir.path}: {e.strerror}. Results written before "
            "this stay readable there; free space or pick another --out"
        ) from None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    results.kind = kind
    results.fail_on = [
        o for o, on in (("degraded", fail_on_degraded), ("skipped", fail_on_skipped)) if on
    ]
    try:
        sign_failures(results, known)
        fleet_fit(results, loaded.suite.fleet)
        problem = finish_run(loaded, run_dir.path, results, gpus)
    except OSError as e:
        raise LabError(
            f"cannot write the reports under {run_dir.path}: {e.strerror}; "
            "results.json as last written stays readable"
        ) from None
    _print_summary(results, run_dir.path)
    if seen["signal"]:
        return 128 + seen["signal"]
    if problem:
        print(f"lab: {problem}", file=sys.stderr)
        return 2
    failed = gating_failures(
        results,
        new_only=getattr(args, "fail_on_new_only", False),
        allow_flaky=getattr(args, "allow_flaky", False),
    )
    gated = [c for c in results.cases if str(c.outcome) in results.fail_on]
    for outcome in results.fail_on:
        ids = [
            c.case_id + (f" ({c.reason})" if c.reason else "")
            for c in gated
            if str(c.outcome) == outcome
        ]
        if ids:
            print(
                f"lab: --fail-on-{outcome}: {len(ids)} {outcome}: {'; '.join(ids)}", file=sys.stderr
            )
    return 1 if failed or gated else 0


def finish_run(loaded: LoadedSuite, run_dir: Path, results, gpus) -> str | None:
    """Manifest, regressions against history, history, reports and runs/latest. Returns the
    history problem, if any, after everything else is on disk."""
    from lab.results import reports, store

    case_json = {c.case_id: loaded.case_json(c.case_id) for c in results.cases}
    from lab.host.gpus import summary

    host_gpu = summary() if gpus else None
    store.write_manifest(
        run_dir,
        store.build_manifest(
            results,
            case_json=case_json,
            config_path=loaded.path,
            config_sha256=loaded.sha256,
            host_gpu=host_gpu,
        ),
    )
    problem = None
    try:
        reports.finish_run(
            run_dir, results, run_dir.parent / "history.sqlite", loaded.suite.regression
        )
    except LabError as e:
        problem = str(e)
    store.update_latest(run_dir.parent, run_dir)
    return problem


def _print_summary(results, run_dir: Path) -> None:
    from rich.console import Console

    from lab.host.progress import outcome_style

    con = Console(stderr=True, highlight=False, soft_wrap=True)
    con.print()
    for c in results.cases:
        st = outcome_style(str(c.outcome))
        lat = ""
        frs = c.framework_results()
        if frs and frs[0].latency_s is not None:
            lat = " " + ", ".join(f"{f.framework} {f.latency_s:.3f}s" for f in frs if f.latency_s)
        extra = f" (rung {c.degraded_rung})" if c.degraded_rung else ""
        where = f"{c.phase}: " if c.phase else ""
        reason = c.reason if len(c.reason) <= 200 else c.reason[:200] + "…"
        why = f" — {where}{reason}" if str(c.outcome) != "passed" and c.reason else ""
        reg = f" [{c.regression}]" if c.regression else ""
        con.print(f"  [{st}]{c.outcome!s:12}[/] {c.case_id}{extra}{lat}{reg}{why}")
    counts: dict[str, int] = {}
    for c in results.cases:
        counts[str(c.outcome)] = counts.get(str(c.outcome), 0) + 1
    con.print("  " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    con.print(f"  results: {run_dir}")


def _dry_run(ctx: RunContext, plans, runtime) -> int:
    from lab.frameworks import server_command
    from lab.host.ladder import plan_ladder

    for p in plans:
        print(f"== {p.case.id} ({p.case.num_gpus} GPU(s), image {p.image})")
        rung = p.ladder.rungs[0] if p.ladder.rungs else None
        if p.skip_reason:
            print(f"   skipped: {p.skip_reason}")
            if p.frameworks:
                # what the nightly would start on a machine with the GPUs (indexes invented)
                rung = plan_ladder(ctx.loaded, p.case, p.frameworks, p.case.num_gpus).rungs[0]
                spec, _ = attempt_request(ctx, p, rung, 1, list(range(rung.num_gpus)))
                for fw in p.frameworks:
                    print(f"   {fw} (not started): {shlex.join(server_command(spec, fw))}")
            for n in p.notes:
                print(f"   note: {n}")
            continue
        assert rung is not None
        spec, req = attempt_request(ctx, p, rung, 1, [g.index for g in ctx.gpus[: rung.num_gpus]])
        for fw in p.frameworks:
            print(f"   {fw}: {shlex.join(server_command(spec, fw))}")
        if p.case.kind == "test":
            print(f"   test: {p.case.command}")
        for k, v in runtime.plan(req).items():
            print(f"   sandbox.{k}: {v}")
        print(f"   ladder: {' → '.join(r.name for r in p.ladder.rungs)}")
        for n in p.notes:
            print(f"   note: {n}")
    return 0


def _check_images(runtime, plans) -> None:
    if runtime.name != "docker":
        return
    missing = sorted(
        {
            p.image
            for p in plans
            if not p.skip_reason and p.image != "host" and runtime.image_id(p.image) is None
        }
    )
    if missing:
        raise LabError(
            f"image(s) {', '.join(missing)} not found in the Docker engine; build them "
            "with `make images` (or use --runtime netns to run on the host's own "
            "environment)"
        )


def _clean_leftovers(runtime, root: Path) -> None:
    removed = runtime.cleanup(None)
    for r in removed:
        print(f"lab: removed a leftover of an earlier run: {r}", file=sys.stderr)


def _cmd_compat(args: argparse.Namespace) -> int:
    from lab.host.compat import cmd_compat

    return cmd_compat(args)


def cmd_nightly(args: argparse.Namespace) -> int:
    loaded = load_suite(config_path(args.config))
    cases = select_cases(loaded, args.cases)
    return run_suite(
        loaded,
        cases,
        args,
        fail_on_degraded=args.fail_on_degraded,
        fail_on_skipped=args.fail_on_skipped,
        dry_run=args.dry_run,
    )


def cmd_fit(args: argparse.Namespace) -> int:
    from lab.host.fit import parse_sizes, run_fit

    loaded = repro_suite(args.config, args.target)
    case = find_case(loaded, args.target)
    sizes = parse_sizes(args.vram_gib) if args.vram_gib else None
    runtime = _runtime(args.runtime, loaded)
    gpus = resolve_gpus(args.gpus)
    root = _out_root(args.out)
    _clean_leftovers(runtime, root)
    return run_fit(loaded, case, runtime, gpus, root, sizes, args.lo, args.hi, args.step)


def cmd_repro(args: argparse.Namespace) -> int:
    loaded = repro_suite(args.config, args.target)
    case = find_case(loaded, args.target)
    if args.shell:
        return _repro_shell(loaded, case, args)
    print(f"lab repro: {case.id} from {loaded.path}", file=sys.stderr)
    return run_suite(loaded, [case], args, vram_gib=args.vram_gib, kind="repro")


def _repro_shell(loaded: LoadedSuite, case: Case, args: argparse.Namespace) -> int:
    gpus = resolve_gpus(args.gpus)
    plan = plan_cases(loaded, [case], gpus, args.vram_gib)[0]
    if plan.skip_reason:
        raise LabError(f"case {case.id} cannot run here: {plan.skip_reason}")
    runtime = _runtime(args.runtime)
    if not hasattr(runtime, "attach"):
        raise LabError(
            f"`lab repro --shell` needs a sandbox on this machine; the {runtime.name} runtime "
            "has none here. Use --runtime docker or --runtime netns."
        )
    _check_images(runtime, [plan])
    root = _out_root(args.out)
    from lab.host.runtimes.base import places_work
    from lab.results.store import RunDir, new_run_id

    run_dir = RunDir.create(root, new_run_id())
    ctx = RunContext(loaded, gpus, run_dir.path, run_dir.run_id, places_work(runtime))
    rung = plan.ladder.rungs[0]
    spec, req = attempt_request(ctx, plan, rung, 1, [g.index for g in gpus[: rung.num_gpus]])
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    from lab.files import write_json_atomic

    write_json_atomic(req.spec_path, spec.model_dump(mode="json"))
    req.shell = True
    print(
        f"lab repro --shell: {case.id} ({rung.name}) in the sandbox the nightly uses; by hand:\n"
        f"  {runtime.repro_command(req)}",
        file=sys.stderr,
    )
    return runtime.attach(req)


def cmd_replay(args: argparse.Namespace) -> int:
    from lab.host.replay import load_replay

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
    print(history.format_history(rows))
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
    loaded = load_suite(args.config)
    quick = [c for c in loaded.suite.cases if (c.suite or "") == "selftest"] or loaded.suite.cases[
        :1
    ]
    return run_suite(loaded, quick, args, kind="selftest")
