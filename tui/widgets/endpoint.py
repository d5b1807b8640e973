"""The endpoint pane: where the model is served and whether it answers."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from backends.events import Endpoint


def endpoint_text(endpoint: Endpoint | None, ok: Style | str = "bold green", bad: Style | str = "bold red",
                  *, ended: bool = False) -> Text:
    """Reachability (icon and word) and URL; model and detail on the next line.

    Args:
        endpoint: The latest Endpoint event, if any.
        ok: Style of "reachable" (the panel passes the theme's success colour).
        bad: Style of "unreachable" (the theme's error colour).
        ended: The run has ended: its server is gone whatever the last check said.
    """
    if endpoint is None:
        return Text("◌ no endpoint (the run ended)" if ended else "◌ no endpoint yet", style="dim")
    text = Text()
    if ended:
        text.append("◌ closed ", style="bold")
        text.append(endpoint.url, style="dim")
        text.append("\n" + " · ".join(p for p in (endpoint.model, "the run ended") if p), style="dim")
        return text
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
        self.ended = False

    def show(self, endpoint: Endpoint | None, *, ended: bool | None = None) -> None:
        """Show ``endpoint``; ``ended`` (kept when None) says the run is over and its server gone."""
        self.endpoint = endpoint
        if ended is not None:
            self.ended = ended
        self.set_class(endpoint is not None and endpoint.reachable and not self.ended, "-reachable")
        self.update(endpoint_text(endpoint, self.get_component_rich_style("endpoint--ok"),
                                  self.get_component_rich_style("endpoint--bad"), ended=self.ended))

    def end(self) -> None:
        """The run ended: whatever the last check said, nothing serves at its address now."""
        self.show(self.endpoint, ended=True)
