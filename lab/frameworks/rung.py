"""A rung of the degrade ladder: the flags (or environment) one attempt adds. Frameworks build
their default ladders from it and suites write their own; it lives here, below lab.config, so a
framework module needs nothing of the config at run time."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lab.frameworks.args import check_args, split_args


class Strict(BaseModel):
    # Strict types (no "256" for 256, no true for 1) are asked for in parse_suite.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Rung(Strict):
    """One step of the degrade ladder: flags that replace their values in serve_args."""

    name: str
    args: str = ""  # split like a shell, as serve_args
    num_gpus: int | None = None  # the attempt needs this many GPUs (e.g. cfg-parallel 2)
    skip_if_args: str | None = None  # skip the rung when serve_args already hold these flags
    # environment of the attempt: how a rung reaches a `kind: test` case, whose launcher appends
    # LAB_SERVER_EXTRA_ARGS to its server's command line (lab/e2e.py)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("args", "skip_if_args")
    @classmethod
    def _splits(cls, v: str | None) -> str | None:
        return v if v is None else check_args(v)

    @property
    def arg_list(self) -> list[str]:
        return split_args(self.args)
