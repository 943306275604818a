"""Command-line flag lists: how a line splits, which flags the lab owns, `{name}`s filled in, and
overriding a flag's value instead of repeating the flag."""

from __future__ import annotations

import shlex
from typing import Any

# Flags the lab itself puts on every server's line (lab/frameworks): another one in serve_args
# or a rung would move the server away from where the lab looks for it.
OWNED_FLAGS = ("--port", "--host", "--master-port", "--scheduler-port")


def split_args(text: str) -> list[str]:
    """serve_args, rung args, a custom command: split like a shell, the one way the lab does."""
    return shlex.split(text)


def fill_placeholders(template: str, values: dict[str, Any]) -> str:
    """`{name}` → value, for the names in `values` only; ValueError names what is wrong."""
    try:
        return template.format(**values)
    except KeyError as e:
        raise ValueError(
            f"unknown placeholder {{{e.args[0]}}}; known: "
            + ", ".join(f"{{{k}}}" for k in values)
            + " (write {{ and }} for literal braces)"
        ) from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"bad placeholder ({e}); known: {', '.join(values)}") from None


def check_args(text: str) -> str:
    """A shell-split line that holds none of the flags the lab owns."""
    try:
        words = split_args(text)
    except ValueError as e:
        raise ValueError(f"cannot split {text!r} like a shell: {e}") from None
    for w in words:
        if w.split("=", 1)[0] in OWNED_FLAGS:
            raise ValueError(
                f"{w.split('=', 1)[0]} is set by the lab (every server listens where the lab "
                "looks, port 30000 in its own sandbox); remove it"
            )
    return text


def _groups(args: list[str]) -> list[list[str]]:
    """Split ['--a', '1', '--b', '--c=2', 'x'] into [['--a','1'], ['--b'], ['--c=2','x']]."""
    groups: list[list[str]] = []
    for tok in args:
        if tok.startswith("--") or not groups:
            groups.append([tok])
        else:
            groups[-1].append(tok)
    return groups


def flag_name(group_head: str) -> str:
    return group_head.split("=", 1)[0]


def merge_args(base: list[str], overrides: list[str]) -> list[str]:
    """Return `base` with each flag of `overrides` replacing that flag's group, or appended."""
    over = _groups(overrides)
    over_names = {flag_name(g[0]): g for g in over}
    out: list[list[str]] = []
    placed: set[str] = set()
    for g in _groups(base):
        name = flag_name(g[0])
        if name in over_names:
            if name not in placed:
                out.append(over_names[name])
                placed.add(name)
            continue  # a repeated flag in base collapses into the override
        out.append(g)
    out.extend(g for g in over if flag_name(g[0]) not in placed)
    return [tok for g in out for tok in g]


def has_flag(args: list[str], flag: str, value: str | None = None) -> bool:
    """Whether `args` hold `flag` (with `value`, when given)."""
    for g in _groups(args):
        if flag_name(g[0]) != flag:
            continue
        if value is None:
            return True
        vals = [g[0].split("=", 1)[1]] if "=" in g[0] else g[1:2]
        if vals and vals[0] == value:
            return True
    return False


def flag_value(args: list[str], flag: str) -> str | None:
    for g in _groups(args):
        if flag_name(g[0]) == flag:
            if "=" in g[0]:
                return g[0].split("=", 1)[1]
            return g[1] if len(g) > 1 else ""
    return None
