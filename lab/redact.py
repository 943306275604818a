"""Which environment variables hold secrets, and hiding their values.

The one place for that idea: the sandbox redacts the env it records, the host redacts again before
writing a manifest. Imports nothing from the host or the sandbox, so both sides may use it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

REDACTED = "***redacted***"
# `${NAME}` in a case's extra_env: the host passes NAME into the sandbox, which fills it in there,
# so the value is never written into a spec or result file.
ENV_REF = re.compile(r"\$\{(\w+)\}")

# Hugging Face's tokens are named exactly; the rest are matched by shape.
_EXACT = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TOKEN", "SECRET", "PASSWORD", "API_KEY"})
_SUFFIXES = ("_TOKEN", "_KEY", "_KEY_ID", "_PAT", "_CREDENTIALS")
_PARTS = ("SECRET", "PASSWORD", "PASSWD", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY", "CREDENTIAL")


def is_secret_name(name: str) -> bool:
    """True for names such as HF_TOKEN, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD."""
    upper = name.upper()
    if upper in _EXACT:
        return True
    return upper.endswith(_SUFFIXES) or any(part in upper for part in _PARTS)


def redact_env(env: Mapping[str, str], secret_names: Iterable[str] = ()) -> dict[str, str]:
    """A copy of `env` with the value of every secret variable replaced by REDACTED.

    `secret_names` adds names a suite declared secret that the patterns would not catch."""
    extra = {n.upper() for n in secret_names}
    return {
        k: (REDACTED if (k.upper() in extra or is_secret_name(k)) and v else v)
        for k, v in env.items()
    }


# Token shapes worth hiding wherever they appear: Hugging Face, GitHub, OpenAI-style, Bearer.
_TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})\b"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{12,}"
)
_ASSIGNED = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def redact_text(text: str, secret_names: Iterable[str] = ()) -> str:
    """`text` with secrets replaced by REDACTED: the values of this process's secret variables,
    `NAME=value` where NAME is a secret's name, and token shapes (hf_…, ghp_…, Bearer …)."""
    extra = {n.upper() for n in secret_names}
    for k, v in os.environ.items():
        if len(v) >= 6 and (k.upper() in extra or is_secret_name(k)) and v in text:
            text = text.replace(v, REDACTED)
    text = _ASSIGNED.sub(
        lambda m: (
            f"{m.group(1)}={REDACTED}"
            if m.group(1).upper() in extra or is_secret_name(m.group(1))
            else m.group(0)
        ),
        text,
    )
    return _TOKEN_SHAPES.sub(REDACTED, text)
