"""A small schema for the user config: typed fields with defaults and checks.

Every error names the file, the key and what was expected (see
:class:`config.errors.ConfigError`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import ConfigError


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a mapping"}


@dataclass(frozen=True, slots=True)
class Field:
    """One config key.

    Args:
        type: Expected Python type(s) after YAML parsing.
        default: Value when absent (``REQUIRED`` makes it mandatory).
        help: One line shown in errors and docs.
        choices: Allowed values, if restricted.
        check: Extra validation; returns an error text ('what is expected') or None.
    """

    type: type | tuple[type, ...]
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = None

    def expected(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        words = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)
        if self.choices:
            words = "one of " + ", ".join(map(str, self.choices))
        return words + (f" ({self.help})" if self.help else "")


def validate(fields: dict[str, Field], data: Any, path: Path | str, where: str) -> dict[str, Any]:
    """Validate ``data`` against ``fields``; returns a dict with defaults filled in.

    Raises:
        ConfigError: an unknown key, a missing required key, or a wrong value.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, where, "a mapping of settings", data)
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(path, key, f"a known setting{hint}; known: " + ", ".join(sorted(fields)))
    out: dict[str, Any] = {}
    for name, field in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data or data[name] is None and field.default is not REQUIRED:
            if field.default is REQUIRED:
                raise ConfigError(path, key, field.expected() + " (missing)")
            out[name] = field.default
            continue
        value = data[name]
        types = field.type if isinstance(field.type, tuple) else (field.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if bool not in types and isinstance(value, bool) or not isinstance(value, types):
            raise ConfigError(path, key, field.expected(), value)
        if field.choices and value not in field.choices:
            raise ConfigError(path, key, field.expected(), value)
        if field.check:
            problem = field.check(value)
            if problem:
                raise ConfigError(path, key, problem, value)
        out[name] = value
    return out


# Reusable checks ---------------------------------------------------------------


def positive(value: Any) -> str | None:
    return None if value > 0 else "a positive number"


def port(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else "a TCP port between 1 and 65535"


_SAFE = re.compile(r"^[A-Za-z0-9._/@:+=,%-]+$")


def safe_word(value: Any) -> str | None:
    """No spaces or shell metacharacters (names, hosts, accounts, partitions)."""
    return None if _SAFE.match(str(value)) else "a single word of letters, digits and . _ / @ : + = , % -"


def dns_name(value: Any) -> str | None:
    ok = re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", str(value))
    return None if ok else "a DNS-1123 name (lower-case letters, digits, '-')"


def duration(value: Any) -> str | None:
    """SLURM durations: ``H:MM:SS``, ``MM:SS``, ``D-HH:MM:SS``, ``D-HH``."""
    from config.durations import parse_slurm_duration

    try:
        parse_slurm_duration(str(value))
    except ValueError:
        return "a SLURM duration: H:MM:SS (e.g. 1:00:00) or D-HH:MM:SS (e.g. 1-12:00:00)"
    return None


def string_list(value: Any) -> str | None:
    return None if all(isinstance(v, str) for v in value) else "a list of strings"
