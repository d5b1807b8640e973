"""The endpoint pane: where the model is served and whether it answers."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from backends.events import Endpoint


def endpoint_text(endpoint: Endpoint | None, ok: Style | str = "bold green", bad: Style | str = "bold red") -> Text:
    """Reachability (icon and word) and URL; model and detail on the next line.

    Args:
        endpoint: The latest Endpoint event, if any.
        ok: Style of "reachable" (the panel passes the theme's success colour).
        bad: Style of "unreachable" (the theme's error colour).
    """
    if endpoint is None:
        return Text("◌ no endpoint yet", style="dim")
    text = Text()
    if endpoint.reachable:
        text.append("✔ reachable ", style=ok)
    else:
        text.append("✘ unreachable ", style=bad)
    text.append(endpoint.url, style="bold")
    more = " · ".join(p for p in (endpoint.model, endpoint.detail) if p)
    if more:
        text.append("\n" + more, style="dim")
    return text


class EndpointPanel(Static):
    """Shows the latest Endpoint event."""

    COMPONENT_CLASSES = {"endpoint--ok", "endpoint--bad"}

    DEFAULT_CSS = """
    EndpointPanel {
        height: auto;
        & > .endpoint--ok { color: $text-success; text-style: bold; }
        & > .endpoint--bad { color: $text-error; text-style: bold; }
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(endpoint_text(None), id=id, classes=classes)
        self.endpoint: Endpoint | None = None

    def show(self, endpoint: Endpoint | None) -> None:
        self.endpoint = endpoint
        self.set_class(endpoint is not None and endpoint.reachable, "-reachable")
        self.update(endpoint_text(endpoint, self.get_component_rich_style("endpoint--ok"),
                                  self.get_component_rich_style("endpoint--bad")))
