"""Suite and case schema, loading and validation.

A suite file is a superset of sglang's `comparison_configs.json`: that file loads unchanged, and
the lab's own keys are optional. Keys starting with `_` are comments. Unknown keys are rejected
(they are usually typos), and every error names the file, the case id and the field.

Over 450 lines because one schema is one file: the suite, case, ladder and sandbox fields and
their cross-field checks read top to bottom as the config reference."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab.errors import ConfigError
from lab.frameworks import names as framework_names
from lab.frameworks.args import check_args as _check_args
from lab.frameworks.args import fill_placeholders, split_args
from lab.frameworks.rung import Rung
from lab.frameworks.rung import Strict as _Strict

Task = Literal[
    "text-to-image", "image-edit", "text-to-video", "image-to-video", "text-image-to-video", "chat"
]
# the static-memory flag of each LLM server: a fraction of the device, in (0, 1)
MEMORY_FRACTION_FLAGS = ("--mem-fraction-static", "--gpu-memory-utilization")
# What a suite's "exports" may name: `lab export NAME` (lab/results/upstream.py NAME).
EXPORTS = ("sglang-dashboard",)
VIDEO_TASKS = ("text-to-video", "image-to-video", "text-image-to-video")

# `{name}`s a custom framework's `command` may hold (lab/frameworks/custom.py fills them).
COMMAND_PLACEHOLDERS = ("port", "host", "model", "num_gpus", "config_dir", "python")
# `{name}`s of a kind "test" case's `command` (lab/sandbox/case.py fills them; run by /bin/sh).
TEST_PLACEHOLDERS = ("out_dir", "config_dir", "port", "host", "python")


def runnable_frameworks() -> tuple[str, ...]:
    """The frameworks the lab runs: the registry of lab/frameworks, asked, never repeated."""
    return framework_names.runnable()


def llm_frameworks() -> tuple[str, ...]:
    """The LLM servers: chat completions, the memory-fraction ladder, their flags checked."""
    return framework_names.chat()


def known_frameworks() -> tuple[str, ...]:
    """What a suite may name: the runnable ones and comfyui (it loads and is reported)."""
    return framework_names.known()


# Sample values of the right types: enough to prove a template fills and splits.
_SAMPLE = {
    "port": 30000,
    "host": "127.0.0.1",
    "model": "m",
    "num_gpus": 1,
    "config_dir": "/c",
    "python": "/p",
    "out_dir": "/o",
}


class FrameworkConfig(_Strict):
    serve_args: str = ""
    extra_env: dict[str, str] = Field(default_factory=dict)
    image: str | None = None  # lab: overrides the case's / suite's image for this framework
    ladder: list[Rung] | None = None  # lab: replaces the framework's default ladder
    # LLM servers: the memory fractions the default ladder steps down through
    mem_fractions: list[float] | None = None
    # lightx2v
    model_cls: str | None = None
    lightx2v_task: str | None = None
    config_json: str | None = None
    model_path: str | None = None
    # custom: any other server
    command: str | None = None
    health_path: str = "/health"
    ready_path: str | None = None
    request: Literal["image", "video", "none"] | None = None
    # custom: the server writes sglang's perf dump to each request's `perf_dump_path`
    perf_dumps: bool | None = None
    # comfyui (sglang's config has it; the lab reports it as unsupported)
    comfy_root: str | None = None
    python_bin: str | None = None
    workflow_vars: dict[str, Any] | None = None

    @field_validator("serve_args")
    @classmethod
    def _serve_args_split(cls, v: str) -> str:
        return _check_args(v)

    @field_validator("command")
    @classmethod
    def _command_fills(cls, v: str | None) -> str | None:
        if v is not None:
            filled = fill_placeholders(v, {k: _SAMPLE[k] for k in COMMAND_PLACEHOLDERS})
            try:
                split_args(filled)
            except ValueError as e:
                raise ValueError(f"cannot split the command like a shell: {e}") from None
        return v

    @property
    def serve_arg_list(self) -> list[str]:
        return split_args(self.serve_args)

    @field_validator("mem_fractions")
    @classmethod
    def _fractions(cls, v: list[float] | None) -> list[float] | None:
        for f in v or []:
            if not 0.0 < f < 1.0:
                raise ValueError(
                    f"a memory fraction must be between 0 and 1 (exclusive), got {f:g}"
                )
        return v


class FlakeBudget(_Strict):
    """The flaky nights a case may have among its last `window` recorded nights, tonight
    included (lab/results/gating.py); more is reported, and gates with --fail-on-flake-budget."""

    max_flaky: int = Field(ge=0)
    window: int = Field(ge=1, le=365)

    @model_validator(mode="after")
    def _fewer_than_the_window(self) -> FlakeBudget:
        if self.max_flaky >= self.window:
            raise ValueError(
                f"max_flaky ({self.max_flaky}) must be below window ({self.window}): "
                "else the budget can never be exceeded"
            )
        return self


class Case(_Strict):
    id: str
    kind: Literal["comparison", "test"] = "comparison"
    model: str = ""
    task: Task = "text-to-image"
    prompt: str = ""
    width: int = Field(1024, gt=0)
    height: int = Field(1024, gt=0)
    seed: int = 42
    num_gpus: int = Field(1, ge=0)
    reference_image: bool = False
    num_frames: int | None = Field(None, gt=0)
    fps: int | None = Field(None, gt=0)
    num_inference_steps: int | None = Field(None, gt=0)
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    sglang_request_extra: dict[str, Any] | None = None
    comfyui_workflow: str | None = None
    frameworks: dict[str, FrameworkConfig] = Field(default_factory=dict)
    # lab keys, all optional
    image: str | None = None
    startup_timeout_s: float | None = Field(None, gt=0)
    request_timeout_s: float | None = Field(None, gt=0)
    ladder: list[Rung] | None = None
    vram_gib: float | None = Field(None, gt=0)
    suite: str | None = None
    est_time_s: float = Field(300.0, gt=0)
    aliases: list[str] = Field(default_factory=list)
    # A stable workload (e.g. the reference server at fixed settings): when canaries move beyond
    # their MDE the same night, that night's regressions are labelled a runner shift.
    canary: bool = False
    fatal_patterns: list[str] = Field(default_factory=list)
    warmup_requests: int | None = Field(None, ge=0)
    measurement_repeats: int | None = Field(None, ge=1)
    # Repeats chosen to reach a target: measure (at least measurement_repeats) until the CI of
    # the median allows this MDE, or measure_budget_s of measuring is spent. None: fixed repeats.
    target_mde_pct: float | None = Field(None, gt=0)
    measure_budget_s: float | None = Field(None, gt=0)
    memory_limit_mib: int | None = Field(None, gt=0)  # host RAM cap of the sandbox
    # netns/local: each sandbox process's address space (RLIMIT_AS), which counts mapped files
    # and reserved memory that a RAM cap does not; None: memory_limit_mib
    address_space_limit_mib: int | None = Field(None, gt=0)
    # kind "test": a command run in the sandbox instead of a server
    command: str | None = None
    workdir: str | None = None
    junit_path: str | None = None  # where the command writes its JUnit file (relative to out dir)
    max_tokens: int | None = Field(None, gt=0)  # chat cases: tokens a measured request asks for
    flake_budget: FlakeBudget | None = None  # None: the suite's
    # GPU sharing (lab/host/estimates.py): kind "test" cases may share a GPU by default, others
    # only when marked shareable; exclusive opts a case out. Measured comparisons never share.
    shareable: bool = False
    exclusive: bool = False

    @field_validator("frameworks")
    @classmethod
    def _known_frameworks(cls, v: dict[str, FrameworkConfig]) -> dict[str, FrameworkConfig]:
        known = known_frameworks()
        for name in v:
            if name not in known:
                raise ValueError(f"unknown framework {name!r}; known: {', '.join(known)}")
        return v

    @field_validator("frameworks")
    @classmethod
    def _llm_flags(cls, v: dict[str, FrameworkConfig]) -> dict[str, FrameworkConfig]:
        llm = llm_frameworks()
        for name, cfg in v.items():
            if name in llm:
                check_llm_args(name, cfg.serve_arg_list, f"{name}.serve_args")
                for r in cfg.ladder or []:
                    check_llm_args(name, r.arg_list, f"{name}.ladder rung {r.name!r}")
        return v

    @field_validator("ladder")
    @classmethod
    def _llm_ladder(cls, v: list[Rung] | None, info: Any) -> list[Rung] | None:
        llm = llm_frameworks()
        frameworks = [f for f in (info.data.get("frameworks") or {}) if f in llm]
        for r in v or []:
            for fw in frameworks:
                check_llm_args(fw, r.arg_list, f"rung {r.name!r}")
            extra = r.env.get("LAB_SERVER_EXTRA_ARGS")
            if extra is not None:  # a test's server: its flags are unknown, its fractions not
                check_llm_args(None, shlex.split(extra), f"rung {r.name!r} LAB_SERVER_EXTRA_ARGS")
        return v

    @field_validator("command")
    @classmethod
    def _test_command_fills(cls, v: str | None) -> str | None:
        if v is not None:
            fill_placeholders(v, {k: _SAMPLE[k] for k in TEST_PLACEHOLDERS})
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir_fills(cls, v: str | None) -> str | None:
        if v is not None:
            fill_placeholders(v, {"config_dir": _SAMPLE["config_dir"]})
        return v

    @model_validator(mode="after")
    def _sharing_fields(self) -> Case:
        if self.shareable and self.exclusive:
            raise ValueError("'shareable' and 'exclusive' are both true: pick one")
        return self

    @model_validator(mode="after")
    def _kind_fields(self) -> Case:
        if self.kind == "test":
            if not self.command:
                raise ValueError("a case of kind 'test' needs 'command'")
        else:
            if not self.model:
                raise ValueError("field 'model' is required")
            if not self.frameworks:
                raise ValueError("field 'frameworks' needs at least one framework")
            if "reference" in self.frameworks and self.model.startswith("ref-llm://"):
                raise ValueError("a ref-llm:// model is served by framework 'reference-llm'")
            custom = self.frameworks.get("custom")
            if custom is not None and not custom.command:
                raise ValueError("framework 'custom' needs 'command'")
            for name, fc in self.frameworks.items():
                if fc.perf_dumps is not None and name != "custom":
                    raise ValueError(
                        f"frameworks.{name}.perf_dumps: only a 'custom' framework says whether "
                        f"it writes perf dumps ({name}'s adapter knows)"
                    )
            if custom is not None and custom.perf_dumps and custom.request in (None, "none"):
                raise ValueError(
                    "frameworks.custom.perf_dumps needs 'request' image or video: the lab asks "
                    "for a perf dump with a measured request"
                )
        return self

    @property
    def is_video(self) -> bool:
        return self.task in VIDEO_TASKS

    @property
    def needs_image_input(self) -> bool:
        return self.reference_image or self.task in ("image-edit", "image-to-video")

    @property
    def runnable_frameworks(self) -> list[str]:
        runnable = runnable_frameworks()
        return [f for f in self.frameworks if f in runnable]

    def names(self) -> list[str]:
        """Every name a user may type for this case: id, aliases, model id."""
        return [self.id, *self.aliases, *([self.model] if self.model else [])]


def check_llm_args(framework: str | None, args: list[str], where: str) -> None:
    """Flags of an LLM server must be the real server's (framework None: any flag), and a
    memory fraction must lie in (0, 1): ValueError naming `where` otherwise."""
    from lab.frameworks.args import flag_name, flag_value

    known: frozenset[str] | None = None
    if framework == "reference-llm":
        from lab.refserver.llm_server import build_parser

        known = frozenset(o for a in build_parser()._actions for o in a.option_strings)
    elif framework == "transformers":
        # its own click parser needs transformers imported (~7 s): checked by a unit test on
        # every command line of configs/ (tests/unit/test_transformers_adapter.py) instead
        known = None
    elif framework is not None:
        from lab.frameworks import llm_flag_lists

        known = llm_flag_lists.SGLANG_SRT if framework == "sglang-srt" else llm_flag_lists.VLLM
    for tok in args:
        name = flag_name(tok)
        if known is not None and tok.startswith("--") and name not in known:
            raise ValueError(f"{where}: {framework} has no option {name}")
    for flag in MEMORY_FRACTION_FLAGS:
        value = flag_value(args, flag)
        if value is None:
            continue
        try:
            ok = 0.0 < float(value) < 1.0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{where}: {flag} must be between 0 and 1 (exclusive), got {value!r}")


class RegressionPolicy(_Strict):
    """How a night is judged against its comparable history (lab/results/regression.py)."""

    # "noise": outside the case's own night-to-night noise AND at least min_effect_pct;
    # "fixed": the old rule, more than threshold_pct from the median of the window.
    method: Literal["noise", "fixed"] = "noise"
    min_effect_pct: float = Field(3.0, ge=0)
    alpha: float = Field(0.01, gt=0, lt=1)  # false-alarm probability per case-night
    min_history: int = Field(3, ge=2)  # fewer comparable nights: inconclusive
    threshold_pct: float = 5.0  # the fixed rule's line
    window: int = Field(10, ge=1)


class SlurmSettings(_Strict):
    """`--runtime slurm`: each case attempt is one Slurm job (lab/host/runtimes/slurm.py)."""

    partition: str | None = None  # sbatch --partition; None: the cluster's default
    # The folder the nodes share: run directories (--out) must lie under it, as the nodes read
    # each attempt's spec there and write its result there. None: --out is trusted to be shared.
    shared_dir: str | None = None
    sandbox: Literal["docker", "netns"] = "docker"  # what each job runs `lab case` in, on its node
    sbatch_args: list[str] = Field(default_factory=list)  # last on sbatch's line: they win
    max_jobs: int = Field(8, ge=1)  # attempts submitted (pending or running) at once
    python: str | None = None  # the nodes' interpreter that imports the lab; None: the host's
    gpu_option: Literal["gres", "gpus"] = "gres"  # --gres=gpu[:type]:N or --gpus=[type:]N
    gpu_type: str | None = None  # e.g. "h100" where the cluster names its GPU types
    poll_s: float = Field(2.0, gt=0)  # how often the host asks squeue about its jobs
    pending_timeout_s: float | None = Field(None, gt=0)  # None: wait as long as Slurm queues


class GpuClass(_Strict):
    """One kind of card the fleet runs on: each case shows whether its peak fits it."""

    name: str = Field(min_length=1)
    vram_gib: float = Field(gt=0)


class Suite(_Strict):
    measurement_repeats: int = Field(3, ge=1)
    target_mde_pct: float | None = Field(None, gt=0)  # every case's default (Case has the key)
    measure_budget_s: float | None = Field(None, gt=0)
    test_image_url: str | None = None
    cases: list[Case]
    # lab keys
    suite: str | None = None
    include: list[str] = Field(default_factory=list)  # other suite files whose cases join this one
    image: str | None = None
    test_image_path: str | None = None  # local file used for reference_image cases
    warmup_requests: int = Field(1, ge=0)
    startup_timeout_s: float = Field(2400.0, gt=0)
    request_timeout_s: float = Field(1200.0, gt=0)
    ladders: dict[str, list[Rung]] | None = None  # per framework, replaces the adapter's default
    model_cache: str | None = None  # host folder mounted read-only into every sandbox
    cpu_concurrency: int = Field(2, ge=1)  # CPU-only cases run at most this many at once
    shm_size: str = "2g"
    ipc_mode: str | None = None
    regression: RegressionPolicy = Field(default_factory=RegressionPolicy)
    # other tools' dialects the nightly writes beside results.json (`lab export NAME`)
    exports: list[str] = Field(default_factory=list)
    # An attempt ending crashed / timeout / bad_response is re-run this many times as the
    # identical attempt: a pass then makes the case `flaky`, not green. 0: never.
    confirm_failures: int = Field(1, ge=0, le=3)
    fleet: list[GpuClass] = Field(default_factory=list)
    flake_budget: FlakeBudget | None = None  # every case's default (Case has the key)
    fail_on_flake_budget: bool = False  # as `lab nightly --fail-on-flake-budget`
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)  # only for --runtime slurm
    # host variables the sandbox inherits (fnmatch patterns): GPU-stack switches, not secrets
    pass_env: list[str] = Field(
        default_factory=lambda: [
            "NCCL_*",
            "NVSHMEM_*",
            "TORCH_SYMM_MEM_*",
            "PYTORCH_CUDA_ALLOC_CONF",
        ]
    )

    @field_validator("exports")
    @classmethod
    def _known_exports(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in EXPORTS:
                raise ValueError(f"unknown export {name!r}; known: {', '.join(EXPORTS)}")
        return v

    @model_validator(mode="after")
    def _target_defaults(self) -> Suite:
        self.fill_case_defaults()
        return self

    def fill_case_defaults(self) -> None:
        """The suite's target and budget reach each case's spec through the case itself; a case's
        own value wins (load_suite calls this again once included cases have joined)."""
        for case in self.cases:
            if case.target_mde_pct is None and self.target_mde_pct is not None:
                case.target_mde_pct = self.target_mde_pct
            if case.measure_budget_s is None and self.measure_budget_s is not None:
                case.measure_budget_s = self.measure_budget_s
            if case.flake_budget is None and self.flake_budget is not None:
                case.flake_budget = self.flake_budget


def check_names(cases: list[Case], path: Path) -> None:
    """At least one case; ids and aliases name one case each (as `--case` and `lab repro` read
    them: case-insensitively), and no alias is another case's model id."""
    if not cases:
        raise ConfigError(str(path), None, "cases", "a suite needs at least one case")
    owner: dict[str, str] = {}  # lowercased name → the case it names
    models = {c.model.lower(): c.id for c in cases if c.model}
    for case in cases:
        if case.id.lower() in owner:
            other = owner[case.id.lower()]
            same = other.lower() == case.id.lower()
            what = "appears twice" if same else f"is an alias of {other!r}"
            raise ConfigError(str(path), case.id, "id", f"case id {case.id!r} {what}")
        owner[case.id.lower()] = case.id
        for alias in case.aliases:
            key = alias.lower()
            if key in owner:
                msg = f"alias {alias!r} is already a name of case {owner[key]!r}"
                raise ConfigError(str(path), case.id, "aliases", msg)
            if models.get(key, case.id) != case.id:
                msg = f"alias {alias!r} is the model id of case {models[key]!r}"
                raise ConfigError(str(path), case.id, "aliases", msg)
            owner[key] = case.id


class LoadedSuite(BaseModel):
    """A validated suite plus where it came from (for provenance and `{config_dir}`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    suite: Suite
    sha256: str

    @property
    def config_dir(self) -> Path:
        return self.path.parent

    def case(self, case_id: str) -> Case:
        for c in self.suite.cases:
            if c.id == case_id:
                return c
        raise KeyError(case_id)

    def case_json(self, case_id: str) -> dict[str, Any]:
        return self.case(case_id).model_dump(mode="json", exclude_defaults=True)


def _strip_comments(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_comments(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [_strip_comments(v) for v in obj]
    return obj


def _error_location(raw: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """Turn a pydantic error location into (case id, dotted field)."""
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        cases = raw.get("cases") or []
        case_id = None
        if loc[1] < len(cases) and isinstance(cases[loc[1]], dict):
            case_id = str(cases[loc[1]].get("id") or f"#{loc[1]}")
        field = ".".join(str(p) for p in loc[2:]) or None
        return case_id or f"#{loc[1]}", field
    return None, ".".join(str(p) for p in loc) or None


def parse_suite(raw: Any, path: Path) -> Suite:
    if not isinstance(raw, dict):
        raise ConfigError(str(path), None, None, "the top level must be a JSON object")
    raw = _strip_comments(raw)
    try:
        return Suite.model_validate(raw, strict=True)
    except ValidationError as e:
        err = e.errors()[0]
        case_id, field = _error_location(raw, tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        more = f" (and {len(e.errors()) - 1} more error(s))" if len(e.errors()) > 1 else ""
        raise ConfigError(str(path), case_id, field, msg + more) from None


def _read_suite(path: Path) -> tuple[Suite, bytes]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), None, None, f"cannot read: {e.strerror}") from None
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), None, None, f"not valid JSON: {e}") from None
    return _local_paths(parse_suite(raw, path), path.parent), data


def _local_paths(suite: Suite, folder: Path) -> Suite:
    """A model or model_cache written as ./… or ../… is a folder relative to its suite file
    (a model made by `lab models make`); it reaches the sandbox absolute, the path a pinned
    server (transformers serve) lists and answers to."""

    def local(p: str) -> str:
        return str((folder / p).resolve()) if p.startswith(("./", "../")) else p

    for case in suite.cases:
        case.model = local(case.model)
    if suite.model_cache:
        suite.model_cache = local(suite.model_cache)
    return suite


def load_suite(path: str | Path) -> LoadedSuite:
    """Load and validate a suite and the suites it includes (their cases join; the top file's
    settings hold). The SHA-256 covers every file read."""
    import hashlib

    path = Path(path).resolve()
    suite, data = _read_suite(path)
    digest = hashlib.sha256(data)
    cases = list(suite.cases)
    for inc in suite.include:
        inc_path = (path.parent / inc).resolve()
        if inc_path == path:
            raise ConfigError(str(path), None, "include", "a suite cannot include itself")
        included, inc_data = _read_suite(inc_path)
        if included.include:
            raise ConfigError(str(inc_path), None, "include", "included suites cannot include more")
        digest.update(inc_data)
        cases.extend(included.cases)
    check_names(cases, path)
    suite = suite.model_copy(update={"cases": cases})
    suite.fill_case_defaults()
    return LoadedSuite(path=path, suite=suite, sha256=digest.hexdigest())
