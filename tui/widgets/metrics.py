"""The progress/metrics pane: live TTFT / ITL / throughput, a throughput sparkline, a progress bar."""

from __future__ import annotations

from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar, Sparkline, Static

from backends.events import Metrics, Progress

SPARK_POINTS = 60


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms"


def metrics_lines(m: Metrics | None) -> list[str]:
    """The numbers as text lines (also used headless)."""
    if m is None:
        return ["No measurements yet (the workload has not started)."]
    lines = [
        f"TTFT {_ms(m.ttft_ms_mean):>8} avg · {_ms(m.ttft_ms_p90):>8} p90",
        f"ITL  {_ms(m.itl_ms_mean):>8} avg · {_ms(m.itl_ms_p90):>8} p90",
    ]
    if m.tpot_ms_mean is not None:  # next to ITL: per output token after the first, as the server sees it
        lines.append(f"TPOT {_ms(m.tpot_ms_mean):>8} avg · {_ms(m.tpot_ms_p90):>8} p90")
    lines += [
        f"E2E  {_ms(m.latency_ms_mean):>8} avg · {_ms(m.latency_ms_p90):>8} p90",
        f"{m.output_tokens_per_s:,.0f} tok/s · {m.requests_per_s:,.2f} req/s · {m.in_flight:,} in flight",
    ]
    if m.client_limited:
        # the load generator, not the server, set these numbers: say so where they are shown
        lines.append(f"⚠ client-limited: {m.client_limited}")
    return lines


class MetricsPanel(Vertical):
    """Numbers, sparkline and progress of the workload."""

    DEFAULT_CSS = """
    MetricsPanel { height: auto; }
    MetricsPanel #metrics-numbers { height: auto; }
    MetricsPanel #metrics-spark-label { color: $text-muted; height: 1; }
    MetricsPanel Sparkline { height: 1; }
    MetricsPanel #metrics-progress-label { height: 1; }
    MetricsPanel ProgressBar { height: 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.metrics: Metrics | None = None
        self.progress: Progress | None = None
        self.history: deque[float] = deque(maxlen=SPARK_POINTS)
        self.total: int | None = None
        self.compact = False  # a short terminal: the sparkline without its label line

    def set_compact(self, compact: bool) -> None:
        """Leave out the sparkline's label line (an 80×24 terminal: the numbers and progress come first)."""
        self.compact = compact
        if self.is_mounted:
            self._order()

    def compose(self) -> ComposeResult:
        yield Static(metrics_lines(None)[0], id="metrics-numbers")
        yield Label("Throughput (tok/s): no samples", id="metrics-spark-label")
        yield Sparkline([], id="metrics-spark")
        yield Label("Progress: —", id="metrics-progress-label")
        yield ProgressBar(total=None, show_eta=False, id="metrics-progress")

    def set_total(self, total: int | None) -> None:
        """Requests expected (from the spec) until Progress events say otherwise."""
        if total and self.progress is None:
            self.total = total
            self._show_progress(self.metrics.completed + self.metrics.failed if self.metrics else 0, total)

    def _order(self) -> None:
        """Progress first while a run has Progress but no load-generator Metrics (a matrix
        sweep, a task pipeline): a short pane (80×24) then still shows ``n/total done``."""
        numbers = self.query_one("#metrics-numbers", Static)
        label = self.query_one("#metrics-progress-label", Label)
        bar = self.query_one("#metrics-progress", ProgressBar)
        first = self.progress is not None and self.metrics is None
        if first and self.children[0] is not label:
            self.move_child(label, before=numbers)
            self.move_child(bar, after=label)
        elif not first and self.children[0] is label:
            self.move_child(label, after=self.query_one("#metrics-spark", Sparkline))
            self.move_child(bar, after=label)
        # nothing measured yet and progress to show: the empty measurement lines would only
        # say "no measurements" under it; they come back with the first Metrics
        for widget in (numbers, self.query_one("#metrics-spark-label", Label),
                       self.query_one("#metrics-spark", Sparkline)):
            widget.display = not first
        if self.compact:
            self.query_one("#metrics-spark-label", Label).display = False

    def reset(self) -> None:
        self.metrics = None
        self.progress = None
        self.history.clear()
        self.query_one("#metrics-numbers", Static).update(metrics_lines(None)[0])
        self.query_one("#metrics-spark", Sparkline).data = []
        self.query_one("#metrics-spark-label", Label).update("Throughput (tok/s): no samples")
        self.query_one("#metrics-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#metrics-progress-label", Label).update("Progress: —")
        self._order()

    def update_metrics(self, samples: list[Metrics], history: list[float] | None = None) -> None:
        """Apply a batch of Metrics events (the last one is current).

        Args:
            samples: The batch's Metrics events.
            history: Throughput samples so far (a replay), instead of ``samples``'.
        """
        if not samples:
            return
        if history is not None:
            self.history.clear()
            self.history.extend(history)
        else:
            for m in samples:
                self.history.append(float(m.output_tokens_per_s or 0.0))
        m = samples[-1]
        self.metrics = m
        self.query_one("#metrics-numbers", Static).update("\n".join(metrics_lines(m)))
        data = list(self.history)
        self.query_one("#metrics-spark", Sparkline).data = data
        self.query_one("#metrics-spark-label", Label).update(
            f"tok/s over time (max {max(data):,.0f}, {len(data)} samples)"
        )
        if self.progress is None and self.total:
            self._show_progress(m.completed + m.failed, self.total, m.failed)
        self._order()

    def update_progress(self, progress: Progress) -> None:
        self.progress = progress
        self._order()
        self._show_progress(progress.done, progress.total, progress.failed, progress.running, progress.pending)

    def _show_progress(self, done: int, total: int, failed: int = 0, running: int | None = None,
                       pending: int | None = None) -> None:
        bar = self.query_one("#metrics-progress", ProgressBar)
        bar.update(total=max(1, total), progress=min(done, total))
        parts = [f"Progress: {done:,}/{total:,} done"]
        if failed:
            parts.append(f"{failed:,} failed")
        if running is not None:
            parts.append(f"{running:,} running")
        if pending is not None:
            parts.append(f"{pending:,} pending")
        self.query_one("#metrics-progress-label", Label).update(" · ".join(parts))
