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
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import jinja2
import yaml
from jinja2.utils import missing

from config.errors import SweepdeckError

TEMPLATE_NAME = "<template>"


class RenderError(SweepdeckError):
    """A template could not be rendered; the message names the line and the value.

    Exits 1, as tektonc does for every render failure (2 stays for bad options).
    """

    exit_code = 1


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


def enumerate_list(seq: Any) -> list[dict[str, Any]]:
    """tektonc's ``enumerate_list``: each item with its index and neighbours, for chains in loops."""
    if seq is None:
        return []
    try:
        items = list(seq)
    except TypeError:
        return []
    n = len(items)
    return [
        {
            "i": i, "item": v, "prev_i": i - 1 if i > 0 else -1, "next_i": i + 1 if i + 1 < n else None,
            "is_first": i == 0, "is_last": i == n - 1,
            "prev_item": items[i - 1] if i > 0 else None, "next_item": items[i + 1] if i + 1 < n else None,
        }
        for i, v in enumerate(items)
    ]


#: tektonc's own filters and globals (on top of Jinja's built-in filters and tests).
FILTERS: dict[str, Callable[[Any], Any]] = {"dns": dns, "slug": slug, "tojson": json.dumps}
GLOBALS: dict[str, Any] = {"enumerate_list": enumerate_list}


def _finalizer(warn: Callable[[str], None]) -> Callable[[Any], Any]:
    def finalize(value: Any) -> Any:
        # A mapping or list printed into YAML must stay YAML: JSON is valid flow YAML
        # (Python's repr, which tektonc prints, turns None into the string "None").
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        if callable(value) and not isinstance(value, (type, jinja2.Undefined)):
            # {{ x.values }} finds dict.values before a key 'values'; tektonc prints the method too
            shown = re.sub(r" at 0x[0-9a-f]+", "", repr(value))
            warn(f"the template prints a Python method ({shown}), not a value: read a key named like a "
                 "dict method (values, items, keys…) as x['values'], not x.values")
        return value

    return finalize


class Passthrough(jinja2.Undefined):
    """Pass 1: an undefined top-level name renders as its own expression (``{{ tp }}``).

    A missing key of a real value (``stack.MAX_MODEL_LENX``) is *bound*: it is
    false in ``{% if %}`` and empty in ``{% for %}`` (as in tektonc), but
    printing it is a values error at once.
    """

    __slots__ = ()

    def _bound(self) -> bool:
        return self._undefined_obj is not missing

    def _expr(self) -> str:
        return self._undefined_name or "?"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Passthrough(name=f"{self._expr()}.{name}", obj=self._undefined_obj)

    def __getitem__(self, key: Any) -> Any:
        return Passthrough(name=f"{self._expr()}[{key!r}]", obj=self._undefined_obj)

    def __str__(self) -> str:
        if self._bound():
            self._fail_with_undefined_error()
        return "{{ " + self._expr() + " }}"

    def __iter__(self) -> Any:
        return iter(())

    def __bool__(self) -> bool:
        return False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return Passthrough(name=f"{self._expr()}(...)", obj=self._undefined_obj)


def _outer_filter(name: str, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Pass 1's filter: on a name still unknown, keep ``{{ name | filter }}`` for pass 2."""

    def apply(value: Any) -> Any:
        if isinstance(value, Passthrough):
            if value._bound():
                value._fail_with_undefined_error()
            return "{{ " + value._expr() + " | " + name + " }}"
        return func(value)

    return apply


def _environments(warn: Callable[[str], None] | None = None) -> tuple[jinja2.Environment, jinja2.Environment]:
    """tektonc's two Jinja environments: pass 1 keeps unknown names as their own text; pass 2 is strict."""
    finalize = _finalizer(warn or (lambda _message: None))
    common: dict[str, Any] = dict(autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    outer = jinja2.Environment(undefined=Passthrough, finalize=finalize, **common)
    outer.filters.update({name: _outer_filter(name, func) for name, func in FILTERS.items()})
    inner = jinja2.Environment(undefined=jinja2.StrictUndefined, finalize=finalize, **common)
    inner.filters.update(FILTERS)
    for env in (outer, inner):
        env.globals.update(GLOBALS)
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
    override = {p["name"]: p.get("value") for p in params
                if isinstance(p, dict) and p.get("name") in ("stack", "workload")}
    override = {k: v for k, v in override.items() if isinstance(v, dict)}
    return deep_merge(values, override)


STDIN = "-"
# Pass 2 parses every task back from YAML: libyaml's safe loader (same results) when PyYAML has it.
# Dumping stays PyYAML's own, whose output tektonc's is byte for byte.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)  # a safe loader: CSafeLoader or SafeLoader


def read_text(path: str | Path, what: str, stdin: TextIO | None = None) -> str:
    """The text of a file the user named (``-``: standard input, as tektonc reads it); only read.

    Raises:
        RenderError: the file is missing, unreadable or not UTF-8 text (one line, no traceback).
    """
    if str(path) == STDIN:
        stream = stdin if stdin is not None else sys.stdin
        data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        return _decode(data, f"{what} (standard input)")
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise RenderError(f"{what} {file} does not exist.") from None
    except IsADirectoryError:
        raise RenderError(f"{what} {file} is a directory, not a file.") from None
    except OSError as exc:
        raise RenderError(f"Cannot read {what} {file}: {exc.strerror}.") from None
    return _decode(data, f"{what} {file}")


def _decode(data: str | bytes, where: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RenderError(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}).",
            "Save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8).",
        ) from None


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text; a syntax error is one line naming ``where`` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise RenderError(f"{where}{at} is not valid YAML: {getattr(exc, 'problem', None) or exc}.") from None


def load_yaml_file(path: str | Path, what: str, stdin: TextIO | None = None) -> Any:
    """Parse a YAML file the user named (only read, never written); ``-`` reads standard input."""
    where = f"{what} (standard input)" if str(path) == STDIN else f"{what} {Path(path).expanduser()}"
    return parse_yaml(read_text(path, what, stdin), where)


def load_values(path: str | Path, stdin: TextIO | None = None) -> dict[str, Any]:
    """A values file as tektonc takes it: a YAML (or JSON) mapping; an empty file is ``{}``."""
    values = load_yaml_file(path, "Values file", stdin)
    if values is None:
        return {}
    if not isinstance(values, dict):
        shown = "standard input" if str(path) == STDIN else str(path)
        raise RenderError(
            f"Values file {shown} must be a YAML mapping (experiment:, stack:, workload:…), "
            f"not a {type(values).__name__}.",
        )
    return values


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
    word = re.compile(r"\b" + re.escape(name) + r"\b")
    candidates = [line] if line else [
        i + 1 for i, text in enumerate(lines) if word.search(text) and ("{{" in text or "{%" in text)]
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


def _template_error(
    source: str, source_name: str, exc: BaseException, line: int | None, where: str = "",
) -> RenderError:
    """A Jinja error (syntax, unknown filter or test...) as one line naming the template line."""
    message = (getattr(exc, "message", None) or str(exc)).rstrip(".")
    unknown = re.search(r"No (filter|test) named '([^']+)'", message)
    hint = ""
    if unknown:
        kind, name = unknown.groups()
        sep = r"\|" if kind == "filter" else r"\bis\s+(?:not\s+)?"
        use = re.compile(sep + r"\s*" + re.escape(name) + r"\b")
        found = [i + 1 for i, text in enumerate(source.splitlines()) if use.search(text)]
        line = line or (found[0] if found else None)
        if kind == "filter":
            hint = ("tektonc has the filters " + ", ".join(sorted(FILTERS)) + " and Jinja's built-in ones "
                    "(default, length, join, lower…); tektonc fails on this template too.")
    place = f"{source_name} line {line}" if line else source_name
    return RenderError(f"{place}: {message}{where}.", hint)


# ----------------------------------------------------------------------------- rendering


# Stand-ins for Jinja's delimiters inside __jinja__ blocks during pass 1 (characters no template uses;
# tektonc uses [[ ]] and [% %], which turn a bash test such as [[ -f x ]] into Jinja).
_PROTECT = (
    ("{{", "\u27e6JO\u27e7"), ("}}", "\u27e6JC\u27e7"), ("{%", "\u27e6BO\u27e7"),
    ("%}", "\u27e6BC\u27e7"), ("{#", "\u27e6CO\u27e7"), ("#}", "\u27e6CC\u27e7"),
)


def _protect_inline_blocks(
    source: str, source_name: str = "template", warn: Callable[[str], None] | None = None,
) -> str:
    """Hide the Jinja in ``__jinja__: |`` block scalars from pass 1 (tektonc's inline blocks).

    Such a block is rendered per loop iteration in pass 2, where its ``{% set %}``
    and loop variables are defined; it must render to a task or a list of tasks.
    As in tektonc, an empty line ends the protection (YAML's block goes on): the
    Jinja after it is rendered in pass 1, without the loop variables. The output
    is then tektonc's, and ``warn`` says where it happened.
    """
    out: list[str] = []
    inside, key_col, start = False, 0, 0
    lines = source.splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        body = line.lstrip(" \t")
        col = len(line[: len(line) - len(body)].expandtabs(8))
        if inside:
            if body == "" or col > key_col:
                for raw, mark in _PROTECT:
                    line = line.replace(raw, mark)
                out.append(line)
                continue
            inside = False
            if not body.strip() and warn is not None:
                _warn_unprotected(lines, number, start, key_col, source_name, warn)
        rest, kcol = body, col
        if rest.startswith("- "):
            stripped = rest[2:].lstrip(" \t")
            kcol, rest = col + len(rest) - len(stripped), stripped
        if re.match(r"__jinja__\s*:\s*[|>][+-]?\s*(#.*)?$", rest):
            inside, key_col, start = True, kcol, number
        out.append(line)
    return "".join(out)


def _warn_unprotected(lines: list[str], blank: int, start: int, key_col: int, source_name: str,
                      warn: Callable[[str], None]) -> None:
    """Warn when Jinja follows an empty line that ends a ``__jinja__`` block's protection early."""
    for number in range(blank + 1, len(lines) + 1):
        line = lines[number - 1]
        body = line.lstrip(" \t")
        if not body.strip():
            continue
        if len(line[: len(line) - len(body)].expandtabs(8)) <= key_col:
            return  # the YAML block ended too: nothing was exposed
        if "{{" in line or "{%" in line:
            warn(f"{source_name} line {blank}: this empty line ends the protection of the __jinja__ block "
                 f"of line {start} "
                 f"(as in tektonc), so line {number} is rendered in the first pass, without loop variables: "
                 f"{line.strip()!r}. Remove the empty lines inside __jinja__ blocks.")
            return


def _unprotect(text: str) -> str:
    for raw, mark in _PROTECT:
        text = text.replace(mark, raw)
    return text


def render_text(
    source: str, values: Mapping[str, Any], source_name: str = "template", warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Render a pipeline template with ``values`` and expand its loop nodes.

    Args:
        source: The template text.
        values: The values (a mapping; tektonc's ``-f`` file, ``-r`` merged in).
        source_name: The template's name in messages.
        warnings: Where to add what renders as tektonc does but is probably not
            what the author meant (a method printed, a ``__jinja__`` block cut short).

    Returns:
        The expanded Pipeline document.

    Raises:
        RenderError: a missing value (naming the template line), a Jinja
            syntax error, an unknown filter, invalid YAML after the first pass,
            or a bad loop node.
    """
    notes: list[str] = []

    def warn(message: str) -> None:
        if message not in notes:
            notes.append(message)

    outer, inner = _environments(warn)
    try:
        template = outer.from_string(_protect_inline_blocks(source, source_name, warn))
        template.filename = TEMPLATE_NAME
    except jinja2.TemplateSyntaxError as exc:
        raise _template_error(source, source_name, exc, exc.lineno) from None
    try:
        text = template.render(**values)
    except jinja2.UndefinedError as exc:
        raise _error(source, source_name, exc, _template_line(exc)) from None
    except jinja2.TemplateError as exc:
        raise _template_error(source, source_name, exc, _template_line(exc)) from None
    doc = _parse_rendered(text, source, source_name)
    try:
        out = expand_document(doc, values, inner, source, source_name)
    finally:
        if warnings is not None:
            warnings.extend(notes)
    leftover = _leftover(out)
    if leftover:
        name = leftover.strip("{} ").split("|")[0].strip()
        raise _error(source, source_name, NameError(f"'{name}' is undefined"), None)
    return out


def _parse_rendered(text: str, source: str, source_name: str) -> dict[str, Any]:
    """The YAML of pass 1's output (it must be a mapping: a Pipeline)."""
    try:
        doc = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        row = mark.line + 1 if mark else None
        shown = text.splitlines()[row - 1].strip() if row and row <= len(text.splitlines()) else ""
        unresolved = re.search(r"\{\{\s*([A-Za-z_][\w.]*)", shown)
        if unresolved:
            # An undefined name left as '{{ x }}' where YAML cannot hold it: that is a missing value.
            raise _error(source, source_name, NameError(f"'{unresolved.group(1)}' is undefined"), None) from None
        raise RenderError(
            f"{source_name}: the rendered YAML is invalid at rendered line {row}: "
            f"{getattr(exc, 'problem', None) or exc} ({shown!r}).",
            "A value containing ':' or '{' may need quotes in the template.",
        ) from None
    if not isinstance(doc, dict):
        raise RenderError(f"{source_name} does not render to a YAML mapping (a Pipeline).")
    return doc


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


def expand_document(
    doc: dict[str, Any], values: Mapping[str, Any], env: jinja2.Environment, source: str = "",
    source_name: str = "template",
) -> dict[str, Any]:
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
        try:
            return self.env.from_string(text).render(**scope)
        except jinja2.UndefinedError as exc:
            raise _error(self.source, self.source_name, exc, None, f" ({where})") from None
        except jinja2.TemplateError as exc:
            raise _template_error(self.source, self.source_name, exc, None, f" ({where})") from None

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
                    fragment = _load(block)
                except yaml.YAMLError as exc:
                    raise RenderError(
                        f"{self.source_name}: a __jinja__ block in {where} renders to invalid YAML: {exc}.") from None
                if isinstance(fragment, dict):
                    flat.append(fragment)
                elif isinstance(fragment, list):
                    flat.extend(fragment)
                elif fragment is not None:
                    raise RenderError(
                        f"{self.source_name}: a __jinja__ block in {where} must render to a task or a list of tasks.")
                continue
            text = _unprotect(yaml.safe_dump(node, sort_keys=False, width=float("inf")))
            name = node.get("name", "?") if isinstance(node, dict) else "?"
            rendered = _load(self._render(text, scope, f"task {name} in {where}"))
            if isinstance(rendered, dict):
                rendered.pop("__jinja__", None)  # a preamble ({% set %}) that Tekton must not see
            flat.append(rendered)
        return flat

    def _loop(self, node: dict[str, Any], scope: dict[str, Any], where: str) -> list[Any]:
        name = node.get("loopName")
        here = f"loop {name!r} in {where}"
        domain = (node.get("foreach") or {}).get("domain") if isinstance(node.get("foreach"), dict) else None
        if not isinstance(domain, dict) or not domain:
            raise RenderError(
                f"{self.source_name}: {here} needs foreach.domain: a mapping of variable -> list of values.")
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
                missing_name = NameError(f"'{vals.strip('{} ')}' is undefined")
                raise _error(self.source, self.source_name, missing_name, None, f" (foreach.domain.{key} of {here})")
            if not isinstance(vals, list):
                raise RenderError(f"{self.source_name}: foreach.domain.{key} of {here} must be a list, not {vals!r}.")
            lists.append(vals)
        out: list[Any] = []
        for combo in itertools.product(*lists):
            child = dict(scope)
            child.update(zip(keys, combo, strict=True))
            for var, value in (node.get("vars") or {}).items():
                if isinstance(value, str):
                    child[var] = self._render(value, child, f"vars.{var} of {here}")
                else:
                    child[var] = _load(self._render(yaml.safe_dump(value), child, f"vars.{var} of {here}"))
            out.extend(self.expand(tasks, child, here))
        return out


def render_files(
    template: str | Path,
    values_file: str | Path,
    pipelinerun: str | Path | None = None,
    warnings: list[str] | None = None,
    stdin: TextIO | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """tektonc's CLI behaviour: returns ``(pipeline, effective values)``.

    ``-`` for ``template`` or ``values_file`` (not both) reads standard input, as tektonc does.

    Raises:
        RenderError: any input problem or render failure, as one line.
    """
    if str(template) == STDIN and str(values_file) == STDIN:
        raise RenderError("Only one of -t and -f can be '-' (standard input).")
    source = read_text(template, "Template", stdin)
    name = "<stdin>" if str(template) == STDIN else Path(template).name
    values = load_values(values_file, stdin)
    if pipelinerun:
        pr = load_yaml_file(pipelinerun, "PipelineRun file", stdin)
        if pr is not None and not isinstance(pr, dict):
            raise RenderError(f"PipelineRun file {pipelinerun} must be a YAML mapping (a PipelineRun).")
        values = merge_pipelinerun(values, pr)
    try:
        return render_text(source, values, name, warnings), values
    except RenderError as exc:
        if not values and "missing value" in exc.message:
            shown = "standard input" if str(values_file) == STDIN else str(values_file)
            raise RenderError(f"{exc.message} (the values file {shown} is empty)", exc.hint) from None
        raise


def dump(doc: Any) -> str:
    """YAML text as tektonc writes it (key order kept, no line wrapping)."""
    return yaml.safe_dump(doc, sort_keys=False, width=float("inf"))


def task_table(doc: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(section, task name, runAfter)`` rows (tektonc ``--explain``)."""
    rows = []
    spec = doc.get("spec") or {}
    for section in ("tasks", "finally"):
        for task in spec.get(section) or []:
            after = task.get("runAfter", [])
            shown = ", ".join(after) if isinstance(after, list) else str(after)
            rows.append((section, task.get("name", "<unnamed>"), shown))
    return rows


def explain(doc: Mapping[str, Any]) -> str:
    """tektonc's ``--explain`` table (name and runAfter per task, then per finally task), as it prints it."""
    spec = doc.get("spec") or {}
    rows = task_table(doc)
    out: list[str] = []
    for section in ("tasks", "finally"):
        if section == "finally" and "finally" not in spec:
            continue
        out += [f"# spec.{section}", f"{'TASK NAME':<60}  RUNAFTER", "-" * 90]
        out += [f"{name:<60}  {after}" for sec, name, after in rows if sec == section]
        out.append("")
    return "\n".join(out) + "\n"
