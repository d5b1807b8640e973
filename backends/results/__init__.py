"""Results: one model for what every experiment measured, from every source.

Sources (each a module here): sweepdeck's load generator (:mod:`.loadgen`),
guidellm reports 0.3/0.4+/0.8 (:mod:`.guidellm`), inference-perf lifecycle
reports (:mod:`.inference_perf`), BLIS result directories (:mod:`.blis`) and
the Argo work queue (:mod:`.queue`). :mod:`.library` finds and imports them,
:mod:`.compare` compares 2–8 of them, :mod:`.export` writes CSV/JSON/Markdown,
:mod:`.series` and :mod:`.plot` draw them. No Textual here: the TUI's
results screens (``tui/screens/results.py``) and the headless
``sweepdeck results`` command read the same objects.
"""

from backends.results.jsonio import ReportError
from backends.results.library import import_result, load_path, load_run, resolve
from backends.results.model import METRICS, Dist, Failure, LoadPoint, Origin, Result, Setting

__all__ = [
    "METRICS",
    "Dist",
    "Failure",
    "LoadPoint",
    "Origin",
    "ReportError",
    "Result",
    "Setting",
    "import_result",
    "load_path",
    "load_run",
    "resolve",
]
