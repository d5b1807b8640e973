"""Widgets of the run monitor (log view, status, metrics, endpoint)."""

from tui.widgets.endpoint import EndpointPanel
from tui.widgets.logview import LogView
from tui.widgets.metrics import MetricsPanel
from tui.widgets.status import StatusView

__all__ = ["EndpointPanel", "LogView", "MetricsPanel", "StatusView"]
