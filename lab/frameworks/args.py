"""Command-line flag lists: override a flag's value instead of repeating the flag."""

from __future__ import annotations


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
