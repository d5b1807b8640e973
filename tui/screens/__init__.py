"""The app's screens (runs, wizard, dialogs; the monitor and recovery dialog)."""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text


def themed(app: Any, text: str, style: str = "") -> Text:
    """Rich ``Text`` whose ``$variables`` (``$warning``, ``$success``...) come from the app's theme.

    Table cells are Rich text (their widths are measured right); the colours
    still follow the current Textual theme, and NO_COLOR strips them.
    """
    variables = getattr(app, "theme_variables", None) or {}
    parts = []
    for token in style.split():
        if token.startswith("$"):
            value = variables.get(token[1:], "")
            if value.startswith("#"):
                parts.append(value)
        else:
            parts.append(token)
    try:
        parsed = Style.parse(" ".join(parts))
    except Exception:  # an unusual theme value: fall back to the words only
        parsed = Style.parse(" ".join(p for p in parts if not p.startswith("#")))
    return Text(text, style=parsed)
