"""Label and field selectors, as the Kubernetes API server understands them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (``env in (a,b),tier``)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$")


class SelectorError(ValueError):
    """A selector the server cannot parse (the API answers 400)."""


def label_selector(text: str | None) -> Predicate:
    """Compile ``a=b,c!=d,e,!f,g in (x,y),h notin (z)`` into a predicate on an object."""
    if not text:
        return lambda obj: True
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_top(text):
        m = _SET.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, _, value = term.partition("!=")
            key, value = key.strip(), value.strip()
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "==" in term or "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            key, value = key.strip(), value.strip()
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            key = term[1:].strip()
            tests.append(lambda labels, k=key: k not in labels)
        elif re.fullmatch(r"[A-Za-z0-9_./-]+", term):
            tests.append(lambda labels, k=term: k in labels)
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(t(labels) for t in tests)

    return match


def lookup(obj: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (``status.phase``) or None."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def field_selector(text: str | None) -> Predicate:
    """Compile ``metadata.name=x,status.phase!=Running`` into a predicate."""
    if not text:
        return lambda obj: True
    tests: list[Predicate] = []
    for term in _split_top(text):
        if "!=" in term:
            path, _, value = term.partition("!=")
            path, value = path.strip(), value.strip()
            tests.append(lambda o, p=path, v=value: str(lookup(o, p) or "") != v)
        elif "=" in term:
            path, _, value = term.partition("==") if "==" in term else term.partition("=")
            path, value = path.strip(), value.strip()
            tests.append(lambda o, p=path, v=value: str(lookup(o, p) or "") == v)
        else:
            raise SelectorError(f"invalid field selector: {term!r}")
    return lambda obj: all(t(obj) for t in tests)
