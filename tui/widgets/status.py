"""The status pane: units of work (jobs, tasks, pods, the server) with state and duration.

A line-API widget (like the log view): only visible rows render, so 10,000
units cost what 20 do. Updates come in collapsed batches (latest Phase per
unit). Each state shows an icon *and* the backend's own word, so it reads
without colour. Running units with an expected duration are watched: one that
runs longer than twice that raises an over-time alert.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable

from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from backends.events import Alert, Phase
from config.durations import format_elapsed

#: state word (lower case) -> category
_CATEGORIES = {
    **dict.fromkeys(("pending", "queued", "created", "waiting", "configuring", "scheduled", "held", "new", "submitted"),
                    "pending"),
    **dict.fromkeys(("starting", "launching", "stopping", "completing", "cancelling", "initializing", "pulling"),
                    "busy"),
    **dict.fromkeys(("running", "ready", "serving", "started", "active", "in_progress", "workload", "up"), "running"),
    **dict.fromkeys(("succeeded", "completed", "complete", "done", "success", "finished", "ok"), "ok"),
    **dict.fromkeys(("failed", "error", "timeout", "oom", "node_fail", "out_of_memory", "crashloopbackoff",
                     "boot_fail", "deadline", "errored", "lost"), "failed"),
    **dict.fromkeys(("cancelled", "canceled", "stopped", "preempted", "skipped", "aborted", "detached"), "cancelled"),
    # A live link that is down (an SSH tunnel whose connection dropped): failure-like,
    # but not terminal -- the unit keeps its ticking duration and may come back.
    **dict.fromkeys(("broken", "disconnected", "unreachable"), "broken"),
    # Trying to get it back (reconnect with backoff): in progress, with a warning.
    **dict.fromkeys(("reconnecting", "retrying"), "retrying"),
}

ICONS = {
    "pending": "◌",
    "busy": "◐",
    "running": "▶",
    "ok": "✔",
    "failed": "✘",
    "cancelled": "⊘",
    "broken": "✘",
    "retrying": "↻",
    "overtime": "⚠",
    "other": "•",
}

TERMINAL = ("ok", "failed", "cancelled")


_EXIT_CODE = re.compile(r"exit code (-?\d+)")


def state_category(state: str, detail: str = "") -> str:
    """``pending`` / ``busy`` / ``running`` / ``ok`` / ``failed`` / ``cancelled`` /
    ``broken`` / ``retrying`` / ``other``.

    ``exited`` counts as ok only with exit code 0 in ``detail``.
    """
    word = (state or "").strip().lower().replace(" ", "_").replace("-", "_")
    if word == "exited":
        match = _EXIT_CODE.search(detail or "")
        if match is None or match.group(1) == "None":
            return "other"
        return "ok" if match.group(1) == "0" else "failed"
    return _CATEGORIES.get(word, "other")


format_duration = format_elapsed


class StatusView(ScrollView, can_focus=True):
    """Rows of units of work.

    Args:
        clock: Time source for durations of running units (snapshots fix it).
        overtime_factor: A unit running longer than this times its expected
            duration raises an alert.
    """

    COMPONENT_CLASSES = {"status--ok", "status--failed", "status--running", "status--pending", "status--dim",
                         "status--overtime"}

    DEFAULT_CSS = """
    StatusView {
        background: $surface;
        overflow-x: hidden;
        overflow-y: auto;
        &:focus { background-tint: $foreground 5%; }
        & > .status--ok { color: $text-success; }
        & > .status--failed { color: $text-error; text-style: bold; }
        & > .status--running { color: $text-accent; }
        & > .status--pending { color: $text-muted; }
        & > .status--dim { color: $text-muted; }
        & > .status--overtime { color: $text-warning; text-style: bold; }
    }
    """

    class Overtime(Message):
        """A unit exceeded ``overtime_factor`` × its expected duration."""

        def __init__(self, alert: Alert) -> None:
            super().__init__()
            self.alert = alert

    def __init__(self, *, clock: Callable[[], float] | None = None, overtime_factor: float = 2.0,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.clock = clock or time.time
        self.overtime_factor = overtime_factor
        self._rows: list[Phase] = []
        self._index: dict[str, int] = {}
        self._since: dict[str, float] = {}  # first sighting, for units whose events carry no start
        self._watch: dict[str, Phase] = {}  # running units with an expected duration
        self._overtime: set[str] = set()
        self._running = 0  # rows whose duration ticks
        self._cache: LRUCache[tuple, Strip] = LRUCache(1024)
        self._name_width = 12
        self.updates = 0
        self.last_applied: float | None = None
        self.last_displayed: float | None = None

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick, name="status tick")

    # ------------------------------------------------------------------ data

    @property
    def units(self) -> list[Phase]:
        return list(self._rows)

    def phase(self, unit: str) -> Phase | None:
        i = self._index.get(unit)
        return None if i is None else self._rows[i]

    def clear(self) -> None:
        self._rows.clear()
        self._index.clear()
        self._since.clear()
        self._watch.clear()
        self._overtime.clear()
        self._cache.clear()
        self._name_width = 12
        self.virtual_size = Size(0, 0)
        self.refresh()

    def update_phases(self, phases: dict[str, Phase] | list[Phase]) -> None:
        """Apply the latest Phase per unit (a collapsed batch)."""
        items = phases.values() if isinstance(phases, dict) else phases
        rows = self._rows
        index = self._index
        width = self._name_width
        grew = False
        for phase in items:
            i = index.get(phase.unit)
            if i is None:
                self._since[phase.unit] = phase.ts
                index[phase.unit] = len(rows)
                rows.append(phase)
                grew = True
                if len(phase.unit) > width:
                    width = min(48, len(phase.unit))
            else:
                rows[i] = phase
            if phase.expected_s and state_category(phase.state) not in TERMINAL:
                self._watch[phase.unit] = phase
            else:
                self._watch.pop(phase.unit, None)
                self._overtime.discard(phase.unit)
        if width != self._name_width:
            self._name_width = width
            self._cache.clear()
        if grew:
            self.virtual_size = Size(self._name_width + 40, len(rows))
        self.updates += 1
        self.last_applied = time.perf_counter()
        self.refresh()
        self.app.call_after_refresh(self._displayed)
        self.check_overtime()

    def settle(self, ts: float) -> None:
        """The run ended: units still shown as pending or running are not any more (their timers stop).

        A backend reports each unit's end when it can; a stopped run's last word often comes
        from the run alone (a cancelled tunnel or server says nothing after the stop).
        """
        changed = [
            dataclasses.replace(phase, state="stopped", finished=ts,
                                detail=f"{phase.detail} · the run ended" if phase.detail else "the run ended")
            for phase in self._rows
            if phase.finished is None and state_category(phase.state, phase.detail) not in TERMINAL
        ]
        if changed:
            self.update_phases(changed)

    def _displayed(self) -> None:
        self.last_displayed = time.perf_counter()

    def _tick(self) -> None:
        self.check_overtime()
        # durations of running units change every second
        top = int(self.scroll_offset.y)
        for phase in self._rows[top: top + self.size.height]:
            if phase.finished is None and state_category(phase.state, phase.detail) not in TERMINAL:
                self.refresh()
                break

    def check_overtime(self) -> list[Alert]:
        """Alert once per unit that runs longer than ``overtime_factor`` × expected."""
        if not self._watch:
            return []
        now = self.clock()
        alerts = []
        for unit, phase in list(self._watch.items()):
            if unit in self._overtime or phase.started is None or not phase.expected_s:
                continue
            elapsed = now - phase.started
            if elapsed > self.overtime_factor * phase.expected_s:
                self._overtime.add(unit)
                alert = Alert(
                    "overtime",
                    f"{phase.kind} {unit} exceeded {self.overtime_factor:g}× its expected duration "
                    f"({format_duration(elapsed)} > {self.overtime_factor:g} × {format_duration(phase.expected_s)})",
                    "warning",
                    evidence=f"{unit} {phase.state}",
                )
                alerts.append(alert)
                self._cache.clear()
                self.post_message(self.Overtime(alert))
        if alerts:
            self.refresh()
        return alerts

    # ------------------------------------------------------------- rendering

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def row_text(self, phase: Phase) -> Text:
        """One unit as text: icon + state word, name, kind, duration, retries, detail."""
        category = state_category(phase.state, phase.detail)
        over = phase.unit in self._overtime and category not in TERMINAL
        icon = ICONS["overtime" if over else category]
        state = f"{icon} {phase.state}"
        started = self.started_of(phase)
        if started is not None:
            end = phase.finished if phase.finished is not None else (
                None if category in TERMINAL else self.clock())
            duration = format_duration(end - started) if end is not None else "—"
        else:
            duration = "—"
        name = phase.unit if len(phase.unit) <= self._name_width else phase.unit[: self._name_width - 1] + "…"
        text = Text(no_wrap=True, end="")
        style_name = {"ok": "status--ok", "failed": "status--failed", "running": "status--running",
                      "busy": "status--running", "pending": "status--pending", "broken": "status--failed",
                      "retrying": "status--overtime"}.get(category, "status--dim")
        if over:
            style_name = "status--overtime"
        text.append(f"{state:<14.14} ", self.get_component_rich_style(style_name))
        text.append(f"{name:<{self._name_width}} ")
        text.append(f"{duration:>7} ")
        extra = []
        if over:
            extra.append("OVER TIME")
        if phase.retries:
            extra.append(f"retry {phase.retries}")
        if phase.kind and phase.kind != "task":
            extra.append(phase.kind)
        if phase.detail:
            extra.append(phase.detail)
        if extra:
            text.append(" · ".join(extra), self.get_component_rich_style("status--dim"))
        return text

    def started_of(self, phase: Phase) -> float | None:
        """When the unit started: its own ``started``, else when it was first seen."""
        return phase.started if phase.started is not None else self._since.get(phase.unit)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.scrollable_content_region.width
        if row >= len(self._rows):
            return Strip.blank(width, self.rich_style)
        phase = self._rows[row]
        running = phase.finished is None and state_category(phase.state, phase.detail) not in TERMINAL
        key = (row, id(phase), phase.unit in self._overtime, int(self.clock()) if running else 0, self._name_width)
        strip = self._cache.get(key)
        if strip is None:
            text = self.row_text(phase)
            text.stylize_before(self.rich_style)
            strip = Strip(text.render(self.app.console), text.cell_len)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def counts(self) -> dict[str, int]:
        """Units per category (the pane title shows them)."""
        out: dict[str, int] = {}
        for phase in self._rows:
            cat = state_category(phase.state, phase.detail)
            out[cat] = out.get(cat, 0) + 1
        return out


__all__ = ["ICONS", "StatusView", "format_duration", "state_category"]
