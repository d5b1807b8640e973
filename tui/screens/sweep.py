"""The run monitor of an Argo work-queue sweep, and the failure-group drill-in.

:class:`SweepMonitorScreen` is the run monitor (logs, status, search, stop,
everything of :class:`~tui.screens.monitor.RunMonitorScreen`) with the sweep
view (:class:`~tui.widgets.sweep.SweepView`) as its main pane: the app opens
it instead of the plain monitor when the run's backend is ``argo``. Sweep
snapshots and node phases arrive in the controller's collapsed batches (one
``RunEvents`` message per batch), so a burst of snapshots is drawn once.

Actions that need the work-queue API — listing one failure group's configs
(enter on a group) and resetting stale configs (``R``, asks first) — go
through a *reader*: an object with ``async failed_configs(error_message)``
and ``async reset_stale()`` such as :class:`backends.argo.sweep.SweepReader`.
It is injected (tests) or made from the run's backend (``backend.reader(model
version id, queue URL)``) the first time it is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from backends.events import Alert
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.controller import EventBatch, RunController
from tui.screens.monitor import Pane, RunMonitorScreen
from tui.widgets.sweep import SweepTable, SweepView, one_line

log = logging.getLogger(__name__)

#: Configs of one failure group read for the drill-in (the API's page size).
GROUP_LIMIT = 500


def is_sweep_run(controller: Any) -> bool:
    """True when the run sweeps a work queue (its backend has the ``work_queue`` capability)."""
    backend = getattr(controller, "backend", None)
    if backend is not None:
        return "work_queue" in getattr(backend, "capabilities", ())
    record = getattr(controller, "record", None)
    name = (getattr(record, "meta", None) or {}).get("backend") or getattr(record, "backend", None)
    if not name:
        return False
    from backends.registry import backend_class
    from config.errors import SweepdeckError

    try:
        return "work_queue" in getattr(backend_class(str(name)), "capabilities", ())
    except SweepdeckError:
        return False


def reader_for(controller: Any) -> Any | None:
    """A reader of the run's work queue from its backend, or None when it cannot be known.

    The model version comes from the run's handle, else its saved record, else
    the latest Sweep snapshot; the queue URL from the handle (else the
    backend's profile).

    Raises:
        SweepdeckError: the backend cannot make a reader (bad profile).
    """
    make = getattr(getattr(controller, "backend", None), "reader", None)
    if not callable(make):
        return None
    handle = dict(getattr(getattr(controller, "run", None), "handle", None) or {})
    meta = getattr(getattr(controller, "record", None), "meta", None) or {}
    sweep = getattr(controller, "sweep", None)
    mvid = handle.get("model_version_id") or meta.get("model_version_id") or (
        sweep.model_version_id if sweep is not None else None)
    if not mvid:
        return None
    return make(str(mvid), handle.get("queue_url") or meta.get("queue_url"))


def _key(binding_id: str, app: Any) -> str:
    """How the key of ``binding_id`` reads after the user's remapping."""
    return keys.display_key(keys.effective_key(keys.BY_ID[binding_id], getattr(app, "user_keys", {}) or {}))


# --------------------------------------------------------------- drill-in

GROUP_COLUMNS = [
    ("id", "Config", 8), ("workload", "Workload", None), ("batch", "Batch", 5), ("seq", "Seq len", 7),
    ("retries", "Retries", 7), ("error", "Error", None),
]


class FailureGroupScreen(ModalScreen[None]):
    """The configs of one failure group, read through ``reader.failed_configs(error_message)``.

    Args:
        reader: The work-queue reader.
        error_message: The group's exact error message.
        count: How many configs the group has (from the snapshot; 0 if unknown).
    """

    DEFAULT_CLASSES = "dialog-screen"
    CSS_PATH = "../styles/sweep.tcss"
    BINDINGS = keys.bindings("sweep_group")

    def __init__(self, reader: Any, error_message: str, count: int = 0) -> None:
        super().__init__()
        self.reader = reader
        self.error_message = error_message
        self.count = count
        self.configs: list[dict[str, Any]] = []
        self.loaded = False
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="failure-group-dialog", classes="dialog"):
            title = "✘ Failure group" + (f": {self.count:,} config" + ("s" if self.count != 1 else "")
                                         if self.count else "")
            yield Label(title, classes="dialog-title", id="failure-group-title")
            yield Static(Text(self.error_message), id="failure-group-error")
            yield Static("◌ Reading the group's configs from the work queue…", id="failure-group-status")
            yield SweepTable(GROUP_COLUMNS, fill="error", id="failure-group-table")
            yield Static("", id="failure-group-detail")
            yield Static(
                f"↑/↓ move · {_key('sweep_group_reload', self.app)} reload · "
                f"{_key('sweep_group_close', self.app)} close",
                classes="dialog-help",
            )

    def on_mount(self) -> None:
        self.query_one(SweepTable).focus()
        self.load()

    @work(exclusive=True, group="failure-group", exit_on_error=False)
    async def load(self) -> None:
        status = self.query_one("#failure-group-status", Static)
        try:
            configs = list(await self.reader.failed_configs(self.error_message))
        except SweepdeckError as exc:
            self._failed(exc.message + (f" {exc.hint}" if exc.hint else ""))
            return
        except Exception as exc:  # shown in the dialog: the monitor must stay usable
            log.exception("reading a failure group failed")
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        self.configs = configs
        self.loaded = True
        self.error = None
        status.remove_class("-error")
        table = self.query_one(SweepTable)
        table.sync((str(c.get("id")), self._cells(c)) for c in configs)
        if not configs:
            status.update("No failed config has this message any more (reset or retried since).")
        else:
            n = len(configs)
            text = f"{n:,} config" + ("s" if n != 1 else "")
            if n >= GROUP_LIMIT and self.count > n:
                text = f"the first {n:,} of {self.count:,} configs (highest priority first)"
            elif self.count > n:
                text += f" (the snapshot counted {self.count:,}; the others were retried or reset since)"
            status.update(text)
            self._detail(configs[0])

    def _failed(self, message: str) -> None:
        self.error = message
        status = self.query_one("#failure-group-status", Static)
        status.update(Text(f"✘ ERROR: {message}"))
        status.add_class("-error")

    @staticmethod
    def _cells(c: dict[str, Any]) -> tuple:
        return (
            Text(f"#{c.get('id')}"),
            Text(str(c.get("workload_type") or "—")),
            Text(str(c.get("batch_size", "—")), justify="right"),
            Text(str(c.get("sequence_length", "—")), justify="right"),
            Text(str(c.get("retry_count") or 0), justify="right"),
            Text(one_line(c.get("error_message") or "—", 160), no_wrap=True, overflow="ellipsis"),
        )

    def _detail(self, c: dict[str, Any]) -> None:
        parts = [f"#{c.get('id')}"]
        for label, key in (("hardware", "hardware_config_id"), ("framework", "framework_id"), ("priority", "priority"),
                           ("started", "started_at"), ("finished", "completed_at"), ("worker", "worker")):
            if c.get(key) not in (None, ""):
                value = str(c[key])
                if key.endswith("_at"):
                    value = value.replace("T", " ").split(".")[0]  # ISO 8601 → 2026-11-23 08:25:00
                parts.append(f"{label} {value}")
        self.query_one("#failure-group-detail", Static).update(Text(" · ".join(parts)))

    @on(DataTable.RowHighlighted, "#failure-group-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        config = next((c for c in self.configs if str(c.get("id")) == key), None)
        if config is not None:
            self._detail(config)

    @on(DataTable.RowSelected, "#failure-group-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()  # nothing deeper to open; the detail line shows the config

    def action_reload(self) -> None:
        self.query_one("#failure-group-status", Static).update("◌ Reading the group's configs again…")
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)


# ---------------------------------------------------------------- monitor


def _bindings_of(cls: type) -> list[Binding]:
    """Every binding ``cls`` has (its own and inherited), one per key."""
    return [binding for bindings in cls._merge_bindings().key_to_bindings.values() for binding in bindings]


class SweepMonitorScreen(RunMonitorScreen, inherit_bindings=False):
    """The run monitor with the sweep view on top (Argo runs).

    The sweep pane (``5`` shows/hides it, ``z`` maximises it) sits above the
    logs; the status, metrics and endpoint panes are hidden at first (``1``,
    ``3``, ``4`` show them; the sweep view's node table already lists the
    workflow's nodes).

    Args:
        controller: The run's controller.
        reader: The work-queue reader for the drill-in and reset (default:
            made from the run's backend when first needed, see :func:`reader_for`).
        auto_recovery: Offer the recovery dialog on diagnosed alerts.
    """

    CSS_PATH = ["../styles/monitor.tcss", "../styles/sweep.tcss"]
    FOOTER = ("sweep", "monitor")
    # The sweep's keys come first so that the footer shows them first on a
    # narrow terminal; the monitor's own keys follow (inherit_bindings=False
    # takes the list as it is).
    BINDINGS = [*keys.bindings("sweep"), *_bindings_of(RunMonitorScreen)]

    def __init__(self, controller: RunController, *, reader: Any | None = None, auto_recovery: bool = True) -> None:
        super().__init__(controller, auto_recovery=auto_recovery)
        self._reader = reader
        self._own_reader = False
        self._sweep_pct = 65
        self._resetting = False
        self.last_reset: dict[str, int] | None = None

    # ---------------------------------------------------------------- layout

    def compose_extra(self) -> ComposeResult:
        view = SweepView(clock=self._clock, stale_key=_key("sweep_reset_stale", self.app), id="sweep-view")
        yield Pane("5 Sweep", view, id="pane-sweep")

    @property
    def sweep_view(self) -> SweepView:
        return self.query_one("#sweep-view", SweepView)

    # Textual runs every class's on_mount/on_unmount (this class's first), so
    # these only add to RunMonitorScreen's; they must not call super().

    def on_mount(self) -> None:
        for name in ("status", "metrics", "endpoint"):
            self._pane(name).display = False
        self.query_one("#monitor-top").display = False
        self.query_one("#monitor-side").display = False
        # after RunMonitorScreen.on_mount, which focuses the log view
        self.call_after_refresh(self._focus_sweep)

    def _focus_sweep(self) -> None:
        view = self.sweep_view
        view.table(view.current).focus()

    def on_unmount(self) -> None:
        self._drop_reader()

    def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is None or not self._own_reader:
            return
        self._own_reader = False
        close = getattr(reader, "aclose", None)
        if close is None:
            return
        with contextlib.suppress(RuntimeError):  # no loop any more: the process is ending
            asyncio.get_running_loop().create_task(close())

    def _apply_sizes(self) -> None:
        super()._apply_sizes()
        sweep = self._pane("sweep")
        logs = self._pane("logs")
        top = self.query_one("#monitor-top")
        if not sweep.display:
            return
        sweep.styles.height = f"{self._sweep_pct}fr" if (logs.display or top.display) else "1fr"
        if logs.display:
            logs.styles.height = f"{100 - self._sweep_pct}fr"
        if top.display:
            top.styles.height = "35fr"

    def action_resize_top(self, step: int) -> None:
        """``+``/``-``: the sweep pane is the top here."""
        self._sweep_pct = max(20, min(85, self._sweep_pct + step))
        self._apply_sizes()

    # ---------------------------------------------------------------- events

    def apply_batch(self, batch: EventBatch) -> None:
        view = self.sweep_view
        if batch.reset:
            view.reset()
        super().apply_batch(batch)
        if batch.phases:
            view.update_phases(batch.phases.values())
        if batch.sweep is not None:
            view.update_sweep(batch.sweep)
            self._pane("sweep").border_title = f"5 Sweep · model version {batch.sweep.model_version_id}"

    def switch_to(self, controller: RunController) -> None:
        self.sweep_view.reset()
        self._drop_reader()
        super().switch_to(controller)

    def _update_header(self) -> None:
        """Run id, state, duration; then what a sweep is about (model version, workflow,
        namespace) instead of the vLLM engine settings, which the workflow does not use."""
        c = self.controller
        about = Text()
        handle = dict(getattr(c.run, "handle", None) or {})
        meta = getattr(c.record, "meta", None) or {}
        sweep = getattr(c, "sweep", None)
        mvid = (
            handle.get("model_version_id")
            or meta.get("model_version_id")
            or (sweep.model_version_id if sweep else None)
        )
        if mvid:
            about.append(f"model version {mvid}")
        extra = Text()
        workflow = handle.get("workflow") or meta.get("workflow")
        namespace = handle.get("namespace") or meta.get("namespace") or (c.spec.namespace if c.spec else None)
        if workflow:
            extra.append((" · " if about else "") + f"workflow {workflow}", style="dim")
        if namespace:
            extra.append(f" in {namespace}" if workflow else (" · " if about else "") + f"namespace {namespace}",
                         style="dim")
        self._show_header(self._header_head(), about, self._lineage(), extra)

    def _alert_hint(self, alert: Alert) -> str:
        if alert.kind == "stale-configs":
            return f"  — {_key('sweep_reset_stale', self.app)}: reset stale configs"
        return super()._alert_hint(alert)

    # --------------------------------------------------------------- actions

    def action_sweep_section(self, step: int) -> None:
        pane = self._pane("sweep")
        if not pane.display:
            self.action_toggle_pane("sweep")
        self.sweep_view.cycle(step)

    def sweep_reader(self) -> Any | None:
        """The work-queue reader (made from the backend the first time); notifies when there is none."""
        if self._reader is None:
            try:
                self._reader = reader_for(self.controller)
            except SweepdeckError as exc:
                self.notify(exc.message + (f"\n{exc.hint}" if exc.hint else ""), title="Work queue", severity="error")
                return None
            self._own_reader = self._reader is not None
        if self._reader is None:
            self.notify("This run's work queue is not known yet (no model version or queue URL).",
                        title="Work queue", severity="warning", timeout=6)
        return self._reader

    @on(SweepView.GroupSelected)
    def _open_group(self, message: SweepView.GroupSelected) -> None:
        message.stop()
        reader = self.sweep_reader()
        if reader is not None:
            self.app.push_screen(FailureGroupScreen(reader, message.error_message, message.count))

    def action_reset_stale(self) -> None:
        """Ask, then return stale running configs to pending (``reader.reset_stale()``)."""
        from tui.screens.dialogs import ConfirmDialog

        if self._resetting:
            self.notify("A reset of stale configs is already running.", timeout=3)
            return
        reader = self.sweep_reader()
        if reader is None:
            return
        sweep = self.sweep_view.sweep
        minutes = sweep.stale_after_min if sweep is not None else float(getattr(reader, "stale_after_min", 120.0))
        stale = len(sweep.stale) if sweep is not None else 0
        rule = (f"Every config of the work queue running for over {minutes:g} min goes back to pending "
                "(retry count + 1); a config past its retry limit is marked failed instead.")
        if stale:
            head = (
                f"{stale:,} config" + ("s have" if stale != 1 else " has") + f" been running for over {minutes:g} min "
                "(a worker was probably interrupted)."
            )
        else:
            head = "No config is shown as stale right now; the queue is checked again."
        self.app.push_screen(
            ConfirmDialog("Reset stale configs?", f"{head}\n{rule}", yes="Reset", no="Cancel"),
            lambda yes: self._confirmed_reset(yes, reader),
        )

    def _confirmed_reset(self, yes: bool | None, reader: Any) -> None:
        if not yes:
            self.notify("Nothing was reset.", timeout=3)
            return
        self._resetting = True
        self.run_worker(self._reset_stale(reader), name="reset stale", group="sweep-reset", exit_on_error=False)

    async def _reset_stale(self, reader: Any) -> None:
        try:
            result = await reader.reset_stale()
        except SweepdeckError as exc:
            self.notify(exc.message + (f"\n{exc.hint}" if exc.hint else ""), title="Reset failed",
                        severity="error", timeout=10)
            return
        except Exception as exc:  # shown, not fatal: the monitor must stay usable
            log.exception("reset-stale failed")
            self.notify(f"{type(exc).__name__}: {exc}", title="Reset failed", severity="error", timeout=10)
            return
        finally:
            self._resetting = False
        result = dict(result or {})
        self.last_reset = result
        reset, failed = int(result.get("reset", 0)), int(result.get("failed", 0))
        text = f"Reset {reset:,} stale config" + ("s" if reset != 1 else "") + " to pending"
        if failed:
            text += f"; {failed:,} marked failed (retries used up)"
        self.notify(text + ".", title="Stale configs", timeout=8)
        await self._refresh(reader)

    async def _refresh(self, reader: Any) -> None:
        """Show the queue as it is after a reset now, not at the backend's next detailed read."""
        snapshot = getattr(reader, "snapshot", None)
        if snapshot is None:
            return
        try:
            sweep = await snapshot()
        except Exception as exc:  # the next periodic snapshot will do
            log.debug("snapshot after reset failed: %s", exc)
            return
        self.controller.on_event(sweep)


__all__ = ["FailureGroupScreen", "SweepMonitorScreen", "is_sweep_run", "reader_for"]
