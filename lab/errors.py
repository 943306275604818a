"""Errors a user can meet. Each carries a message written for the person reading the CI log."""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class LabError(Exception):
    """A problem with the user's input or machine: printed without a traceback, exit 2."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(LabError):
    """A suite file that does not validate; the message names file, case and field."""

    def __init__(self, path: str, case_id: str | None, field: str | None, problem: str) -> None:
        self.path, self.case_id, self.field, self.problem = path, case_id, field, problem
        where = [f"file {path}"]
        if case_id:
            where.append(f"case {case_id!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


class RuntimeUnavailable(LabError):
    """The sandbox runtime (Docker engine, unshare) cannot be used here."""
