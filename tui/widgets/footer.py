"""The footer: a screen's essential keys always, the others while they fit.

Textual's own footer lays every binding out in a row and lets the row run off
the right edge, so at 80 columns the keys that matter most (help, quit, stop
the run) were the ones cut off, and the command-palette key docked on the
right was drawn over what overflowed. :class:`KeyFooter` picks what to show:

1. the screen's essential bindings (:func:`essential_ids`, from
   :data:`tui.bindings.ESSENTIAL` by the screen's ``FOOTER`` names), in that
   order — these are never dropped;
2. then every other binding the screen shows, in the screen's order, for as
   long as the row has room.

Everything left out is in the help dialog (``?``), which lists every binding.
A binding that also answers to a key of the focused widget (the wizard's
Next is ``enter`` on every step as well as ``f8``) shows both keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from tui import bindings as keys

#: Columns the command-palette key takes on the right (border, padding, "^p palette").
PALETTE_WIDTH = 14
#: Below this width the footer is compact and the palette key is one of the others (not docked on the right).
NARROW = 100
#: Textual's key glyphs that read as something else in a footer.
KEY_NAMES = {"⏎": "enter"}


@dataclass(frozen=True, slots=True)
class FooterItem:
    """One key as the footer shows it."""

    binding: Binding
    key: str
    description: str
    enabled: bool
    tooltip: str

    @property
    def id(self) -> str:
        return self.binding.id or ""

    def width(self, compact: bool = False) -> int:
        """Columns this item takes.

        Textual's FooterKey pads the key with a space on each side and the
        words with one after; in the compact style the key has no padding, the
        words one space before, and each key a margin of one.
        """
        words = len(self.description)
        if compact:
            return len(self.key) + (words + 1 if words else 0) + 1
        return len(self.key) + 2 + (words + 1 if words else 0)


def essential_ids(screen: Any) -> tuple[str, ...]:
    """The binding ids ``screen`` must always show, most important first.

    A screen names its sets in ``FOOTER`` (``("monitor",)``) or answers
    ``footer_essential()`` (the wizard's depend on the step).
    """
    ask = getattr(screen, "footer_essential", None)
    if callable(ask):
        return tuple(ask())
    names = getattr(screen, "FOOTER", ())
    out: list[str] = []
    for name in names:
        for bid in keys.ESSENTIAL.get(name, ()):
            if bid not in out:
                out.append(bid)
    return tuple(out)


def choose(
    items: list[FooterItem], essential: Iterable[str], width: int, compact: bool = False
) -> tuple[list[FooterItem], list[FooterItem]]:
    """Which items fit in ``width`` columns: ``(shown, left out)``.

    The essential items come first, in the order given, and are always shown
    (with the key only, when even they do not fit with their words); the
    others follow in their own order while there is room.
    """
    by_id = {item.id: item for item in items}
    first = [by_id[bid] for bid in dict.fromkeys(essential) if bid in by_id]
    rest = [item for item in items if item not in first]
    used = sum(item.width(compact) for item in first)
    shown = list(first)
    if used > width:
        # Even the essentials do not fit with their words: keys only, the words in ?.
        shown = [FooterItem(i.binding, i.key, "", i.enabled, i.tooltip or i.description) for i in first]
        return shown, rest
    left_out = []
    for item in rest:
        if used + item.width(compact) <= width:
            shown.append(item)
            used += item.width(compact)
        else:
            left_out.append(item)
    return shown, left_out


def _editing(app: Any) -> bool:
    """A value editor has the focus: there enter applies the edit, so Next is its own key (f8)."""
    return bool(getattr(app.focused, "EDITOR", False))


def _candidates(screen: Any, essential: set[str]) -> list[tuple[Binding, bool, str]]:
    """The screen's active bindings, plus essential ones whose key the focused widget also binds.

    A table binds ``enter`` to "select the row", and selecting the row is what
    opens the run (or goes to the next step): the screen's binding for the same
    key is the one to name in the footer, though the table's wins the key.
    """
    active = screen.active_bindings
    out = [(b, enabled, tooltip) for _node, b, enabled, tooltip in active.values()]
    listed = {id(b) for b, _, _ in out}
    app = screen.app
    try:
        chain = screen._modal_binding_chain
    except Exception:  # a screen being torn down: what is active is enough
        return out
    for namespace, bindings_map in chain:
        for _key, bindings in bindings_map.key_to_bindings.items():
            for binding in bindings:
                if binding.id not in essential or id(binding) in listed:
                    continue
                winner = active.get(binding.key)
                if winner is not None and winner.binding.show:
                    continue  # the focused widget's own key, shown as itself (an editor's escape)
                state = app._check_action_state(binding.action, namespace)
                if state is False:
                    continue
                out.append((binding, bool(state), binding.tooltip))
                listed.add(id(binding))
    return out


class Key(FooterKey):
    """A footer key that reads ``esc Back`` in the compact style too (Textual's compact key runs
    the two together when the words' padding is not applied)."""

    def render(self) -> Text:
        if not self.compact:
            return super().render()
        text = Text.assemble(
            (self.key_display, self.get_component_rich_style("footer-key--key")),
            (f" {self.description}" if self.description else "",
             self.get_component_rich_style("footer-key--description")),
        )
        text.stylize_before(self.rich_style)
        return text


class KeyFooter(Footer):
    """A :class:`~textual.widgets.Footer` that never hides a screen's essential keys (see the module doc)."""

    DEFAULT_CSS = """
    KeyFooter {
        overflow-x: hidden;
    }
    """

    def __init__(self, *, at_once: bool = False, **kw: Any) -> None:
        """A footer; ``at_once``: with its keys from the first frame (see :meth:`compose`)."""
        super().__init__(**kw)
        self.at_once = at_once
        self.shown_ids: list[str] = []
        self.hidden_ids: list[str] = []
        self._width = 0
        self._composed: tuple | None = None  # what the keys were made from (recompose skips an unchanged set)
        self._planned: tuple | None = None  # the plan recompose worked out, for compose to use

    def items(self) -> list[FooterItem]:
        """Every binding the screen shows now, one per action, in the screen's order."""
        screen = self.screen
        app = self.app
        user_keys = getattr(app, "user_keys", {}) or {}
        describe = getattr(screen, "footer_description", None)
        essential = set(essential_ids(screen))
        by_action: dict[str, FooterItem] = {}
        for binding, enabled, tooltip in _candidates(screen, essential):
            if not (binding.show or binding.id in essential) or binding.action in by_action:
                continue
            if binding.key == app.COMMAND_PALETTE_BINDING and binding.action == "app.command_palette":
                continue
            spec = keys.BY_ID.get(binding.id or "")
            shown_key = KEY_NAMES.get(app.get_key_display(binding), app.get_key_display(binding))
            if spec is not None and spec.also and spec.id not in user_keys:
                # The one way forward the user sees (enter); in an editor, where enter applies the
                # edit, the binding's own first key (f8).
                first = keys.display_key(spec.key.split(",")[0])
                shown_key = first if _editing(app) else spec.also
            description = (describe(binding.id) if callable(describe) else None) or binding.description
            by_action[binding.action] = FooterItem(binding, shown_key, description, enabled, tooltip)
        return list(by_action.values())

    def _plan(self) -> tuple[int, bool, list[FooterItem], list[FooterItem], tuple[Binding, bool, str] | None]:
        """(width, compact, shown, left out, the palette key docked on the right) for the bindings now."""
        width = self.size.width or self.app.size.width
        narrow = width < NARROW
        items = self.items()
        palette = self._palette_binding()
        room = width
        if palette is not None and narrow:
            # One key among the others: shown when there is room, else in help (?).
            binding, enabled, tooltip = palette
            items.append(FooterItem(binding, self.app.get_key_display(binding), binding.description, enabled, tooltip))
            palette = None
        elif palette is not None:
            room -= PALETTE_WIDTH
        shown, left_out = choose(items, essential_ids(self.screen), room, compact=narrow)
        return width, narrow, shown, left_out, palette

    @staticmethod
    def _signature(plan: tuple) -> tuple:
        width, narrow, shown, left_out, palette = plan
        keys = tuple((i.binding.id, i.binding.key, i.binding.action, i.key, i.description, i.enabled, i.tooltip)
                     for i in shown)
        return width, narrow, keys, tuple(i.id for i in left_out), palette and (palette[0].key, palette[1], palette[2])

    async def recompose(self) -> None:
        """Make the keys again, unless they would come out the same.

        The screen's bindings "change" on every focus move and tab switch
        (Textual recomposes its footer each time); opening a screen did it four
        times, each unmounting and mounting every key and restyling it.
        """
        plan = self._plan() if (self._bindings_ready and self.is_attached and self._composed is not None
                                and self.children) else None
        if plan is not None and self._signature(plan) == self._composed:
            return
        self._planned = plan
        try:
            await super().recompose()
        finally:
            self._planned = None

    def compose(self) -> ComposeResult:
        """The keys that fit.

        Textual's footer is empty until the screen's first "bindings changed"
        signal, which comes after the screen's first frame: then every key is
        mounted, laid out and drawn in frames of their own. With ``at_once``
        the keys the screen has now are made with the screen; the signal still
        comes, and :meth:`recompose` makes them again only if they changed.
        """
        if not self._bindings_ready:
            if not self.at_once:
                return
            self.set_reactive(Footer._bindings_ready, True)
        plan = self._planned or self._plan()  # (recompose clears _planned once it has composed)
        width, narrow, shown, left_out, palette = plan
        self._width = width
        self.compact = narrow
        self._composed = self._signature(plan)
        self.shown_ids = [item.id or item.binding.action for item in shown]
        self.hidden_ids = [item.id or item.binding.action for item in left_out]
        for item in shown:
            yield Key(
                item.binding.key, item.key, item.description, item.binding.action,
                disabled=not item.enabled, tooltip=item.tooltip or item.description,
            ).data_bind(compact=Footer.compact)
        if palette is not None:
            binding, enabled, tooltip = palette
            yield FooterKey(
                binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                classes="-command-palette", disabled=not enabled, tooltip=binding.tooltip or binding.description,
            )

    def _palette_binding(self) -> tuple[Binding, bool, str] | None:
        if not (self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE):
            return None
        try:
            _node, binding, enabled, tooltip = self.screen.active_bindings[self.app.COMMAND_PALETTE_BINDING]
        except KeyError:
            return None
        return binding, enabled, tooltip

    def on_resize(self) -> None:
        if self.size.width != self._width and self._bindings_ready:
            self.call_after_refresh(self.recompose)

    def rendered_text(self) -> str:
        """The footer's keys and words as shown (for tests)."""
        return "  ".join(f"{k.key_display} {k.description}".strip() for k in self.query(FooterKey))


__all__ = ["FooterItem", "KeyFooter", "choose", "essential_ids"]
