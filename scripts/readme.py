#!/usr/bin/env python3
"""Regenerate README.md's keys table, profile tables and screens gallery from the real app.

The keys come from the same places the help dialog (``?``) reads: the
binding table in :mod:`tui.bindings` and the ``BINDINGS`` that screens and
widgets declare themselves (run monitor, log pane, recovery and other dialogs).
The profile tables come from the profile definitions (``config/profiles/*.py``),
so a key added there cannot be missing from the README. The screens are the
SVGs in ``screenshots/`` (made by ``scripts/screenshots.py``), each with its
caption from :data:`CAPTIONS`.

Usage::

    .venv/bin/python scripts/readme.py            # rewrite README.md in place
    .venv/bin/python scripts/readme.py --check    # exit 1 if README.md is out of date

``make screenshots`` runs both scripts. ``tests/tui/test_readme.py`` runs the
check, so a binding added without regenerating the README fails the tests.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
SHOTS = ROOT / "screenshots"

#: Screens and dialogs that declare their own bindings, in the order the README lists them.
OWN_BINDINGS = (
    ("tui.screens.monitor", "RunMonitorScreen", "Run monitor"),
    ("tui.widgets.logview", "LogView", "Run monitor: log pane"),
    ("tui.screens.recovery", "RecoveryDialog", "Recovery dialog"),
    ("tui.screens.dialogs", "QuitDialog", "Quit dialog"),
    ("tui.screens.dialogs", "ConfirmDialog", "Confirmation dialogs"),
    ("tui.screens.dialogs", "DisambiguationDialog", "Which-model dialog"),
    ("tui.screens.dialogs", "SpellingDialog", "Which-word dialog (an unknown word of a quick command)"),
    ("tui.screens.dialogs", "QuickCommandDialog", "Quick command (:)"),
    ("tui.screens.dialogs", "TextInputDialog", "Text input dialogs"),
    ("tui.screens.dialogs", "ChoiceDialog", "Choice dialogs"),
    ("tui.screens.dialogs", "HelpDialog", "Help (?)"),
    ("tui.screens.wizard.steps", "EditInput", "vLLM review: value editor"),
)

#: Screenshot stem → caption; a stem not listed gets its name as caption (and a
#: warning), so a new screenshot never goes missing from the README.
CAPTIONS = {
    "runs-empty": "Runs (home), first start: nothing saved yet",
    "runs": "Runs (home): active and past runs with state words and icons",
    "wizard-1-model": "Wizard 1/5, model: catalog with fuzzy filter, size, recommended TP, context",
    "wizard-1-model-large": "A model over 50 GB: the download-time warning",
    "dialog-disambiguation": "An ambiguous alias (llama-70b): the user chooses, never a guess",
    "wizard-2-workload": "Wizard 2/5, workload: the eight presets",
    "wizard-2-workload-custom-error": "Custom workload form with inline validation",
    "wizard-3-review": "Wizard 3/5, vLLM review: every argument with its source; changes highlighted",
    "wizard-quick-command-review": "The review filled in from a quick command",
    "dialog-quick-command": "Quick command (:) in the one-line grammar",
    "dialog-spelling": "A misspelt word is never guessed: the app asks which word was meant",
    "wizard-4-summary": "Wizard 4/5, summary with the changes from the base values",
    "dialog-experiment-id": "Changing the experiment id (DNS-safe: lower-case letters, digits and -)",
    "dialog-backend-choice": "Choosing the backend / profile for the experiment",
    "wizard-5-preflight": "Wizard 5/5, pre-flight: pass / warn / fail with detail and fix",
    "wizard-5-preflight-remedy": "Pre-flight on Tekton: a missing namespace the app offers to create (f)",
    "dialog-remedy": "A pre-flight remedy says exactly what it will change and asks first",
    "matrix": "Tekton matrix sweep: unroll a parameter, at most N at once, barrier or sliding window",
    "monitor-matrix": "A matrix PipelineRun in the run monitor: TaskRuns and done/total",
    "monitor": "Run monitor: status, logs, metrics with throughput sparkline, endpoint",
    "monitor-finished": "Run monitor after the workload finished, with the results summary",
    "monitor-failed": "Run monitor of a failed run (CUDA OOM diagnosed)",
    "dialog-recovery": "Recovery dialog: the diagnosis, current settings and suggested fixes",
    "runs-family": "A fix run listed under the run it fixes (↳), the family in the detail line",
    "dialog-recovery-relaunched":
        "The failed run's recovery dialog lists what was relaunched from it (the same fix asks first)",
    "dialog-quit": "Quit with live runs: clean up, detach or cancel",
    "dialog-cleanup": "Cleaning up: what is being stopped, bounded in time",
    "dialog-confirm-delete": "Deleting a finished run's record asks first",
    "dialog-help": "Help (?): every binding with the id to remap it by",
    "command-palette": "Command palette (ctrl+p): every action by name",
    "sweep": "Argo sweep view: progress, rate, ETA, failure groups, stale configs, breakdowns",
    "sweep-failure-group": "A failure group drilled into: its configs",
    "dialog-reset-stale": "Reset stale configs asks first",
    "results": "Results of a run (enter on a finished run): one row per load point, failures, config with sources",
    "results-plot": "Results plots in the terminal: throughput vs latency, TTFT/ITL percentiles, tok/s over time",
    "results-list": "Every run's results (R, or the palette): best tok/s, TTFT, failures; space marks for compare",
    "results-compare": "Compare of three runs: deltas against the first, ▲ better / ▼ worse per metric",
    "results-compare-curves": "Compare: the curves of every run overlaid",
}

KEYS_BEGIN, KEYS_END = "<!-- keys:begin (scripts/readme.py) -->", "<!-- keys:end -->"
PROFILES_BEGIN, PROFILES_END = "<!-- profiles:begin (scripts/readme.py) -->", "<!-- profiles:end -->"
SHOTS_BEGIN, SHOTS_END = "<!-- screens:begin (scripts/readme.py) -->", "<!-- screens:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def key_rows() -> list[tuple[str, str, str, str]]:
    """(where, key, id, what) for every binding a user can press or remap."""
    from tui import bindings as keys

    rows = [(keys.SCOPE_TITLES.get(k.scope, k.scope), keys.display_key(k.key), k.id, k.help or k.description)
            for k in keys.KEYS]
    rows.append(("Everywhere", "ctrl+p", "palette", "Command palette: every action by name"))
    known = {k.id for k in keys.KEYS}
    for module, cls_name, title in OWN_BINDINGS:
        cls = getattr(importlib.import_module(module), cls_name, None)
        if cls is None:
            raise SystemExit(f"scripts/readme.py: {module}.{cls_name} is gone; update OWN_BINDINGS")
        seen = set()
        for binding in cls.__dict__.get("BINDINGS", []) or []:
            bid = getattr(binding, "id", None)
            if not bid or bid in known or bid in seen or not binding.description:
                continue
            seen.add(bid)
            rows.append((title, keys.display_key(binding.key), bid, binding.tooltip or binding.description))
    return rows


def keys_section() -> str:
    lines = [
        "Every binding has an id; remap it in the config (`keys: {new_experiment: ctrl+n}`).",
        "`?` in the app shows the same table with your remapping applied.",
        "",
        "| where | key | id | what it does |",
        "|---|---|---|---|",
    ]
    last = None
    for where, key, bid, what in key_rows():
        lines.append(f"| {'' if where == last else _cell(where)} | `{_cell(key)}` | `{bid}` | {_cell(what)} |")
        last = where
    return "\n".join(lines)


def _type_words(field) -> str:
    types = field.type if isinstance(field.type, tuple) else (field.type,)
    names = {str: "text", int: "integer", float: "number", bool: "true/false", list: "list", dict: "mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _default_words(field) -> str:
    from config.schema import REQUIRED

    if field.default is REQUIRED:
        return "**required**"
    if field.default is None or field.default in ([], {}, ""):
        return "—"
    if isinstance(field.default, bool):
        return "true" if field.default else "false"
    if isinstance(field.default, list):
        return "`[" + ", ".join(map(str, field.default)) + "]`"
    return f"`{field.default}`"


def profiles_section() -> str:
    """One table per backend, from the profile definitions in ``config/profiles/*.py`` (every key)."""
    from config.profiles import BACKENDS, fields_for

    lines = ["Every key a profile may have, from the profile definitions (`config/profiles/*.py`);",
             "the same keys for the top-level `local:` section. Anything else is refused, naming the key.", ""]
    for backend in BACKENDS:
        lines += [f"**{backend}**", "", "| key | type | default | what it is |", "|---|---|---|---|"]
        for name, field in fields_for(backend).items():
            what = field.help or ("the backend this profile is for" if name == "backend" else
                                  "shown next to the profile name in the app" if name == "description" else "")
            if field.choices and name != "backend":
                what = (what + "; " if what else "") + "one of " + ", ".join(f"`{c}`" for c in field.choices)
            lines.append(f"| `{name}` | {_type_words(field)} | {_cell(_default_words(field))} | {_cell(what)} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def screens_section() -> str:
    stems = sorted(p.stem for p in SHOTS.glob("*.svg"))
    order = [s for s in CAPTIONS if s in stems] + [s for s in stems if s not in CAPTIONS]
    lines = ["Made by `make screenshots` from the real app on the built-in simulator (and the Argo sweep on",
             "the tests' fake Kubernetes API with real queue workers). Every screen also has an SVG",
             "snapshot test at 80×24 and 160×48 under `tests/snapshots/`.", ""]
    for stem in order:
        caption = CAPTIONS.get(stem)
        if caption is None:
            print(f"scripts/readme.py: no caption for screenshots/{stem}.svg (add one to CAPTIONS)", file=sys.stderr)
            caption = stem
        lines.append(f"**{caption}**\n\n![{caption}](screenshots/{stem}.svg)\n")
    return "\n".join(lines).rstrip()


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    try:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
    except ValueError:
        raise SystemExit(f"scripts/readme.py: README.md lacks the markers {begin} … {end}") from None
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render(text: str) -> str:
    text = replace_between(text, KEYS_BEGIN, KEYS_END, keys_section())
    text = replace_between(text, PROFILES_BEGIN, PROFILES_END, profiles_section())
    return replace_between(text, SHOTS_BEGIN, SHOTS_END, screens_section())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if README.md is out of date")
    args = parser.parse_args(argv)
    current = README.read_text()
    new = render(current)
    if args.check:
        if new != current:
            print("README.md is out of date: run .venv/bin/python scripts/readme.py", file=sys.stderr)
            return 1
        return 0
    if new != current:
        README.write_text(new)
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
