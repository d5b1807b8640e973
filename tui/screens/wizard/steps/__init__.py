"""The wizard's steps, one widget each, shown one at a time; one module per step.

Each step reads and changes the shared :class:`~tui.screens.wizard.state.WizardState`;
the screen asks a step to :meth:`Step.commit` before moving on (commit says
what blocks). :mod:`.base` holds what they share.
"""

from tui.screens.wizard.steps.base import Step, clip, error_text
from tui.screens.wizard.steps.model import ModelStep
from tui.screens.wizard.steps.preflight import CHECK_WORDS, FIX_FLAGS, NamedSetting, PreflightStep, in_app_terms
from tui.screens.wizard.steps.review import STATUS_COLOURS, EditInput, ReviewStep
from tui.screens.wizard.steps.summary import SummaryStep
from tui.screens.wizard.steps.workload import CUSTOM_FIELDS, VALUES_ROW, WorkloadStep

__all__ = [
    "CHECK_WORDS",
    "CUSTOM_FIELDS",
    "FIX_FLAGS",
    "STATUS_COLOURS",
    "VALUES_ROW",
    "EditInput",
    "ModelStep",
    "NamedSetting",
    "PreflightStep",
    "ReviewStep",
    "Step",
    "SummaryStep",
    "WorkloadStep",
    "clip",
    "error_text",
    "in_app_terms",
]
