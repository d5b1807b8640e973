"""tektonc-compatible rendering of Tekton pipeline templates.

A template is Tekton YAML plus Jinja and one extra construct, the *loop node*
(allowed in ``spec.tasks`` and ``spec.finally``, nestable)::

    - loopName: per-stack
      foreach:
        domain:                 # Cartesian product; keys sorted, value order kept
          tp: {{ stack.treatments.tensorParallelism }}
      vars:                     # optional, computed per iteration, in order
        stackId: "{{ tp }}"
      tasks: [ <task or loop node>, ... ]

Rendering has two passes, as tektonc does:

1. the whole template with the values; names the values do not define (loop
   variables) are left as their own ``{{ expression }}`` text, but a missing
   key *inside* a value (``stack.MAX_MODEL_LENX``) is an error at once;
2. every task node, per loop iteration, strictly: anything still undefined is
   an error.

``dns`` (DNS-1123 label, hashed when longer than 63) and ``slug`` filters are
available in both passes; Tekton's own ``$(params.x)`` is plain text to Jinja
and is left alone. Errors are :class:`RenderError` naming the template line
and the missing value.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from config.errors import SweepdeckError

TEMPLATE_NAME = "<template>"


class RenderError(SweepdeckError):
    """A template could not be rendered; the message names the line and the value."""


# ----------------------------------------------------------------------------- filters


def dns(value: Any) -> str:
    """A DNS-1123 label: lower-case alphanumerics and '-', at most 63 characters."""
    text = re.sub(r"[^a-z0-9-]+", "-", str(value).lower()).strip("-")
    if len(text) <= 63:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return (text[: 63 - 9] + "-" + digest).strip("-")


def slug(value: Any) -> str:
    """Letters, digits, '.', '_' and '-' kept; anything else becomes '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(value))


def _finalize(value: Any) -> Any:
    # A mapping or list printed into YAML must stay YAML: JSON is valid flow YAML
    # (Python's repr would turn None into the string "None").
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _environments():
    import jinja2
    from jinja2.utils import missing

    class Passthrough(jinja2.Undefined):
        """Pass 1: an undefined top-level name renders as its own expression."""

        __slots__ = ()

        def _bound(self) -> bool:
            # A missing key of a real value: that is a values error, not a loop variable.
            return self._undefined_obj is not missing

        def _expr(self) -> str:
            return self._undefined_name or "?"

        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            if self._bound():
                self._fail_with_undefined_error()
            return Passthrough(name=f"{self._expr()}.{name}")

        def __getitem__(self, key: Any) -> Any:
            if self._bound():
                self._fail_with_undefined_error()
            return Passthrough(name=f"{self._expr()}[{key!r}]")

        def __str__(self) -> str:
            if self._bound():
                self._fail_with_undefined_error()
            return "{{ " + self._expr() + " }}"

        def __iter__(self):
            if self._bound():
                self._fail_with_undefined_error()
            return iter(())

        def __bool__(self) -> bool:
            if self._bound():
                self._fail_with_undefined_error()
            return False

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return Passthrough(name=f"{self._expr()}(...)")

    def outer_filter(name: str, func):
        def apply(value: Any) -> Any:
            if isinstance(value, Passthrough):
                if value._bound():
                    value._fail_with_undefined_error()
                return "{{ " + value._expr() + " | " + name + " }}"
            return func(value)

        return apply

    common = dict(autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    outer = jinja2.Environment(undefined=Passthrough, finalize=_finalize, **common)
    outer.filters.update({"dns": outer_filter("dns", dns), "slug": outer_filter("slug", slug), "tojson": json.dumps})
    inner = jinja2.Environment(undefined=jinja2.StrictUndefined, finalize=_finalize, **common)
    inner.filters.update({"dns": dns, "slug": slug, "tojson": json.dumps})
    return outer, inner


# ----------------------------------------------------------------------------- values


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base`` (mappings recursively, anything else replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_pipelinerun(values: Mapping[str, Any], pipelinerun: Mapping[str, Any] | None) -> dict[str, Any]:
    """Values with the PipelineRun's ``stack`` and ``workload`` params deep-merged in (tektonc ``-r``)."""
    params = ((pipelinerun or {}).get("spec") or {}).get("params") or []
    override = {p["name"]: p.get("value") for p in params if isinstance(p, dict) and p.get("name") in ("stack", "workload")}
    override = {k: v for k, v in override.items() if isinstance(v, dict)}
    return deep_merge(values, override)


def load_yaml_file(path: str | Path, what: str) -> Any:
    """Parse a YAML file the user named (only read, never written)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RenderError(f"{what} {path} does not exist.") from None
    except OSError as exc:
        raise RenderError(f"Cannot read {what} {path}: {exc.strerror}.") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RenderError(f"{what} {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}.") from None


# ----------------------------------------------------------------------------- errors


def _template_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_NAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _missing_name(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    m = re.search(r"has no attribute '([^']+)'", msg) or re.search(r"'([^']+)' is undefined", msg)
    if not m:
        m = re.search(r"no (?:attribute|element) ([^\s]+)", msg)
    return m.group(1).strip("'\"") if m else msg


def _find_expression(source: str, name: str, line: int | None) -> tuple[int | None, str]:
    """The template line and dotted expression where ``name`` is used."""
    pattern = re.compile(r"[A-Za-z_][\w]*(?:\.[\w]+|\[[^\]]+\])*")
    lines = source.splitlines()
    candidates = [line] if line else [i + 1 for i, text in enumerate(lines) if re.search(r"\b" + re.escape(name) + r"\b", text) and ("{{" in text or "{%" in text)]
    for number in candidates:
        if not number or number > len(lines):
            continue
        text = lines[number - 1]
        for block in re.findall(r"\{\{(.*?)\}\}|\{%(.*?)%\}", text):
            for expr in pattern.findall(" ".join(block)):
                if re.search(r"(^|\.)" + re.escape(name) + r"($|\.|\[)", expr):
                    return number, expr
        return number, name
    return line, name


def _error(source: str, source_name: str, exc: BaseException, line: int | None, where: str = "") -> RenderError:
    name = _missing_name(exc)
    number, expr = _find_expression(source, name, line)
    place = f"{source_name} line {number}" if number else source_name
    text = source.splitlines()[number - 1].strip() if number and number <= len(source.splitlines()) else ""
    detail = f": {text}" if text else ""
    return RenderError(
        f"{place}: missing value {expr!r}{where}{detail}",
        f"Add {expr} to the values file (or check its spelling).",
    )


# ----------------------------------------------------------------------------- rendering


_PROTECT = (("{{", "\u27e6JO\u27e7"), ("}}", "\u27e6JC\u27e7"), ("{%", "\u27e6BO\u27e7"), ("%}", "\u27e6BC\u27e7"), ("{#", "\u27e6CO\u27e7"), ("#}", "\u27e6CC\u27e7"))


def _protect_inline_blocks(source: str) -> str:
    """Hide the Jinja in ``__jinja__: |`` block scalars from pass 1 (tektonc's inline blocks).

    Such a block is rendered per loop iteration in pass 2, where its ``{% set %}``
    and loop variables are defined; it must render to a task or a list of tasks.
    """
    out, inside, key_col = [], False, 0
    for line in source.splitlines(keepends=True):
        body = line.lstrip(" ")
        col = len(line) - len(body)
        if inside:
            if body.strip() and col <= key_col:
                inside = False
            else:
                for raw, mark in _PROTECT:
                    line = line.replace(raw, mark)
                out.append(line)
                continue
        rest, kcol = body, col
        if rest.startswith("- "):
            stripped = rest[2:].lstrip(" ")
            kcol, rest = col + len(rest) - len(stripped), stripped
        m = re.match(r"__jinja__\s*:\s*[|>][+-]?\s*$", rest)
        if m:
            inside, key_col = True, kcol
        out.append(line)
    return "".join(out)


def _unprotect(text: str) -> str:
    for raw, mark in _PROTECT:
        text = text.replace(mark, raw)
    return text


def render_text(source: str, values: Mapping[str, Any], source_name: str = "template") -> dict[str, Any]:
    """Render a pipeline template with ``values`` and expand its loop nodes.

    Returns:
        The expanded Pipeline document.

    Raises:
        RenderError: a missing value (naming the template line), a Jinja
            syntax error, invalid YAML after the first pass, or a bad loop node.
    """
    import jinja2

    outer, inner = _environments()
    try:
        template = outer.from_string(_protect_inline_blocks(source))
        template.filename = TEMPLATE_NAME
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{source_name} line {exc.lineno}: {exc.message}.") from None
    try:
        text = template.render(**values)
    except jinja2.UndefinedError as exc:
        raise _error(source, source_name, exc, _template_line(exc)) from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"{source_name} line {_template_line(exc) or '?'}: {exc}.") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        row = mark.line + 1 if mark else None
        shown = text.splitlines()[row - 1].strip() if row and row <= len(text.splitlines()) else ""
        unresolved = re.search(r"\{\{\s*([A-Za-z_][\w.]*)", shown)
        if unresolved:
            # An undefined name left as '{{ x }}' where YAML cannot hold it: that is a missing value.
            raise _error(source, source_name, NameError(f"'{unresolved.group(1)}' is undefined"), None) from None
        raise RenderError(
            f"{source_name}: the rendered YAML is invalid at rendered line {row}: {getattr(exc, 'problem', exc)} ({shown!r}).",
            "A value containing ':' or '{' may need quotes in the template.",
        ) from None
    if not isinstance(doc, dict):
        raise RenderError(f"{source_name} does not render to a YAML mapping (a Pipeline).")
    out = expand_document(doc, values, inner, source, source_name)
    leftover = _leftover(out)
    if leftover:
        name = leftover.strip("{} ").split("|")[0].strip()
        raise _error(source, source_name, NameError(f"'{name}' is undefined"), None)
    return out


def _leftover(obj: Any) -> str | None:
    """The first ``{{ expression }}`` the passes left unresolved (outside loop nodes)."""
    if isinstance(obj, dict):
        for value in obj.values():
            found = _leftover(value)
            if found:
                return found
    elif isinstance(obj, list):
        for value in obj:
            found = _leftover(value)
            if found:
                return found
    elif isinstance(obj, str):
        m = re.search(r"\{\{.*?\}\}", obj)
        if m:
            return m.group(0)
    return None


def expand_document(doc: dict[str, Any], values: Mapping[str, Any], env, source: str = "", source_name: str = "template") -> dict[str, Any]:
    """Expand loop nodes under ``spec.tasks`` and ``spec.finally`` (returns a new document)."""
    out = copy.deepcopy(doc)
    spec = out.get("spec")
    if not isinstance(spec, dict):
        return out
    ctx = _Context(env, source, source_name)
    for section in ("tasks", "finally"):
        if section in spec:
            spec[section] = ctx.expand(spec.get(section) or [], dict(values), f"spec.{section}")
    return out


class _Context:
    def __init__(self, env, source: str, source_name: str) -> None:
        self.env, self.source, self.source_name = env, source, source_name

    def _render(self, text: str, scope: Mapping[str, Any], where: str) -> str:
        import jinja2

        try:
            return self.env.from_string(text).render(**scope)
        except jinja2.UndefinedError as exc:
            raise _error(self.source, self.source_name, exc, None, f" ({where})") from None
        except jinja2.TemplateError as exc:
            raise RenderError(f"{self.source_name}: {exc} ({where}).") from None

    def expand(self, nodes: Iterable[Any], scope: dict[str, Any], where: str) -> list[Any]:
        flat: list[Any] = []
        if not isinstance(nodes, list):
            raise RenderError(f"{self.source_name}: {where} must be a list of tasks.")
        for node in nodes:
            if isinstance(node, dict) and "loopName" in node:
                flat.extend(self._loop(node, scope, where))
                continue
            if isinstance(node, dict) and isinstance(node.get("__jinja__"), str) and "name" not in node:
                block = self._render(_unprotect(node["__jinja__"]), scope, f"__jinja__ block in {where}")
                try:
                    fragment = yaml.safe_load(block)
                except yaml.YAMLError as exc:
                    raise RenderError(f"{self.source_name}: a __jinja__ block in {where} renders to invalid YAML: {exc}.") from None
                if isinstance(fragment, dict):
                    flat.append(fragment)
                elif isinstance(fragment, list):
                    flat.extend(fragment)
                elif fragment is not None:
                    raise RenderError(f"{self.source_name}: a __jinja__ block in {where} must render to a task or a list of tasks.")
                continue
            text = _unprotect(yaml.safe_dump(node, sort_keys=False, width=float("inf")))
            name = node.get("name", "?") if isinstance(node, dict) else "?"
            rendered = yaml.safe_load(self._render(text, scope, f"task {name} in {where}"))
            if isinstance(rendered, dict):
                rendered.pop("__jinja__", None)  # a preamble ({% set %}) that Tekton must not see
            flat.append(rendered)
        return flat

    def _loop(self, node: dict[str, Any], scope: dict[str, Any], where: str) -> list[Any]:
        name = node.get("loopName")
        here = f"loop {name!r} in {where}"
        domain = (node.get("foreach") or {}).get("domain") if isinstance(node.get("foreach"), dict) else None
        if not isinstance(domain, dict) or not domain:
            raise RenderError(f"{self.source_name}: {here} needs foreach.domain: a mapping of variable -> list of values.")
        tasks = node.get("tasks")
        if not isinstance(tasks, list):
            raise RenderError(
                f"{self.source_name}: {here} has tasks={tasks!r}; a list was expected.",
                "Check the indentation of the loop's child tasks under 'tasks:'.",
            )
        keys = sorted(domain)
        lists = []
        for key in keys:
            vals = domain[key]
            if isinstance(vals, str) and "{{" in vals:
                raise _error(self.source, self.source_name, NameError(f"'{vals.strip('{} ')}' is undefined"), None, f" (foreach.domain.{key} of {here})")
            if not isinstance(vals, list):
                raise RenderError(f"{self.source_name}: foreach.domain.{key} of {here} must be a list, not {vals!r}.")
            lists.append(vals)
        out: list[Any] = []
        for combo in itertools.product(*lists):
            child = dict(scope)
            child.update(zip(keys, combo))
            for var, value in (node.get("vars") or {}).items():
                if isinstance(value, str):
                    child[var] = self._render(value, child, f"vars.{var} of {here}")
                else:
                    child[var] = yaml.safe_load(self._render(yaml.safe_dump(value), child, f"vars.{var} of {here}"))
            out.extend(self.expand(tasks, child, here))
        return out


def render_files(template: str | Path, values_file: str | Path, pipelinerun: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """tektonc's CLI behaviour: returns ``(pipeline, effective values)``."""
    path = Path(template).expanduser()
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RenderError(f"Template {path} does not exist.") from None
    values = load_yaml_file(values_file, "Values file") or {}
    if not isinstance(values, dict):
        raise RenderError(f"Values file {values_file} must be a YAML mapping.")
    if pipelinerun:
        values = merge_pipelinerun(values, load_yaml_file(pipelinerun, "PipelineRun file"))
    return render_text(source, values, path.name), values


def dump(doc: Any) -> str:
    """YAML text as tektonc writes it (key order kept, no line wrapping)."""
    return yaml.safe_dump(doc, sort_keys=False, width=float("inf"))


def task_table(doc: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(section, task name, runAfter)`` rows (tektonc ``--explain``)."""
    rows = []
    spec = doc.get("spec") or {}
    for section in ("tasks", "finally"):
        for task in spec.get(section) or []:
            rows.append((section, task.get("name", "?"), ", ".join(task.get("runAfter") or [])))
    return rows
