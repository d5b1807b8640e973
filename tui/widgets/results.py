"""Widgets of the results screens: tables of load points, failures, settings and a comparison; plots.

Plots are plotext charts in a Textual widget (textual-plotext); the data is
:mod:`backends.results.series`, the same as ``sweepdeck results plot`` draws.
In the comparison every delta carries ``▲``/``▼``/``=`` and the words
better/worse are in the legend, so colour only helps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual_plotext import PlotextPlot

from backends.results.compare import Comparison
from backends.results.export import pct
from backends.results.model import Result, fmt
from backends.results.series import AXES, PLOT_TITLES, PLOTS, series
from tui.screens import themed
from tui.widgets.virtual_table import VirtualTable, column_widths

# Column → (header, getter, unit). The first columns matter most on a narrow terminal.
_POINT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("OK", "requests_ok", ""),
    ("Failed", "requests_failed", ""),
    ("TTFT p50", "ttft_ms.p50", "ms"),
    ("TTFT p99", "ttft_ms.p99", "ms"),
    ("ITL p50", "itl_ms.p50", "ms"),
    ("E2E p50", "e2e_ms.p50", "ms"),
    ("tok/s", "output_tok_s", "tok/s"),
    ("req/s", "req_s", "req/s"),
    ("TTFT mean", "ttft_ms.mean", "ms"),
    ("TTFT p90", "ttft_ms.p90", "ms"),
    ("ITL mean", "itl_ms.mean", "ms"),
    ("ITL p90", "itl_ms.p90", "ms"),
    ("ITL p99", "itl_ms.p99", "ms"),
    ("TPOT mean", "tpot_ms.mean", "ms"),
    ("TPOT p50", "tpot_ms.p50", "ms"),
    ("TPOT p90", "tpot_ms.p90", "ms"),
    ("TPOT p99", "tpot_ms.p99", "ms"),
    ("E2E mean", "e2e_ms.mean", "ms"),
    ("E2E p90", "e2e_ms.p90", "ms"),
    ("E2E p99", "e2e_ms.p99", "ms"),
)

VERDICT_STYLE = {"better": "bold $success", "worse": "bold $error", "same": "$text-muted"}
VERDICT_MARK = {"better": "▲", "worse": "▼", "same": "="}


def _right(text: str) -> Text:
    return Text(text, justify="right")


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    return "—" if value is None else str(value)


class LoadPointTable(DataTable):
    """One row per load point (a bold row before each group: a BLIS TP, a queue workload/sequence length)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)

    def show(self, result: Result) -> None:
        self.clear(columns=True)
        self.add_column("Load point", key="label")
        self.add_column("Load", key="load")
        for header, key, _ in _POINT_COLUMNS:
            self.add_column(header, key=key)
        group = None
        for i, p in enumerate(result.load_points):
            if p.group and p.group != group:
                group = p.group
                self.add_row(Text(group, style="bold"), *[""] * (len(_POINT_COLUMNS) + 1), key=f"group-{i}")
            cells = [_right(fmt(p.metric(key), unit)) for _, key, unit in _POINT_COLUMNS]
            self.add_row(p.label, p.load, *cells, key=f"point-{i}")


class FailureTable(DataTable):
    """Reason → count, with one full message."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)

    def show(self, result: Result) -> None:
        self.clear(columns=True)
        self.add_columns("Reason", "Count", "Sample message")
        for f in result.failures:
            self.add_row(f.reason, _right(f"{f.count:,}"), f.sample)


class ConfigTable(DataTable):
    """Every setting with where its value came from."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)

    def show(self, result: Result) -> None:
        self.clear(columns=True)
        self.add_columns("Setting", "Value", "Source")
        for key, s in (result.spec or {}).items():
            self.add_row(key, _value(s.value), s.source or "—")


class ResultPlot(PlotextPlot):
    """One of the three plots for one result, or for several overlaid."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.kind = PLOTS[0]
        self.results: list[Result] = []

    def show(self, results: Sequence[Result], kind: str | None = None) -> bool:
        """Draw ``kind`` (default: the current one); False when there is nothing to draw."""
        self.results = list(results)
        self.kind = kind or self.kind
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        lines = series(self.kind, self.results)
        index = PLOTS.index(self.kind) + 1
        plt.title(f"{PLOT_TITLES[self.kind]}  ({index}/{len(PLOTS)}, g: next)")
        plt.xlabel(AXES[self.kind][0])
        plt.ylabel(AXES[self.kind][1])
        for line in lines:
            marker = "braille" if self.kind == "timeline" else "dot"
            plt.plot(line.x, line.y, label=line.name, marker=marker)
        self.refresh()
        return bool(lines)

    def next_kind(self) -> str:
        self.kind = PLOTS[(PLOTS.index(self.kind) + 1) % len(PLOTS)]
        self.show(self.results)
        return self.kind


class CompareTable(VirtualTable):
    """The comparison: load point, metric, the baseline's value, then each run's value and delta.

    A :class:`VirtualTable`: 8 runs × 10 load points are 110 rows of 10
    cells, and a ``DataTable`` measures and renders every one of them before
    the first frame; here the widths come from the cells' text and only the
    rows on screen are drawn.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(zebra_stripes=True, **kw)

    def show(self, cmp: Comparison) -> None:
        labels = ["Load point", "Metric"] + [name if i == 0 else f"{name} (Δ)" for i, name in enumerate(cmp.names)]
        keys = ["point", "metric"] + [f"run-{i}" for i in range(len(cmp.names))]
        rows: list[list[Any]] = []
        last = None
        for r in cmp.rows:
            cells: list[Any] = [r.point if r.point != last else "", r.metric.label,
                                _right(fmt(r.values[0], r.metric.unit))]
            last = r.point
            for i in range(1, len(r.values)):
                cells.append(self._cell(r.values[i], r.deltas[i], r.verdicts[i], r.metric.unit))
            rows.append(cells)
        self.set_columns(list(zip(labels, keys, column_widths(labels, rows), strict=True)))
        self.set_rows([f"row-{n}" for n in range(len(rows))], rows.__getitem__)

    def _cell(self, value: float | None, delta: float | None, verdict: str | None, unit: str) -> Text:
        text = fmt(value, unit)
        if delta is None:
            return _right(text)
        cell = themed(self.app, f"{text} {pct(delta)} {VERDICT_MARK.get(verdict or '', '')}",
                      VERDICT_STYLE.get(verdict or "", ""))
        cell.justify = "right"
        return cell


class ConfigDiffTable(DataTable):
    """Only the settings whose values differ between the runs."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)

    def show(self, cmp: Comparison) -> None:
        self.clear(columns=True)
        self.add_column("Setting", key="setting")
        for i, name in enumerate(cmp.names):
            self.add_column(name, key=f"run-{i}")
        for key, values in cmp.config_diff:
            self.add_row(key, *(_value(v) for v in values))
