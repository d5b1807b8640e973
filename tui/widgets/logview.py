"""The log pane's widget: a bounded, filterable, searchable, tail-following line view.

Built on :class:`textual.scroll_view.ScrollView` with the line API, like
Textual's own ``Log``: only the visible rows are rendered, each from a small
cache. What it adds for a vLLM server's log:

* every line keeps its stream: ``[VLLM OUT]`` and ``[VLLM ERR]`` are prefixed
  (so the difference reads in monochrome / ``NO_COLOR``) and styled apart;
* a line cap (a ``deque``): memory stays bounded however long the run;
* lines arrive in batches (:meth:`write_events`), never one call per line;
* polite tail-follow (as toolong does it): the view follows new lines only
  while it is scrolled to the bottom; scrolled up, it stays put (even while
  the cap drops old lines) and counts the new lines instead; ``End`` follows
  again;
* pause (hold new lines, bounded) and resume;
* search with highlight, next/previous and a match count; filter and inverse
  filter; wrap; the lines shown can be saved.

Lines are addressed by an absolute sequence number (``base`` + position in the
deque) so the filter view, the search matches and the wrap offsets survive the
cap dropping old lines: they are pruned lazily from the front.
"""

from __future__ import annotations

import gc
import re
from bisect import bisect_left, bisect_right
from collections import deque
from functools import lru_cache
from operator import attrgetter

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from backends.events import LogLine

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]").sub

DEFAULT_CAP = 100_000
_TEXT = attrgetter("text")


#: Longest source shown in a line's prefix; a longer one (a matrix TaskRun with its
#: combination) keeps its start and end, so the text still starts on an 80-column line.
SOURCE_SHOWN = 28


@lru_cache(maxsize=256)
def _shown_source(source: str, full: bool = False) -> str:
    source = source.upper()
    if full or len(source) <= SOURCE_SHOWN:
        return source
    keep = SOURCE_SHOWN - 1
    return source[: keep // 2] + "…" + source[-(keep - keep // 2):]


#: Allocations between two young collections once a log pane has been shown (Python's default: 700).
GC_YOUNG_THRESHOLD = 20_000


def relax_gc() -> None:
    """Make the cyclic garbage collector's young collections rarer (never more frequent than now).

    A log pane keeps up to :data:`DEFAULT_CAP` line objects alive (and the run's
    controller the same ones). With Python's default thresholds a busy log then
    triggers a full collection every ~75,000 new lines, each walking every live
    line: ~12 per million lines, 0.3–1 s of the client's time, and the full
    collections get slower the longer the app lives. At 20,000 allocations a
    young collection, a full one comes every ~2 million allocations. Log lines
    hold no reference cycles: they are freed when the cap drops them, whatever
    the collector does.

    It stays so for the rest of the process (a client shows runs until it exits;
    counting panes to undo it would buy nothing there).
    """
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:  # 0: the collector is off, leave it so
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def line_prefix(line: LogLine, *, full: bool = False) -> str:
    """``[VLLM OUT] `` / ``[VLLM ERR] `` (the source, upper-cased, and the stream).

    Args:
        line: The line.
        full: The whole source however long (a saved log); on screen a source
            longer than :data:`SOURCE_SHOWN` is shortened in the middle.
    """
    return f"[{_shown_source(line.source or 'log', full)} {'ERR' if line.stream == 'err' else 'OUT'}] "


def plain_line(line: LogLine) -> str:
    """The line as saved: the full prefix + text (control characters made visible)."""
    return line_prefix(line, full=True) + _CONTROL("\ufffd", line.text.expandtabs())


class LogView(ScrollView, can_focus=True):
    """Shows log lines; see the module doc.

    Args:
        cap: Lines kept (older ones are dropped).
    """

    COMPONENT_CLASSES = {
        "logview--out",
        "logview--err",
        "logview--err-text",
        "logview--match",
        "logview--current",
    }

    DEFAULT_CSS = """
    LogView {
        background: $surface;
        color: $text;
        overflow: auto auto;
        &:focus { background-tint: $foreground 5%; }
        & > .logview--out { color: $text-success; }
        & > .logview--err { color: $text-error; text-style: bold; }
        & > .logview--err-text { color: $text-warning; }
        & > .logview--match { background: $warning 60%; color: $text; text-style: bold underline; }
        & > .logview--current { background: $accent 40%; text-style: bold; }
    }
    LogView.-wrap { overflow-x: hidden; overflow-y: scroll; }
    """

    BINDINGS = [
        Binding("end", "follow", "Follow", show=False),
    ]

    class StatusChanged(Message):
        """The follow / pause / search / filter state changed (the pane redraws its status line)."""

        def __init__(self, view: LogView) -> None:
            super().__init__()
            self.view = view

    def __init__(self, cap: int = DEFAULT_CAP, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._lines: deque[LogLine] = deque(maxlen=max(1, int(cap)))
        self._total = 0  # lines ever added (absolute index of the next line)
        self._width = 0
        # filter view: absolute indices of the shown lines (None: every line)
        self._filter = ""
        self._filter_inverse = False
        self._view: list[int] | None = None
        self._view_off = 0
        # wrap: cumulative visual rows per shown line (None: no wrap)
        self._wrap = False
        self._wrap_width = 0
        self._cum: list[int] | None = None
        self._cum_off = 0
        # search
        self._search = ""
        self._matches: list[int] = []
        self._match_off = 0
        self._current: int | None = None  # absolute index of the current match
        # follow / pause
        self.following = True
        self.paused = False
        self._held: deque[LogLine] = deque(maxlen=max(1, int(cap)))
        self.unseen = 0  # rows added below the view since it stopped following
        self.dropped = 0  # lines dropped by the cap since the start
        self._cache: LRUCache[tuple, Strip | list[Strip]] = LRUCache(2048)
        self._seen_base = 0
        self._cum_shift = 0
        self._held_skipped = 0
        self._status_key: tuple | None = None

    # ------------------------------------------------------------ properties

    @property
    def cap(self) -> int:
        return self._lines.maxlen or DEFAULT_CAP

    @property
    def line_count(self) -> int:
        """Lines kept (before filtering)."""
        return len(self._lines)

    @property
    def total(self) -> int:
        """Lines ever written (shown, dropped by the cap, or held while paused)."""
        return self._total + len(self._held) + self._held_skipped

    @property
    def row_count(self) -> int:
        """Lines shown (after filtering)."""
        if self._view is None:
            return len(self._lines)
        return len(self._view) - self._view_off

    @property
    def base(self) -> int:
        """Absolute index of the oldest kept line."""
        return self._total - len(self._lines)

    @property
    def wrap(self) -> bool:
        return self._wrap

    @property
    def search_text(self) -> str:
        return self._search

    @property
    def filter_text(self) -> str:
        return self._filter

    @property
    def filter_inverse(self) -> bool:
        return self._filter_inverse

    @property
    def match_count(self) -> int:
        return len(self._matches) - self._match_off

    @property
    def current_match(self) -> int | None:
        """1-based number of the current match, or None."""
        if self._current is None:
            return None
        pos = bisect_left(self._matches, self._current, self._match_off)
        if pos < len(self._matches) and self._matches[pos] == self._current:
            return pos - self._match_off + 1
        return None

    def line(self, index: int) -> LogLine:
        """The kept line with absolute index ``index``."""
        return self._lines[index - self.base]

    def shown_lines(self) -> list[LogLine]:
        """The lines the view shows (after the filter), oldest first."""
        if self._view is None:
            return list(self._lines)
        base = self.base
        lines = self._lines
        return [lines[i - base] for i in self._view[self._view_off:]]

    def visible_text(self) -> list[str]:
        """The plain text of the rows on screen now (tests read it)."""
        height = self.scrollable_content_region.height
        top = int(self.scroll_offset.y)
        out = []
        for y in range(top, min(top + height, self.virtual_size.height)):
            out.append(self._row_strip(y).text)
        return out

    # ---------------------------------------------------------------- ingest

    def write_events(self, lines: list[LogLine], dropped: int = 0) -> None:
        """Append a batch of lines (one call per batch, never per line).

        Args:
            lines: The new lines, oldest first.
            dropped: Lines the producer dropped before this batch (line cap).
        """
        if not lines and not dropped:
            return
        if self.paused:
            overflow = max(0, len(self._held) + len(lines) - self.cap)
            self._held.extend(lines)
            self._held_skipped += dropped + overflow
            self.dropped += dropped + overflow
            self._post_status()
            return
        self.dropped += dropped
        self._append(lines, dropped)

    def clear(self) -> None:
        """Forget every line (a switch to another run)."""
        self._lines.clear()
        self._held.clear()
        self._total = self._width = 0
        self.unseen = self.dropped = 0
        self._view = [] if self._filter else None
        self._view_off = 0
        self._cum = [] if self._wrap else None
        self._cum_off = 0
        self._cum_shift = 0
        self._seen_base = 0
        self._held_skipped = 0
        self._matches = []
        self._match_off = 0
        self._current = None
        self.following = True
        self._cache.clear()
        self._update_virtual_size()
        self.scroll_to(0, 0, animate=False, immediate=True, force=True)
        self.refresh()
        self._post_status()

    def _append(self, lines: list[LogLine], skipped: int = 0) -> None:
        cap = self.cap
        if skipped:
            # lines the producer dropped before they reached us: never shown, so
            # they shift the absolute numbering without moving the view
            self._total += skipped
            self._seen_base += skipped
        if len(lines) > cap:
            self._total += len(lines) - cap
            self._seen_base += len(lines) - cap
            self.dropped += len(lines) - cap
            lines = lines[-cap:]
        old_rows = self._visual_rows()
        start = self._total
        keep = self._lines
        overflow = len(keep) + len(lines) - cap
        keep.extend(lines)
        self._total += len(lines)
        self.dropped += max(0, overflow)
        # width for horizontal scrolling (len is cell length for the ASCII a server prints)
        longest = max(map(len, map(_TEXT, lines)), default=0) + 14
        if longest > self._width:
            self._width = longest
        # which of the new lines are shown
        if self._view is not None:
            test = self._filter_test()
            new_rows = [start + i for i, ln in enumerate(lines) if test(ln)]
            self._view.extend(new_rows)
        else:
            new_rows = None
        if self._search:
            needle = self._search
            if new_rows is None:
                self._matches.extend(start + i for i, ln in enumerate(lines) if needle in ln.text.lower()
                                     or needle in line_prefix(ln).lower())
            else:
                base_lines = lines
                self._matches.extend(i for i in new_rows if needle in base_lines[i - start].text.lower()
                                     or needle in line_prefix(base_lines[i - start]).lower())
        if self._cum is not None:
            width = self._wrap_width or 1
            shown = lines if new_rows is None else [lines[i - start] for i in new_rows]
            total = self._cum[-1] if self._cum else self._cum_shift
            cum = self._cum
            for ln in shown:
                total += _rows_for(ln, width)
                cum.append(total)
        pruned_rows = self._prune()
        self._update_virtual_size()
        added_rows = self._visual_rows() - old_rows + pruned_rows
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        else:
            if added_rows > 0:
                self.unseen += added_rows
            if pruned_rows:
                # keep the lines being read where they are while old lines go
                self.scroll_to(y=max(0, self.scroll_offset.y - pruned_rows), animate=False, immediate=True, force=True)
        self.refresh()
        self._post_status()

    def _prune(self) -> int:
        """Drop view/match/wrap entries of lines the cap dropped; returns the visual rows removed."""
        base = self.base
        dropped_lines = max(0, base - self._seen_base)
        self._seen_base = base
        removed = dropped_lines  # shown rows removed (every line is shown without a filter)
        if self._view is not None:
            view = self._view
            off = self._view_off
            new_off = bisect_left(view, base, off)
            removed = new_off - off
            self._view_off = new_off
            if new_off > 4096 and new_off * 2 > len(view):
                del view[:new_off]
                self._view_off = 0
        if self._matches:
            self._match_off = bisect_left(self._matches, base, self._match_off)
            if self._match_off > 4096 and self._match_off * 2 > len(self._matches):
                del self._matches[: self._match_off]
                self._match_off = 0
        if self._current is not None and self._current < base:
            self._current = None
        if self._cum is not None and removed:
            before = self._cum[self._cum_off - 1] if self._cum_off else self._cum_shift
            self._cum_off += removed
            after = self._cum[self._cum_off - 1]
            removed = after - before  # in visual rows
            if self._cum_off > 4096 and self._cum_off * 2 > len(self._cum):
                # cum holds running totals: the slice keeps them valid
                keep_before = self._cum[self._cum_off - 1]
                del self._cum[: self._cum_off]
                self._cum_off = 0
                self._cum_shift = keep_before
        if removed:
            self._cache.clear()
        return removed

    # ------------------------------------------------------------ geometry

    def _visual_rows(self) -> int:
        if self._cum is None:
            return self.row_count
        if len(self._cum) == self._cum_off:
            return 0
        before = self._cum[self._cum_off - 1] if self._cum_off else self._cum_shift
        return self._cum[-1] - before

    def _update_virtual_size(self) -> None:
        width = 0 if self._wrap else self._width
        self.virtual_size = Size(width, self._visual_rows())

    def _abs_index(self, row: int) -> int:
        if self._view is None:
            return self.base + row
        return self._view[self._view_off + row]

    def _row_of(self, index: int) -> int | None:
        """View row of absolute line ``index`` (None if it is not shown)."""
        if self._view is None:
            row = index - self.base
            return row if 0 <= row < len(self._lines) else None
        pos = bisect_left(self._view, index, self._view_off)
        if pos < len(self._view) and self._view[pos] == index:
            return pos - self._view_off
        return None

    def _visual_of_row(self, row: int) -> int:
        if self._cum is None:
            return row
        before = self._cum[self._cum_off - 1] if self._cum_off else self._cum_shift
        i = self._cum_off + row
        return (self._cum[i - 1] if i > 0 else self._cum_shift) - before

    def _locate(self, y: int) -> tuple[int, int]:
        """(view row, wrapped sub-row) of visual row ``y``."""
        if self._cum is None:
            return y, 0
        before = self._cum[self._cum_off - 1] if self._cum_off else self._cum_shift
        target = y + before
        i = bisect_right(self._cum, target, self._cum_off)
        start = self._cum[i - 1] if i > 0 else self._cum_shift
        return i - self._cum_off, target - start

    def _rebuild_wrap(self) -> None:
        if not self._wrap:
            self._cum = None
            self._cum_off = 0
            return
        width = self._content_width()
        self._wrap_width = width
        cum: list[int] = []
        total = 0
        for ln in self.shown_lines():
            total += _rows_for(ln, width)
            cum.append(total)
        self._cum = cum
        self._cum_off = 0
        self._cum_shift = 0

    def _content_width(self) -> int:
        """Width of the text area in wrap mode (the vertical scrollbar is always shown then)."""
        width = self.size.width or 80
        return max(1, width - self.styles.scrollbar_size_vertical)

    def on_mount(self) -> None:
        relax_gc()  # many lines live long here: see relax_gc

    def on_resize(self) -> None:
        if self._wrap:
            width = self._content_width()
            if width != self._wrap_width:
                self._rebuild_wrap()
                self._cache.clear()
                self._update_virtual_size()
        if self.following:
            # lines written before the first layout could not scroll yet
            self.scroll_end(animate=False, immediate=False, x_axis=False, force=True)
        self._post_status()  # "long lines cut" depends on the width

    # ------------------------------------------------------------- rendering

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        row = scroll_y + y
        if row >= self._visual_rows():
            return Strip.blank(width, self.rich_style)
        strip = self._row_strip(row)
        if self._wrap:
            return strip.extend_cell_length(width, self.rich_style)
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def _row_strip(self, y: int) -> Strip:
        if y < 0 or y >= self._visual_rows():
            return Strip.blank(0, self.rich_style)
        row, sub = self._locate(y)
        if row >= self.row_count:
            return Strip.blank(0, self.rich_style)
        index = self._abs_index(row)
        full = self._line_strip(index)
        if not self._wrap:
            return full
        key = ("wrap", index, self._wrap_width, self._search, index == self._current)
        parts = self._cache.get(key)
        if parts is None:
            width = self._wrap_width
            cuts = list(range(width, full.cell_length, width))
            parts = full.divide(cuts + [full.cell_length]) if cuts else [full]
            self._cache[key] = parts
        return parts[sub] if sub < len(parts) else Strip.blank(0, self.rich_style)

    def _line_strip(self, index: int) -> Strip:
        current = index == self._current
        key = (index, self._search, current)
        strip = self._cache.get(key)
        if strip is not None:
            return strip
        line = self.line(index)
        prefix = line_prefix(line)
        body = _CONTROL("\ufffd", line.text.expandtabs())
        text = Text(prefix + body, no_wrap=True, end="")
        text.stylize(self.rich_style)
        err = line.stream == "err"
        text.stylize(self.get_component_rich_style("logview--err" if err else "logview--out"), 0, len(prefix) - 1)
        if err:
            text.stylize(self.get_component_rich_style("logview--err-text"), len(prefix))
        if self._search:
            match_style = self.get_component_rich_style("logview--match")
            plain = text.plain.lower()
            needle = self._search
            pos = plain.find(needle)
            while pos != -1:
                text.stylize(match_style, pos, pos + len(needle))
                pos = plain.find(needle, pos + len(needle))
        if current:
            text.stylize(self.get_component_rich_style("logview--current"))
        strip = Strip(text.render(self.app.console), text.cell_len)
        self._cache[key] = strip
        return strip

    # ------------------------------------------------------- follow / pause

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        at_end = new_value >= self.max_scroll_y
        if at_end and not self.paused:
            if not self.following or self.unseen:
                self.following = True
                self.unseen = 0
                self._post_status()
        elif not at_end and self.following and new_value < old_value:
            self.following = False
            self._post_status()

    def action_follow(self) -> None:
        """Jump to the newest line and follow (resumes a pause)."""
        if self.paused:
            self.resume()
            return
        self.following = True
        self.unseen = 0
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self._post_status()

    def pause(self) -> None:
        """Hold new lines (bounded by the cap) and freeze the view."""
        if not self.paused:
            self.paused = True
            self.following = False
            self._post_status()

    def resume(self) -> None:
        """Show the held lines and follow again."""
        if not self.paused:
            return
        self.paused = False
        held = list(self._held)
        self._held.clear()
        skipped, self._held_skipped = self._held_skipped, 0
        self.following = True
        self.unseen = 0
        if held or skipped:
            self._append(held, skipped)
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self._post_status()

    def toggle_pause(self) -> None:
        self.resume() if self.paused else self.pause()

    # ---------------------------------------------------------------- wrap

    def set_wrap(self, wrap: bool) -> None:
        if wrap == self._wrap:
            return
        # keep the same line at the top
        top_row = self._locate(int(self.scroll_offset.y))[0] if self._visual_rows() else 0
        self._wrap = wrap
        self.set_class(wrap, "-wrap")
        self._rebuild_wrap()
        self._cache.clear()
        self._update_virtual_size()
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        else:
            self.scroll_to(x=0, y=self._visual_of_row(top_row), animate=False, immediate=True, force=True)
        self.refresh()
        self._post_status()

    def toggle_wrap(self) -> None:
        self.set_wrap(not self._wrap)

    # -------------------------------------------------------------- filter

    def _filter_test(self):
        needle = self._filter.lower()
        inverse = self._filter_inverse

        def test(line: LogLine) -> bool:
            hit = needle in line.text.lower() or needle in line_prefix(line).lower()
            return hit != inverse

        return test

    def set_filter(self, text: str, inverse: bool = False) -> None:
        """Show only lines containing ``text`` (case-insensitive); ``inverse``: only lines without it.

        An empty ``text`` shows every line again.
        """
        text = text.strip()
        self._filter = text
        self._filter_inverse = bool(inverse) and bool(text)
        if text:
            test = self._filter_test()
            base = self.base
            self._view = [base + i for i, ln in enumerate(self._lines) if test(ln)]
        else:
            self._view = None
        self._view_off = 0
        self._rebuild_matches()
        self._rebuild_wrap()
        self._cache.clear()
        self._update_virtual_size()
        self.following = True
        self.unseen = 0
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.refresh()
        self._post_status()

    # -------------------------------------------------------------- search

    def _rebuild_matches(self) -> None:
        self._match_off = 0
        self._current = None
        if not self._search:
            self._matches = []
            return
        needle = self._search
        base = self.base
        lines = self._lines
        if self._view is None:
            self._matches = [base + i for i, ln in enumerate(lines)
                             if needle in ln.text.lower() or needle in line_prefix(ln).lower()]
        else:
            self._matches = [i for i in self._view[self._view_off:]
                             if needle in lines[i - base].text.lower()
                             or needle in line_prefix(lines[i - base]).lower()]

    def set_search(self, text: str) -> int:
        """Highlight ``text`` (case-insensitive) and go to its last match; returns the match count."""
        self._search = text.strip().lower()
        self._rebuild_matches()
        self._cache.clear()
        self.refresh()
        if self.match_count:
            self.goto_match(-1, from_end=True)
        self._post_status()
        return self.match_count

    def goto_match(self, step: int, *, from_end: bool = False) -> int | None:
        """Go to the next (``step`` = 1) or previous (-1) match, wrapping around.

        Returns:
            The 1-based number of the match now current, or None (no matches).
        """
        count = self.match_count
        if not count:
            if self._search:
                self.app.bell()
            return None
        matches = self._matches
        off = self._match_off
        if from_end:
            pos = len(matches) - 1
        elif self._current is None:
            top = self._locate(int(self.scroll_offset.y))[0] if self._visual_rows() else 0
            top_index = self._abs_index(min(top, max(0, self.row_count - 1))) if self.row_count else 0
            if step > 0:
                pos = bisect_left(matches, top_index, off)
                if pos >= len(matches):
                    pos = off
            else:
                pos = bisect_left(matches, top_index, off) - 1
                if pos < off:
                    pos = len(matches) - 1
        else:
            pos = bisect_left(matches, self._current, off) + step
            if pos >= len(matches):
                pos = off
            elif pos < off:
                pos = len(matches) - 1
        self._current = matches[pos]
        self._cache.clear()
        row = self._row_of(self._current)
        if row is not None:
            y = self._visual_of_row(row)
            height = self.scrollable_content_region.height or 1
            target = max(0, y - height // 2)
            self.following = target >= self.max_scroll_y and not self.paused
            if not self.following:
                self.unseen = 0
            self.scroll_to(y=target, animate=False, immediate=True, force=True)
        self.refresh()
        self._post_status()
        return pos - off + 1

    # ---------------------------------------------------------------- status

    def status_text(self) -> str:
        """One line: follow state, counts, filter, search, wrap."""
        parts: list[str] = []
        if self.paused:
            parts.append(f"⏸ PAUSED — {len(self._held):,} new lines held — p to resume")
        elif not self.following:
            if self.unseen:
                parts.append(f"▼ {self.unseen:,} new lines — End to follow")
            else:
                parts.append("■ SCROLLED — End to follow")
        else:
            parts.append("▶ FOLLOWING")
        shown = self.row_count
        kept = self.line_count
        parts.append(f"{shown:,} lines" if shown == kept else f"{shown:,} of {kept:,} lines")
        if self.dropped:
            parts.append(f"{self.dropped:,} oldest dropped (cap {self.cap:,})")
        if self._filter:
            parts.append(("NOT " if self._filter_inverse else "") + f"filter '{self._filter}'")
        if self._search:
            current = self.current_match
            parts.append(f"search '{self._search}' {current or 0}/{self.match_count:,}")
        if self._wrap:
            parts.append("wrap")
        elif self.lines_cut:
            parts.append("long lines cut: w wraps, ←/→ scroll")
        return " · ".join(parts)

    @property
    def lines_cut(self) -> bool:
        """Some line is wider than the view (and wrap is off): the status line says so."""
        return not self._wrap and self._width > self.scrollable_content_region.width > 0

    def _post_status(self) -> None:
        key = (self.paused, self.following, self.unseen, self.row_count, self.line_count, self.dropped,
               self._filter, self._filter_inverse, self._search, self._current, self.match_count, self._wrap,
               len(self._held), self.lines_cut)
        if key != self._status_key:
            self._status_key = key
            self.post_message(self.StatusChanged(self))

    # ------------------------------------------------------------------ save

    def save(self, path, *, overwrite: bool = False) -> int:
        """Write the shown lines (prefixed) to ``path``; returns how many.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
            OSError: it cannot be written.
        """
        from pathlib import Path

        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = self.shown_lines()
        with open(target, "w" if overwrite else "x", encoding="utf-8") as fh:
            for ln in lines:
                fh.write(plain_line(ln))
                fh.write("\n")
        return len(lines)


def _rows_for(line: LogLine, width: int) -> int:
    length = cell_len(line_prefix(line)) + cell_len(line.text.expandtabs())
    return max(1, -(-length // width))


__all__ = ["LogView", "line_prefix", "plain_line"]
