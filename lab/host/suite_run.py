"""Running a suite (`lab nightly`, `repro`, `replay`, `selftest`) as a chain of small steps, the
way nox's tasks.py runs sessions:

    runtime → plan → dry listing, or prepare (out root, leftovers, images, run dir)
            → run → finish (triage, reports, history, latest) → exit code

Each step takes the chain's value (`SuiteRun`) and returns it, or an int: the exit code, which
ends the chain. Also here: the pieces `lab fit` and `lab repro --shell` share with the chain.
It is a little over 450 lines because the chain reads best whole, one step after another."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lab.config import Case, LoadedSuite
from lab.errors import LabError
from lab.files import write_json_atomic
from lab.host.gpus import GpuInfo, planned_gpus, resolve_gpus
from lab.host.plan import CasePlan, RunContext, attempt_request, plan_cases
from lab.host.runtimes.base import Runtime, places_work
from lab.results.model import RunResults
from lab.results.store import RunDir, new_run_id

if TYPE_CHECKING:
    from lab.results.gating import KnownEntry, QuarantineEntry


@dataclass
class SuiteOptions:
    vram_gib: float | None = None  # overrides every case's vram_gib (repro)
    fail_on_degraded: bool = False
    fail_on_skipped: bool = False
    dry_run: bool = False
    kind: str = "nightly"  # nightly | repro | replay | selftest
    fail_on_flake_budget: bool = False  # or the suite's key of that name


@dataclass
class SuiteRun:
    """The chain's value: what the steps so far found out, for the steps after them."""

    loaded: LoadedSuite
    cases: list[Case]
    args: argparse.Namespace
    opts: SuiteOptions
    runtime: Runtime | None = None
    lab_places: bool = True
    gpus: list[GpuInfo] = field(default_factory=list)
    plans: list[CasePlan] = field(default_factory=list)
    known: list[KnownEntry] = field(default_factory=list)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    root: Path | None = None
    run_dir: RunDir | None = None
    results: RunResults | None = None
    signal_seen: int = 0
    history_problem: str | None = None
    planned_for: str | None = None  # a dry run's line: the runner it plans for, not this machine


Step = Callable[[SuiteRun], "SuiteRun | int"]


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
    fail_on_flake_budget: bool = False,
) -> int:
    opts = SuiteOptions(
        vram_gib, fail_on_degraded, fail_on_skipped, dry_run, kind, fail_on_flake_budget
    )
    s = SuiteRun(loaded, cases, args, opts)
    for step in STEPS:
        value = step(s)
        if isinstance(value, int):
            return value
        s = value
    raise AssertionError("the last step returns the exit code")


# --- the steps ------------------------------------------------------------------------------------
def choose_runtime(s: SuiteRun) -> SuiteRun:
    s.runtime = open_runtime(s.args.runtime, s.loaded)
    s.lab_places = places_work(s.runtime)
    # Slurm places attempts on its nodes' GPUs: this host's GPUs take no part.
    arg = getattr(s.args, "gpus", None)
    planned = planned_gpus(arg) if s.lab_places and s.opts.dry_run else None
    if planned is not None:  # a dry run for a runner with GPUs this machine lacks
        s.gpus, s.planned_for = planned
    else:
        s.gpus = resolve_gpus(arg) if s.lab_places else []
    return s


def plan_suite(s: SuiteRun) -> SuiteRun:
    from lab.results.gating import load_known_failures, load_quarantine

    s.plans = plan_cases(s.loaded, s.cases, s.gpus, s.opts.vram_gib, s.lab_places)
    # A bad file stops the run before it starts.
    s.known = load_known_failures(s.loaded.config_dir)
    s.quarantine = load_quarantine(s.loaded.config_dir, [c.id for c in s.loaded.suite.cases])
    refuse_unrunnable_repro(s)
    return s


def list_dry_run(s: SuiteRun) -> SuiteRun | int:
    from lab.host.dry_run import print_dry_run

    if not s.opts.dry_run:
        return s
    assert s.runtime is not None
    # The paths the run would write under --out (nothing is written there).
    run_dir = Path(s.args.out).resolve() / "DRY-RUN"
    ctx = RunContext(s.loaded, s.gpus, run_dir, "DRY-RUN", s.lab_places)
    if s.planned_for:
        print(s.planned_for)
    return print_dry_run(ctx, s.plans, s.runtime, run_dir.parent)  # learns from --out's history


def prepare(s: SuiteRun) -> SuiteRun:
    assert s.runtime is not None
    s.root = writable_out_root(s.args.out)
    if hasattr(s.runtime, "check_out_root"):  # Slurm: the nodes must see the run directory
        s.runtime.check_out_root(s.root)
    remove_leftovers(s.runtime)
    skip_missing_images(s.runtime, s.plans)
    refuse_unrunnable_repro(s)
    s.run_dir = RunDir.create(s.root, new_run_id())
    return s


def run_cases(s: SuiteRun) -> SuiteRun:
    from lab.host.progress import LogFollower, Progress
    from lab.host.run import RunExecutor, RunOptions, install_signal_handlers

    assert s.runtime is not None and s.run_dir is not None and s.root is not None
    run_dir, progress = s.run_dir, Progress()
    executor = RunExecutor(
        s.loaded,
        s.plans,
        s.runtime,
        s.gpus,
        run_dir.path,
        run_dir.run_id,
        RunOptions(
            out_root=s.root,
            vram_gib=s.opts.vram_gib,
            fail_on_degraded=s.opts.fail_on_degraded,
            commit=getattr(s.args, "commit", None),
        ),
        progress,
    )
    seen = install_signal_handlers(executor)
    print(
        f"lab: run {run_dir.run_id} → {run_dir.path} ({s.runtime.name} runtime, "
        f"{len(s.gpus)} GPU(s))",
        file=sys.stderr,
    )
    follow = LogFollower(run_dir.logs, progress.console) if s.args.verbose else nullcontext()
    if getattr(s.args, "target", None):  # repro: the sandbox by hand, before it runs
        print_repro_by_hand(s, executor.ctx)
    try:
        with progress, follow:
            s.results = executor.run()
    except OSError as e:  # the output folder filled up or went away mid-run
        executor.interrupt()
        raise LabError(
            f"cannot write under {run_dir.path}: {e.strerror}. Results written before "
            "this stay readable there; free space or pick another --out"
        ) from None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    s.signal_seen = seen["signal"]
    return s


def finish(s: SuiteRun) -> SuiteRun:
    from lab.results.gating import apply_quarantine
    from lab.results.triage import fleet_fit, sign_failures

    results, run_dir = s.results, s.run_dir
    assert results is not None and run_dir is not None
    results.kind = s.opts.kind
    flake_gate = s.opts.fail_on_flake_budget or s.loaded.suite.fail_on_flake_budget
    results.fail_on = [
        o
        for o, on in (
            ("degraded", s.opts.fail_on_degraded),
            ("skipped", s.opts.fail_on_skipped),
            ("flake_budget", flake_gate),
        )
        if on
    ]
    for c in results.cases:  # counted against its history when the run is recorded
        c.flake_budget = s.loaded.case(c.case_id).flake_budget
    try:
        sign_failures(results, s.known)
        apply_quarantine(results, s.quarantine)
        fleet_fit(results, s.loaded.suite.fleet)
        s.history_problem = write_run_outputs(s.loaded, run_dir.path, results, s.gpus)
    except OSError as e:
        raise LabError(
            f"cannot write the reports under {run_dir.path}: {e.strerror}; "
            "results.json as last written stays readable"
        ) from None
    print_summary(results, run_dir.path)
    return s


def exit_code(s: SuiteRun) -> int:
    from lab.results.gating import describe_flake_budget, over_flake_budget, quarantined
    from lab.results.triage import gating_failures

    results = s.results
    assert results is not None
    if s.signal_seen:
        return 128 + s.signal_seen
    if s.history_problem:
        print(f"lab: {s.history_problem}", file=sys.stderr)
        return 2
    failed = gating_failures(
        results,
        new_only=getattr(s.args, "fail_on_new_only", False),
        allow_flaky=getattr(s.args, "allow_flaky", False),
    )
    for c in results.cases:
        if c.quarantine is not None and (c in results.failed or c.quarantine.expired):
            held = "" if c.quarantine.expired else " (does not fail the run)"
            print(f"lab: {c.case_id} {c.outcome}: {c.quarantine}{held}", file=sys.stderr)
    gated = [c for c in results.cases if str(c.outcome) in results.fail_on and not quarantined(c)]
    over = over_flake_budget(results) if "flake_budget" in results.fail_on else []
    if over:
        why = "; ".join(f"{c.case_id}: {describe_flake_budget(c)}" for c in over)
        print(f"lab: --fail-on-flake-budget: {why}", file=sys.stderr)
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
    return 1 if failed or gated or over else 0


STEPS: tuple[Step, ...] = (
    choose_runtime,
    plan_suite,
    list_dry_run,
    prepare,
    run_cases,
    finish,
    exit_code,
)  # each takes what the one before returned: see run_suite


# --- pieces of the steps --------------------------------------------------------------------------
def open_runtime(name: str | None, loaded: LoadedSuite | None = None) -> Runtime:
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


def writable_out_root(out: str) -> Path:
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


def remove_leftovers(runtime: Runtime) -> None:
    for r in runtime.cleanup(None):
        print(f"lab: removed a leftover of an earlier run: {r}", file=sys.stderr)


def skip_missing_images(runtime: Runtime, plans: list[CasePlan]) -> None:
    """A case whose image the Docker engine lacks is skipped, saying how to get the image; the
    other cases run. (The lab never pulls: a pull of many GB belongs to `make images`.)"""
    if runtime.name != "docker":
        return
    present: dict[str, bool] = {}
    for p in plans:
        if p.skip_reason or p.image == "host":
            continue
        if p.image not in present:
            present[p.image] = runtime.image_id(p.image) is not None
        if not present[p.image]:
            p.skip_reason = f"image {p.image} is not in the Docker engine; {how_to_get(p.image)}"


def how_to_get(image: str) -> str:
    """The command that builds or loads an image the lab needs (docker/build-images.sh)."""
    repo, _, tag = image.rpartition(":")
    if repo in ("nightly-lab/reference", "nightly-lab/host-empty"):
        return "build it with `make images`"
    if repo == "nightly-lab/sglang":
        from lab.frameworks.sglang import SGLANG_TAG

        base = f"lmsysorg/sglang:{tag.rpartition('-lab')[0] or SGLANG_TAG}"
        return (
            f"`docker/build-images.sh sglang` builds it on {base}: load that first "
            f"(`docker load -i FILE`), or run `make images` where a registry answers"
        )
    return "build it, or load it with `docker load -i FILE` (the lab never pulls)"


def refuse_unrunnable_repro(s: SuiteRun) -> None:
    """A repro of a case that cannot run here has nothing to reproduce: say so, start nothing."""
    if s.opts.kind == "repro" and s.plans and s.plans[0].skip_reason:
        raise LabError(f"case {s.plans[0].case.id} cannot run here: {s.plans[0].skip_reason}")


def print_repro_by_hand(s: SuiteRun, ctx: RunContext) -> None:
    assert s.runtime is not None
    p0 = s.plans[0]
    if p0.skip_reason:
        return
    rung = p0.ladder.rungs[0]
    gpu_ids = [g.index for g in s.gpus[: rung.num_gpus]]
    _, req = attempt_request(ctx, p0, rung, 1, gpu_ids)
    print(f"lab repro: the sandbox, by hand:\n  {s.runtime.repro_command(req)}", file=sys.stderr)


def write_run_outputs(
    loaded: LoadedSuite, run_dir: Path, results: RunResults, gpus: list[GpuInfo]
) -> str | None:
    """Manifest, regressions against history, history, reports and runs/latest. Returns the
    history problem, if any, after everything else is on disk."""
    from lab.host.gpus import summary
    from lab.results import reports, store

    case_json = {c.case_id: loaded.case_json(c.case_id) for c in results.cases}
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
        reports.record_and_report(
            run_dir,
            results,
            run_dir.parent / "history.sqlite",
            loaded.suite.regression,
            loaded.suite.exports,
        )
    except LabError as e:
        problem = str(e)
    store.update_latest(run_dir.parent, run_dir)
    return problem


def print_summary(results: RunResults, run_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape

    from lab.host.progress import outcome_style
    from lab.results.gating import describe_flake_budget, flake_budget_exceeded

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
        if c.quarantine is not None:
            q = c.quarantine
            reg += f" [quarantine expired {q.until}]" if q.expired else f" [quarantined {q.until}]"
        if flake_budget_exceeded(c):
            reg += f" [{describe_flake_budget(c)}]"
        tail = escape(f"{extra}{lat}{reg}{why}")  # "[quarantined …]" is text, not rich markup
        con.print(f"  [{st}]{c.outcome!s:12}[/] {escape(c.case_id)}{tail}")
    counts: dict[str, int] = {}
    for c in results.cases:
        counts[str(c.outcome)] = counts.get(str(c.outcome), 0) + 1
    con.print("  " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    con.print(f"  results: {run_dir}")


# --- lab repro --shell ----------------------------------------------------------------------------
def open_repro_shell(loaded: LoadedSuite, case: Case, args: argparse.Namespace) -> int:
    """`lab repro --shell`: the case's first attempt's sandbox, with a shell instead of the run."""
    gpus = resolve_gpus(args.gpus)
    plan = plan_cases(loaded, [case], gpus, args.vram_gib)[0]
    if plan.skip_reason:
        raise LabError(f"case {case.id} cannot run here: {plan.skip_reason}")
    runtime = open_runtime(args.runtime)
    if not hasattr(runtime, "attach"):
        raise LabError(
            f"`lab repro --shell` needs a sandbox on this machine; the {runtime.name} runtime "
            "has none here. Use --runtime docker or --runtime netns."
        )
    skip_missing_images(runtime, [plan])
    if plan.skip_reason:
        raise LabError(f"case {case.id} cannot run here: {plan.skip_reason}")
    root = writable_out_root(args.out)
    run_dir = RunDir.create(root, new_run_id())
    ctx = RunContext(loaded, gpus, run_dir.path, run_dir.run_id, places_work(runtime))
    rung = plan.ladder.rungs[0]
    spec, req = attempt_request(ctx, plan, rung, 1, [g.index for g in gpus[: rung.num_gpus]])
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(req.spec_path, spec.model_dump(mode="json"))
    req.shell = True
    print(
        f"lab repro --shell: {case.id} ({rung.name}) in the sandbox the nightly uses; by hand:\n"
        f"  {runtime.repro_command(req)}",
        file=sys.stderr,
    )
    return int(runtime.attach(req))
