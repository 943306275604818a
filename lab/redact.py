"""Which environment variables hold secrets, and hiding their values.

The one place for that idea: the sandbox redacts the env it records, the host redacts again before
writing a manifest. Imports nothing from the host or the sandbox, so both sides may use it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

REDACTED = "***redacted***"

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
