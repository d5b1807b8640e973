"""The run monitor: status, logs, progress/metrics and endpoint panes of one run.

The screen subscribes to its :class:`~tui.controller.RunController`; the
controller hands over collapsed batches at most every 50 ms, each becomes one
:class:`RunMonitorScreen.RunEvents` message, and its handler touches each
widget once (log lines go into the log view in one call per batch).

Panes can be hidden (``1``–``4``), maximised (``z``) and resized (``+``/``-``
change the height of the top row, ``<``/``>`` the split between status and the
right column). An Alert that carries a diagnosis with fixes opens the
recovery dialog; choosing a fix relaunches and the monitor switches to the new
run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Static

from backends.events import Alert, Fix, Notice
from config.errors import SweepdeckError
from tui.controller import EventBatch, RunController
from tui.widgets.endpoint import EndpointPanel
from tui.widgets.footer import KeyFooter
from tui.widgets.logview import LogView
from tui.widgets.metrics import MetricsPanel
from tui.widgets.status import ICONS, StatusView, format_duration, state_category

if TYPE_CHECKING:
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

#: Below this many rows the monitor is laid out for a small terminal (see RunMonitorScreen._fit).
SHORT = 30
#: Below this many columns the header takes two lines when it must.
NARROW = 100

RUN_STATE_ICONS = {
    "created": "◌", "launching": "◐", "running": "▶", "cancelling": "◐", "succeeded": "✔",
    "failed": "✘", "cancelled": "⊘", "detached": "⇥",
}


class Pane(Vertical):
    """A titled, maximisable pane."""

    ALLOW_MAXIMIZE = True

    def __init__(self, title: str, *children, id: str) -> None:
        super().__init__(*children, id=id, classes="pane")
        self.border_title = title
        self.pane_title = title


class RunMonitorScreen(Screen):
    """Watch one run.

    Args:
        controller: The run's controller (launched, attached or a replay).
    """

    CSS_PATH = "../styles/monitor.tcss"
    FOOTER = ("monitor",)

    BINDINGS = [
        Binding("escape", "back", "Back", id="monitor_back"),
        Binding("slash", "search", "Search", id="monitor_search"),
        Binding("n", "next_match", "Next", id="monitor_next_match"),
        Binding("N", "previous_match", "Prev", show=False, id="monitor_previous_match"),
        Binding("f", "filter(False)", "Filter", id="monitor_filter"),
        Binding("F", "filter(True)", "Filter NOT", show=False, id="monitor_inverse_filter"),
        Binding("w", "wrap", "Wrap", id="monitor_wrap"),
        Binding("p", "pause", "Pause", id="monitor_pause"),
        Binding("end", "follow", "Follow", show=False, id="monitor_follow"),
        Binding("s", "save_log", "Save log", id="monitor_save_log"),
        Binding("r", "recovery", "Recover", id="monitor_recovery"),
        Binding("x", "cancel_run", "Stop run", id="monitor_cancel_run"),
        Binding("X", "stop_now", "Stop now", show=False, id="monitor_stop_now",
                tooltip="Stop at once, skipping the run's own clean-up steps (asks first)"),
        Binding("z", "maximize_pane", "Max", id="monitor_maximize"),
        Binding("1", "toggle_pane('status')", "Status", show=False, id="monitor_toggle_status"),
        Binding("2", "toggle_pane('logs')", "Logs", show=False, id="monitor_toggle_logs"),
        Binding("3", "toggle_pane('metrics')", "Metrics", show=False, id="monitor_toggle_metrics"),
        Binding("4", "toggle_pane('endpoint')", "Endpoint", show=False, id="monitor_toggle_endpoint"),
        Binding("plus,equals_sign", "resize_top(10)", "Taller top", show=False, id="monitor_grow_top"),
        Binding("minus", "resize_top(-10)", "Shorter top", show=False, id="monitor_shrink_top"),
        Binding("greater_than_sign", "resize_split(10)", "Wider status", show=False, id="monitor_grow_status"),
        Binding("less_than_sign", "resize_split(-10)", "Narrower status", show=False, id="monitor_shrink_status"),
    ]

    class RunEvents(Message):
        """A batch of the run's events (already collapsed)."""

        def __init__(self, batch: EventBatch, controller: RunController) -> None:
            super().__init__()
            self.batch = batch
            self.controller = controller

    def __init__(self, controller: RunController, *, auto_recovery: bool = True) -> None:
        super().__init__()
        self.controller = controller
        self.auto_recovery = auto_recovery
        self.alerts: list[Alert] = []
        self._offered: set[int] = set()
        self._unsubscribe = None
        self._top_pct = 40
        self._top_set = False  # the user resized the top row (then the screen size no longer picks it)
        self._split_pct = 55
        self._split_set = False
        self._input_mode: str | None = None
        self._recovering = False
        self._pending_offer: Alert | None = None
        self._relaunched: list = []
        self.batches = 0

    # --------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        cap = self._line_cap()
        yield Static("", id="monitor-header")
        yield Static("", id="monitor-alert")
        yield from self.compose_extra()
        with Horizontal(id="monitor-top"):
            yield Pane("1 Status", StatusView(clock=self._clock, id="status-view"),
                       Static("", id="status-alerts"), id="pane-status")
            with VerticalScroll(id="monitor-side"):
                yield Pane("4 Endpoint", EndpointPanel(id="endpoint-panel"), id="pane-endpoint")
                yield Pane("3 Progress / metrics", MetricsPanel(id="metrics-panel"), id="pane-metrics")
        yield Pane(
            "2 Logs",
            LogView(cap, id="log-view"),
            Static("", id="log-status"),
            Input(id="log-input"),
            id="pane-logs",
        )
        yield KeyFooter()

    def compose_extra(self) -> ComposeResult:
        """Panes a specialised monitor puts above the status row (the sweep view); none here."""
        return iter(())

    def _clock(self) -> float:
        clock = getattr(self.app, "clock", None)
        return clock() if callable(clock) else time.time()

    def _line_cap(self) -> int:
        settings = getattr(self.app, "settings", None)
        cap = getattr(settings, "log_line_cap", None)
        return int(cap) if cap else self.controller.log_line_cap

    def on_mount(self) -> None:
        cap = self._line_cap()
        if cap != self.controller.log_line_cap:
            self.controller.set_log_line_cap(cap)
        self.query_one("#log-input", Input).display = False
        self._fit(self.app.size.width, self.app.size.height)
        self._subscribe(self.controller)
        if getattr(self.controller, "needs_replay", False):
            # a finished run opened from the runs list: show its saved events
            self.run_worker(self.controller.attach(), name="replay", exit_on_error=False)
        self.query_one("#log-view", LogView).focus()
        self.set_interval(1.0, self._update_header, name="monitor header")

    def on_resize(self, event) -> None:
        if self.is_mounted and self.query("#log-input"):
            self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        """Small terminals (80×24): a taller top row so the metrics show, a one-line endpoint."""
        short = height < SHORT
        self.set_class(short, "-short")
        self.set_class(width < NARROW, "-narrow")
        if not self._top_set:
            self._top_pct = 60 if short else 40
        if not self._split_set:
            self._split_pct = 50 if width < NARROW else 55  # the metrics lines need the columns too
        self.query_one("#metrics-panel", MetricsPanel).set_compact(short)
        self._apply_sizes()
        self._update_header()

    def on_screen_resume(self) -> None:
        if self._pending_offer is not None and self.controller.child is None:
            self.call_after_refresh(self._offer_recovery, self._pending_offer)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _subscribe(self, controller: RunController) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.controller = controller
        spec = controller.spec
        self.sub_title = f"Run {controller.id}"
        if spec is not None:
            self.query_one("#metrics-panel", MetricsPanel).set_total(spec.workload.max_requests)

        def deliver(batch: EventBatch) -> None:
            # Called by the controller (same loop); one message per batch.
            self.post_message(self.RunEvents(batch, controller))

        self._unsubscribe = controller.subscribe(deliver)
        self._relaunched = self._read_relaunches(controller)
        self._update_header()

    def _read_relaunches(self, controller: RunController) -> list:
        """The runs already relaunched from this one (read once per run shown; the run store is the record)."""
        from backends.lineage import relaunches

        store = getattr(controller, "store", None)
        if store is None:
            return []
        try:
            return relaunches(store.list(), controller.id)
        except (OSError, SweepdeckError):
            return []

    def switch_to(self, controller: RunController) -> None:
        """Show another run (a relaunch) in this monitor."""
        self.alerts.clear()
        self._offered.clear()
        self.query_one("#log-view", LogView).clear()
        self.query_one("#status-view", StatusView).clear()
        self.query_one("#metrics-panel", MetricsPanel).reset()
        self.query_one("#endpoint-panel", EndpointPanel).show(None, ended=False)
        self._show_alerts()
        self._subscribe(controller)

    # --------------------------------------------------------------- events

    @on(RunEvents)
    def _on_run_events(self, message: RunEvents) -> None:
        if message.controller is not self.controller:
            return  # a batch of the run shown before a switch
        self.apply_batch(message.batch)

    def apply_batch(self, batch: EventBatch) -> None:
        """Apply one batch: one call per widget."""
        self.batches += 1
        logview = self.query_one("#log-view", LogView)
        if batch.reset:
            logview.clear()
        if batch.lines or batch.dropped:
            logview.write_events(batch.lines, batch.dropped)
        if batch.phases:
            self.query_one("#status-view", StatusView).update_phases(batch.phases)
            self._update_status_title()
        metrics = self.query_one("#metrics-panel", MetricsPanel)
        if batch.metrics:
            metrics.update_metrics(batch.metrics, batch.throughput)
        if batch.progress is not None:
            metrics.update_progress(batch.progress)
        if batch.endpoint is not None:
            self.query_one("#endpoint-panel", EndpointPanel).show(batch.endpoint)
        # a replayed run (read-only) or one already relaunched does not ask again
        offer = not self.controller.read_only and self.controller.child is None
        for alert in batch.alerts:
            self._add_alert(alert, offer=offer)
        if batch.notices:
            self._show_notice(batch.notices[-1])
        if batch.finished is not None:
            # whatever the units and the endpoint said last, nothing of the run runs now
            self.query_one("#status-view", StatusView).settle(batch.finished.ts)
            self._update_status_title()
            self.query_one("#endpoint-panel", EndpointPanel).end()
        if batch.finished is not None and not batch.reset:
            f = batch.finished
            severity = "information" if f.outcome == "succeeded" else "warning"
            self.notify(f"{f.outcome}: {f.message}" if f.message else f.outcome,
                        title=f"Run {self.controller.id}", severity=severity, timeout=8)
        self._update_header()

    def _add_alert(self, alert: Alert, *, offer: bool = True) -> None:
        self.alerts.append(alert)
        self._show_alerts()
        if alert.diagnosis and alert.fixes and offer and self.auto_recovery:
            key = id(alert)
            if key not in self._offered:
                self._offered.add(key)
                self.call_after_refresh(self._offer_recovery, alert)

    def _show_alerts(self) -> None:
        box = self.query_one("#status-alerts", Static)
        banner = self.query_one("#monitor-alert", Static)
        if not self.alerts:
            box.update("")
            box.display = False
            banner.update("")
            banner.display = False
            return
        text = Text()
        for alert in self.alerts[-4:]:
            icon = {"error": "✘", "warning": "⚠"}.get(alert.severity, "ℹ")
            text.append(f"{icon} {alert.severity.upper()}: ", style="bold")
            text.append(alert.message.split(": ", 1)[0] if alert.diagnosis else alert.message)
            text.append("\n")
        text.rstrip()
        box.update(text)
        box.display = True
        worst = next((a for a in reversed(self.alerts) if a.diagnosis), self.alerts[-1])
        banner_text = Text()
        icon = "✘" if worst.severity == "error" else "⚠"
        banner_text.append(f" {icon} {worst.severity.upper()} ", style="bold reverse")
        head = worst.message.split(": ", 1)[0] if worst.diagnosis else worst.message.split(". ")[0]
        banner_text.append(" " + head)
        hint = self._alert_hint(worst)
        if hint:
            banner_text.append(hint, style="bold")
        banner.update(banner_text)
        banner.set_class(worst.severity == "error", "-error")
        banner.display = True

    def _alert_hint(self, alert: Alert) -> str:
        """What the banner suggests doing about ``alert`` (empty: nothing)."""
        if alert.diagnosis and alert.fixes:
            return "  — r: recovery options"
        return ""

    def _show_notice(self, notice: Notice) -> None:
        if notice.level in ("warning", "error"):
            self.notify(notice.message, severity="error" if notice.level == "error" else "warning", timeout=8)

    @on(StatusView.Overtime)
    def _overtime(self, message: StatusView.Overtime) -> None:
        self._add_alert(message.alert)
        self.notify(message.alert.message, title="Over time", severity="warning", timeout=8)

    def _update_status_title(self) -> None:
        counts = self.query_one("#status-view", StatusView).counts()
        total = sum(counts.values())
        parts = [f"{total:,} unit" + ("" if total == 1 else "s")]
        for cat in ("running", "busy", "pending", "retrying", "broken", "ok", "failed", "cancelled"):
            if counts.get(cat):
                parts.append(f"{ICONS[cat]} {counts[cat]:,}")
        self.query_one("#pane-status", Pane).border_title = "1 Status · " + " ".join(parts)

    def _update_header(self) -> None:
        c = self.controller
        spec = c.spec
        about, extra = Text(), Text()
        facts = _described(c)
        if facts and spec is not None:
            # the backend describes this run better than engine settings do (a matrix PipelineRun)
            about.append(facts)
            extra.append(f" · {spec.model}", style="dim")
        elif spec is not None:
            about.append(f"{spec.model.rsplit('/', 1)[-1]} · {spec.workload.app}")
            e = spec.engine
            extra.append(f" · TP={e.tp} max_model_len={e.max_model_len} max_num_seqs={e.max_num_seqs}", style="dim")
        self._show_header(self._header_head(), about, self._lineage(), extra)

    def _header_head(self) -> Text:
        """Run id, state, duration and backend: the part of the header that is never cut."""
        c = self.controller
        icon = RUN_STATE_ICONS.get(c.state, ICONS.get(state_category(c.state), "•"))
        text = Text()
        text.append(f" {c.id} ", style="bold reverse")
        text.append(f"  {icon} {c.state}", style="bold")
        started = c.started_at
        if started:
            end = c.finished.ts if c.finished is not None else (None if not c.live else self._clock())
            if end is not None:
                text.append(f" · {format_duration(end - started)}")
        backend = getattr(c.backend, "name", "") or (c.record.backend if c.record else "")
        if backend:
            text.append(f" · {backend}")
        if c.read_only:
            text.append(" · replay (read-only)", style="italic")
        return text

    def _lineage(self) -> list[tuple[str, str]]:
        """``(words, run id)`` pairs: the run this one fixes, and the runs relaunched from it."""
        c = self.controller
        out: list[tuple[str, str]] = []
        spec = c.spec
        if spec is not None and spec.parent:
            out.append(("fix of", spec.parent))
        children = [r.id for r in self._relaunched]
        child = getattr(c, "child", None)
        if child is not None and getattr(child, "id", None) not in children:
            children.append(child.id)
        if children:
            out.append(("relaunched as" if len(children) == 1 else f"relaunched {len(children)}×, last", children[-1]))
        return out

    def _show_header(self, head: Text, about: Text, lineage: list[tuple[str, str]], extra: Text | None = None) -> None:
        """One line when everything fits, else two. What the run is comes first on the second line,
        then its family (run ids shortened in the middle, never dropped), then the settings (``extra``)
        for as long as there is room."""
        extra = extra or Text()
        width = max(20, (self.size.width or self.app.size.width) - 1)
        family = Text()
        for words, run_id in lineage:
            family.append(f" · {words} {run_id}", style="italic")
        full = Text.assemble(about, extra, family)
        if head.cell_len + 3 + full.cell_len <= width:
            self.query_one("#monitor-header", Static).update(Text.assemble(head, " · ", full))
            return
        second = about.copy()
        if lineage:
            room = width - second.cell_len - sum(len(words) + 4 for words, _ in lineage)
            share = max(12, room // len(lineage))
            for words, run_id in lineage:
                second.append(f" · {words} {shorten_middle(run_id, share)}", style="italic")
        if second.cell_len + extra.cell_len <= width:
            second = Text.assemble(about, extra, second[about.cell_len:])
        second.truncate(width, overflow="ellipsis")
        text = head.copy()
        text.truncate(width, overflow="ellipsis")
        self.query_one("#monitor-header", Static).update(Text.assemble(text, "\n", second))

    @on(LogView.StatusChanged)
    def _log_status(self, message: LogView.StatusChanged) -> None:
        view = message.view
        status = self.query_one("#log-status", Static)
        status.update(view.status_text())
        status.set_class(not view.following or view.paused, "-attention")

    # ---------------------------------------------------------------- panes

    def _pane(self, name: str) -> Pane:
        return self.query_one(f"#pane-{name}", Pane)

    def action_toggle_pane(self, name: str) -> None:
        pane = self._pane(name)
        if self.maximized is not None:
            self.minimize()
        pane.display = not pane.display
        top_visible = self._pane("status").display or self._pane("metrics").display or self._pane("endpoint").display
        self.query_one("#monitor-top").display = top_visible
        self.query_one("#monitor-side").display = self._pane("metrics").display or self._pane("endpoint").display
        if not pane.display and self.focused is not None and pane in self.focused.ancestors:
            self.focus_next()
        self._apply_sizes()

    def _focused_pane(self) -> Pane | None:
        node = self.focused
        while node is not None and node is not self:
            if isinstance(node, Pane):
                return node
            node = node.parent
        return None

    def action_maximize_pane(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        pane = self._focused_pane() or self._pane("logs")
        if not pane.display:
            pane.display = True
        self.maximize(pane, container=False)

    def action_resize_top(self, step: int) -> None:
        self._top_set = True
        self._top_pct = max(15, min(80, self._top_pct + step))
        self._apply_sizes()

    def action_resize_split(self, step: int) -> None:
        self._split_set = True
        self._split_pct = max(20, min(80, self._split_pct + step))
        self._apply_sizes()

    def _apply_sizes(self) -> None:
        top = self.query_one("#monitor-top")
        logs = self._pane("logs")
        if logs.display:
            top.styles.height = f"{self._top_pct}fr"
            logs.styles.height = f"{100 - self._top_pct}fr"
        else:
            top.styles.height = "1fr"
        side = self.query_one("#monitor-side")
        status = self._pane("status")
        if side.display and status.display:
            status.styles.width = f"{self._split_pct}fr"
            side.styles.width = f"{100 - self._split_pct}fr"
        else:
            status.styles.width = "1fr"
            side.styles.width = "1fr"

    # ------------------------------------------------------------------ log

    @property
    def logview(self) -> LogView:
        return self.query_one("#log-view", LogView)

    def _open_input(self, mode: str) -> None:
        self._input_mode = mode
        field = self.query_one("#log-input", Input)
        view = self.logview
        prompts = {
            "search": ("Search the log (enter: go · esc: close)", view.search_text),
            "filter": ("Show only lines containing… (empty: show all)",
                       view.filter_text if not view.filter_inverse else ""),
            "inverse": ("Hide lines containing… (empty: show all)", view.filter_text if view.filter_inverse else ""),
        }
        placeholder, value = prompts[mode]
        field.placeholder = placeholder
        field.value = value
        field.display = True
        field.focus()

    def _close_input(self) -> None:
        field = self.query_one("#log-input", Input)
        field.display = False
        self._input_mode = None
        self.logview.focus()

    @on(Input.Submitted, "#log-input")
    def _input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        mode = self._input_mode
        view = self.logview
        if mode == "search":
            count = view.set_search(event.value)
            if event.value.strip() and not count:
                self.notify(f"No line contains {event.value.strip()!r}.", severity="warning", timeout=4)
        elif mode in ("filter", "inverse"):
            view.set_filter(event.value, inverse=mode == "inverse")
        self._close_input()

    def action_search(self) -> None:
        if self._pane("logs").display:
            self._open_input("search")

    def action_filter(self, inverse: bool) -> None:
        if self._pane("logs").display:
            self._open_input("inverse" if inverse else "filter")

    def action_next_match(self) -> None:
        self.logview.goto_match(1)

    def action_previous_match(self) -> None:
        self.logview.goto_match(-1)

    def action_wrap(self) -> None:
        self.logview.toggle_wrap()

    def action_pause(self) -> None:
        self.logview.toggle_pause()

    def action_follow(self) -> None:
        self.logview.action_follow()

    def action_back(self) -> None:
        if self._input_mode is not None:
            self._close_input()
            return
        if self.maximized is not None:
            self.minimize()
            return
        view = self.logview
        if view.search_text or view.filter_text:
            if view.search_text:
                view.set_search("")
            if view.filter_text:
                view.set_filter("")
            return
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    # ----------------------------------------------------------------- save

    def default_log_path(self) -> Path:
        c = self.controller
        if c.run is not None and c.run.store is not None:
            folder = Path(c.run.store.path)
        elif c.record is not None:
            folder = Path(c.record.path)
        else:
            folder = Path.cwd()
        path = folder / "monitor.log"
        n = 2
        while path.exists():
            path = folder / f"monitor-{n}.log"
            n += 1
        return path

    def action_save_log(self) -> None:
        from tui.screens.dialogs import TextInputDialog

        view = self.logview
        shown = view.row_count
        what = f"{shown:,} lines" + (" (the filtered view)" if view.filter_text else "")

        def chosen(value: str | None) -> None:
            if value:
                self._save_to(Path(value).expanduser())

        self.app.push_screen(
            TextInputDialog(f"Save {what} to", str(self.default_log_path()),
                            help="enter: save · esc: cancel · an existing file is only replaced after you confirm"),
            chosen,
        )

    def _save_to(self, path: Path, overwrite: bool = False) -> None:
        from tui.screens.dialogs import ConfirmDialog

        if path.exists() and not overwrite:
            if path.is_dir():
                self.notify(f"{path} is a directory.", severity="error")
                return

            def answer(yes: bool | None) -> None:
                if yes:
                    self._save_to(path, overwrite=True)
                else:
                    self.notify("Not saved.", timeout=3)

            self.app.push_screen(
                ConfirmDialog("Overwrite?", f"{path} exists. Replace it?", yes="Overwrite", no="Keep"), answer
            )
            return
        try:
            count = self.logview.save(path, overwrite=overwrite)
        except FileExistsError:
            self._save_to(path)
            return
        except OSError as exc:
            self.notify(f"Cannot save to {path}: {exc.strerror or exc}", severity="error", timeout=8)
            return
        self.last_saved = path
        self.notify(f"Saved {count:,} lines to {path}", title="Log saved", timeout=6)

    # ---------------------------------------------------------- run actions

    def action_cancel_run(self) -> None:
        self._confirm_stop(True, "Stop the run?", "Stop {id} and remove what it created?", "Stop",
                           "Stopping {id} and cleaning up…")

    def action_stop_now(self) -> None:
        """Stop the run at once (``graceful=False``), after a confirmation."""
        self._confirm_stop(False, "Stop at once?",
                           "Stop {id} at once, skipping the run's own clean-up steps (Tekton finally tasks)? "
                           "What sweepdeck created is still removed.", "Stop now", "Stopping {id} at once…")

    def _confirm_stop(self, graceful: bool, title: str, question: str, yes: str, done: str) -> None:
        """Ask, then clean the run up (``graceful`` as :meth:`backends.base.Backend.cancel` takes it)."""
        from tui.screens.dialogs import ConfirmDialog

        c = self.controller
        if not c.live:
            self.notify("This run is not live.", timeout=3)
            return

        def answer(confirmed: bool | None) -> None:
            if confirmed:
                self.app.run_worker(c.cleanup(graceful=graceful), name=f"stop {c.id}", exit_on_error=False)
                self.notify(done.format(id=c.id), timeout=4)

        self.app.push_screen(ConfirmDialog(title, question.format(id=c.id), yes=yes, no="Keep running"), answer)

    def action_recovery(self) -> None:
        alert = next((a for a in reversed(self.alerts) if a.diagnosis), None)
        if alert is None:
            self.notify("No diagnosed failure to recover from.", timeout=3)
            return
        self._offer_recovery(alert)

    def _offer_recovery(self, alert: Alert) -> None:
        from tui.screens.recovery import RecoveryDialog

        if self._recovering or self.controller.spec is None:
            return
        if not self.is_current:
            # offered when the user comes back to this monitor
            self._pending_offer = alert
            return
        self._pending_offer = None
        if any(isinstance(s, RecoveryDialog) for s in self.app.screen_stack):
            return
        settings = getattr(self.app, "settings", None)
        catalogs = getattr(settings, "catalogs", None)
        self._relaunched = self._read_relaunches(self.controller)  # a relaunch may have happened meanwhile
        self.app.push_screen(RecoveryDialog(alert, self.controller.spec, catalogs, settings=settings,
                                            relaunched=self._relaunched), self._recover)

    def _recover(self, choice: Fix | ExperimentSpec | None) -> None:
        if choice is None:
            return
        self._recovering = True
        self.app.run_worker(self.relaunch(choice), name="relaunch", group="relaunch", exit_on_error=False)

    async def relaunch(self, choice: Fix | ExperimentSpec) -> RunController | None:
        """Relaunch with ``choice``, register the new run with the app, show it here."""
        old = self.controller
        label = choice.label if isinstance(choice, Fix) else "custom fix"
        self.notify(f"Relaunching {old.id} with: {label}", timeout=4)
        try:
            new = await old.relaunch(choice)
        except SweepdeckError as exc:
            self.notify(exc.message + (f"\n{exc.hint}" if exc.hint else ""), title="Relaunch failed",
                        severity="error", timeout=12)
            return None
        except Exception as exc:  # shown, not fatal: the app must stay usable
            log.exception("relaunch failed")
            self.notify(f"{type(exc).__name__}: {exc}", title="Relaunch failed", severity="error", timeout=12)
            return None
        finally:
            self._recovering = False
        controllers = getattr(self.app, "controllers", None)
        if isinstance(controllers, list):
            controllers.append(new)
        self.app.run_worker(self._follow(new), group="controllers", name=f"start {new.id}", exit_on_error=False)
        if self.is_attached:
            self.switch_to(new)
        return new

    async def _follow(self, controller: RunController) -> None:
        try:
            await controller.start()
        except SweepdeckError as exc:
            self.app.notify(exc.message, title="Run failed", severity="error", timeout=10)


def _described(controller: Any) -> str | None:
    """The run's facts as its backend describes them (None: the engine settings describe it)."""
    describe = getattr(controller.backend, "describe", None)
    if not callable(describe):
        return None
    run, record = controller.run, controller.record
    return describe(controller.spec, run.handle if run is not None else None,
                    record.meta if record is not None else None)


def shorten_middle(text: str, width: int) -> str:
    """``nov22-llama-2-7b-hf-summarization`` → ``nov22-llam…summarization``: both ends of a run id
    say which run it is (the date and the workload), so the middle goes first."""
    if len(text) <= width or width < 5:
        return text
    tail = (width - 1) // 2 + (width - 1) % 2
    head = width - 1 - tail
    return f"{text[:head]}…{text[-tail:]}"


__all__ = ["Pane", "RunMonitorScreen", "shorten_middle"]
