"""Reading report files: one clear line for every way a file can be unusable.

Reports are decoded with msgspec: it skips the fields a schema does not name
without building Python objects for them, so a 100 MB guidellm report (most of
it prompt and output text of per-request rows) is read in a fraction of the
time and memory ``json.load`` needs (see tests/benchmarks/bench_results.py).

A report copied out of a pod with ``kubectl run --rm … cat`` ends with
kubectl's ``pod "…" deleted`` line; that line is dropped before decoding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from config.errors import SweepdeckError

# kubectl run --rm prints this after the pod's output.
_KUBECTL_TAIL = re.compile(rb'\r?\n?[ \t]*pod "[^"\r\n]*" deleted[ \t]*(\r?\n)?\s*\Z')
_TAIL_BYTES = 4096


class ReportError(SweepdeckError):
    """A report file cannot be used; the message names the file and what was expected."""

    def __init__(self, path: Path | str, problem: str, expected: str,
                 hint: str = "Check that the file was copied whole (or re-run the benchmark).") -> None:
        super().__init__(f"{path}: {problem}; expected {expected}.", hint)
        self.path = str(path)


def read_bytes(path: Path, expected: str) -> memoryview:
    """The file's bytes without a trailing kubectl ``pod "…" deleted`` line.

    Raises:
        ReportError: unreadable or empty (only whitespace).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReportError(path, f"cannot be read ({exc.strerror or exc})", expected) from None
    view = memoryview(data)
    start = max(0, len(data) - _TAIL_BYTES)
    m = _KUBECTL_TAIL.search(data, start) if data.find(b"deleted", start) >= 0 else None
    if m is not None:
        view = view[: m.start()]
    if not bytes(view[:64]).strip() and not bytes(view).strip():
        raise ReportError(path, "is empty", expected)
    return view


def decode(path: Path, data: memoryview | bytes, expected: str, type: Any = Any) -> Any:
    """Decode JSON ``data`` (read from ``path``) as ``type``.

    Raises:
        ReportError: truncated, not JSON, or not of the expected shape.
    """
    try:
        return msgspec.json.decode(data, type=type)
    except msgspec.ValidationError as exc:
        raise ReportError(path, f"has an unexpected value ({exc})", expected) from None
    except msgspec.DecodeError as exc:
        text = str(exc)
        if "truncated" in text:
            raise ReportError(path, "is truncated (the JSON ends in the middle)", expected) from None
        raise ReportError(path, f"is not valid JSON ({text})", expected) from None


def load_json(path: Path, expected: str, type: Any = Any) -> Any:
    """:func:`read_bytes` then :func:`decode`."""
    return decode(path, read_bytes(path, expected), expected, type)


def load_yaml(path: Path, expected: str) -> Any:
    """A small YAML file (inference-perf's config.yaml), or a ReportError."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})", expected) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ReportError(path, f"is not valid YAML{where}", expected) from None
