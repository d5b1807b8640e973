"""The Tekton matrix sweep screen: a PipelineRun file, how to run its matrix, launch.

Reached from the runs list (``m``) and the command palette. The user gives a
PipelineRun YAML path; the screen shows its matrix task, each parameter with
its levels and the combination count, and offers the same choice as
``sweepdeck tekton run-pr``: run as is, unroll parameters (picked in the
table), full expansion with at most N at once (barrier or sliding window),
or unroll + N. A preview line says what that makes ("12 tasks, each a matrix
of 3, one after another"). Launch checks the cluster, then goes through the
app's one launch path (:meth:`tui.app.SweepdeckApp.launch_spec` with a
:class:`~backends.tekton.launch_matrix.MatrixLaunch`) to the run monitor, whose progress
shows done/total.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, DataTable, Header, Input, Label, RadioButton, RadioSet, Select, Static

from backends.tekton.launch_matrix import MODES, MatrixFile, MatrixLaunch, MatrixPlan, matrix_spec
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.widgets.footer import KeyFooter

if TYPE_CHECKING:
    from backends.base import Check


def _error_text(exc: SweepdeckError) -> Text:
    text = Text("✗ ", style="bold")
    text.append(exc.message, style="bold")
    if exc.hint:
        text.append("  " + exc.hint)
    return text


def _levels(values: list[Any], width: int = 34) -> str:
    text = ", ".join(str(v) for v in values)
    return text if len(text) <= width else text[: width - 1] + "…"


class MarkedRadioButton(RadioButton):
    """A radio button whose mark is a glyph, not only a colour (reads on a monochrome terminal)."""

    def render(self):
        self.BUTTON_INNER = "●" if self.value else " "
        return super().render()


class MarkedCheckbox(Checkbox):
    """A checkbox that shows X only when checked (not only a colour)."""

    def render(self):
        self.BUTTON_INNER = "X" if self.value else " "
        return super().render()


class ParamTable(DataTable):
    """The matrix parameters; space (or enter) marks the highlighted one to unroll."""

    BINDINGS = keys.bindings("matrix_params")

    def action_toggle_unroll(self) -> None:
        self.screen.toggle_unroll()  # type: ignore[attr-defined]  # the MatrixScreen


class MatrixScreen(Screen):
    """Launch a Tekton matrix PipelineRun, as is or with limited parallelism.

    Args:
        path: A PipelineRun file to load at once (else the user types one).
    """

    SCOPE = "matrix"
    FOOTER = ("matrix",)
    BINDINGS = keys.bindings("matrix")

    def __init__(self, path: str = "") -> None:
        super().__init__()
        self.initial_path = path
        self.matrix: MatrixFile | None = None
        self.unroll: list[str] = []
        self.checking = False
        self.checks: list[Check] | None = None

    # --------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="matrix-body"):
            with Horizontal(id="matrix-file-row", classes="matrix-row"):
                yield Label("PipelineRun file", classes="matrix-label")
                yield Input(self.initial_path, placeholder="path to a PipelineRun with a matrix task, then enter",
                            id="matrix-path", compact=True)
            yield Static("", id="matrix-error")
            with Vertical(id="matrix-loaded"):
                yield Static("", id="matrix-summary")
                table = ParamTable(id="matrix-params", cursor_type="row")
                table.add_columns("Unroll", "Parameter", "Levels", "Values")
                yield table
                with RadioSet(id="matrix-mode"):
                    for i, (mode, label) in enumerate(MODES):
                        yield MarkedRadioButton(label, value=i == 0, id=f"mode-{mode}", compact=True)
                with Horizontal(id="matrix-limit-row", classes="matrix-row"):
                    yield Label("N at once", classes="matrix-label")
                    yield Input("4", id="matrix-limit", compact=True, type="integer")
                    yield MarkedCheckbox("sliding window (else barrier batches)", id="matrix-sliding", compact=True)
                with Horizontal(id="matrix-target-row", classes="matrix-row"):
                    yield Label("Profile", classes="matrix-label")
                    yield Select([], id="matrix-profile", allow_blank=True, compact=True, prompt="(no tekton profile)")
                    yield Label("Namespace", classes="matrix-label-short")
                    yield Input("", id="matrix-namespace", compact=True, placeholder="namespace")
                yield Static("", id="matrix-preview")
                yield Static("", id="matrix-checks")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = "Tekton matrix sweep"
        self.query_one("#matrix-loaded").display = False
        self._fill_profiles()
        self.show_error(None)
        box = self.query_one("#matrix-path", Input)
        box.focus()
        if self.initial_path:
            self.load(self.initial_path)

    def key_for(self, binding_id: str) -> str:
        return keys.display_key(keys.effective_key(keys.BY_ID[binding_id], getattr(self.app, "user_keys", {})))

    def _tekton_profiles(self) -> list[tuple[str, Any]]:
        settings = getattr(self.app, "settings", None)
        profiles = getattr(settings, "profiles", {}) or {}
        return [(name, prof) for name, prof in sorted(profiles.items()) if prof.backend == "tekton"]

    def _fill_profiles(self) -> None:
        select = self.query_one("#matrix-profile", Select)
        profiles = self._tekton_profiles()
        select.set_options([(name, name) for name, _ in profiles])
        if profiles:
            settings = self.app.settings  # type: ignore[attr-defined]  # a SweepdeckApp
            default = settings.default_profile if settings.default_profile in dict(profiles) else profiles[0][0]
            select.value = default
            self._profile_changed()

    # ---------------------------------------------------------------- state

    def show_error(self, exc: SweepdeckError | None) -> None:
        box = self.query_one("#matrix-error", Static)
        # once a file is loaded the preview line carries the hints: 80x24 has no line to spare
        box.display = exc is not None or self.matrix is None
        if exc is None:
            box.update(Text(f"Enter loads the file · {self.key_for('matrix_go')}: launch · "
                            f"{self.key_for('matrix_close')}: back", style="dim"))
            box.remove_class("error")
        else:
            box.update(_error_text(exc))
            box.add_class("error")

    def load(self, path: str) -> bool:
        """Read the PipelineRun file; show its matrix, or say inline what is wrong with it."""
        try:
            matrix = MatrixFile.load(path)
        except SweepdeckError as exc:
            self.matrix = None
            self.query_one("#matrix-loaded").display = False
            self.show_error(exc)
            return False
        self.matrix = matrix
        self.unroll = [u for u in self.unroll if u in {p.name for p in matrix.params}]
        self.checks = None
        self.show_error(None)
        model = matrix.param("model-id", "model", "modelName", "model_name")
        summary = Text()
        summary.append("Matrix task ", style="bold")
        summary.append(matrix.describe(), style="bold")
        summary.append(f" · PipelineRun {matrix.name or '(no name)'}")
        if model:
            summary.append(f" · model {model}")
        self.query_one("#matrix-summary", Static).update(summary)
        self.query_one("#matrix-loaded").display = True
        self.fill_params()
        self.update_preview()
        return True

    def fill_params(self) -> None:
        table = self.query_one("#matrix-params", DataTable)
        row = table.cursor_row
        table.clear()
        assert self.matrix is not None
        for p in self.matrix.params:
            mark = Text("[x]" if p.name in self.unroll else "[ ]")  # Text: "[x]" is not markup
            table.add_row(mark, p.name, str(len(p.values)), _levels(p.values), key=p.name)
        if self.matrix.includes:
            table.add_row("", "(include)", str(self.matrix.includes), "extra combinations / params", key="(include)")
        table.styles.height = min(table.row_count, 6) + 1
        if table.row_count:
            table.move_cursor(row=min(max(row, 0), table.row_count - 1))

    def toggle_unroll(self) -> None:
        """Mark / unmark the highlighted parameter for unrolling (and pick an unroll mode)."""
        if self.matrix is None or not self.matrix.params:
            return
        table = self.query_one("#matrix-params", DataTable)
        if not (0 <= table.cursor_row < len(self.matrix.params)):
            return
        name = self.matrix.params[table.cursor_row].name
        if name in self.unroll:
            self.unroll.remove(name)
        else:
            # keep the file's parameter order: it is the order of the unrolled tasks
            order = [p.name for p in self.matrix.params]
            self.unroll = sorted(self.unroll + [name], key=order.index)
        if self.unroll and self.mode in ("as_is", "limit"):
            self._set_mode("unroll" if self.mode == "as_is" else "unroll_limit")
        self.fill_params()
        self.update_preview()

    @property
    def mode(self) -> str:
        radio = self.query_one("#matrix-mode", RadioSet)
        index = radio.pressed_index
        return MODES[index][0] if 0 <= index < len(MODES) else "as_is"

    def _set_mode(self, mode: str) -> None:
        self.query_one(f"#mode-{mode}", RadioButton).value = True

    def plan(self) -> MatrixPlan:
        """The choice on screen.

        Raises:
            SweepdeckError: N is not a whole number.
        """
        mode = self.mode
        limit = None
        if mode in ("limit", "unroll_limit"):
            text = self.query_one("#matrix-limit", Input).value.strip()
            if text:
                try:
                    limit = int(text)
                except ValueError:
                    raise SweepdeckError(f"N must be a whole number, not {text!r}.") from None
        return MatrixPlan(mode, tuple(self.unroll), limit, self.query_one("#matrix-sliding", Checkbox).value)  # type: ignore[arg-type]  # the mode is one of MatrixPlan's literals

    def update_preview(self) -> None:
        if self.matrix is None:
            return
        mode = self.mode
        uses_limit = mode in ("limit", "unroll_limit")
        self.query_one("#matrix-limit", Input).disabled = not uses_limit
        self.query_one("#matrix-sliding", Checkbox).disabled = not uses_limit
        self.query_one("#matrix-params").set_class(mode not in ("unroll", "unroll_limit"), "inactive")
        box = self.query_one("#matrix-preview", Static)
        try:
            preview = self.plan().preview(self.matrix)
        except SweepdeckError as exc:
            box.update(_error_text(exc))
            box.add_class("error")
            return
        box.remove_class("error")
        text = Text("→ ", style="bold")
        text.append(preview, style="bold")
        hints = [f"{self.key_for('matrix_go')}: launch"]
        if mode in ("unroll", "unroll_limit") or not self.unroll:
            hints.insert(0, f"{self.key_for('matrix_unroll')}: unroll")
        text.append("  (" + " · ".join(hints) + ")", style="dim")
        box.update(text)

    # --------------------------------------------------------------- events

    @on(Input.Submitted, "#matrix-path")
    def _path_entered(self, event: Input.Submitted) -> None:
        event.stop()
        if self.load(event.value) and self.matrix is not None and self.matrix.params:
            self.query_one("#matrix-params").focus()

    @on(RadioSet.Changed, "#matrix-mode")
    @on(Input.Changed, "#matrix-limit")
    @on(Checkbox.Changed, "#matrix-sliding")
    def _choice_changed(self) -> None:
        self.checks = None
        self.query_one("#matrix-checks", Static).update("")
        self.update_preview()

    @on(DataTable.RowSelected, "#matrix-params")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.toggle_unroll()

    @on(Select.Changed, "#matrix-profile")
    def _profile_changed(self) -> None:
        select = self.query_one("#matrix-profile", Select)
        profiles = dict(self._tekton_profiles())
        prof = profiles.get(select.value) if isinstance(select.value, str) else None
        if prof is not None:
            self.query_one("#matrix-namespace", Input).value = prof.get("namespace") or ""

    def action_close(self) -> None:
        self.app.pop_screen()

    # --------------------------------------------------------------- launch

    def _target(self) -> tuple[str, str]:
        select = self.query_one("#matrix-profile", Select)
        if not self._tekton_profiles():
            raise SweepdeckError("No tekton profile in your config.",
                                 "Add one: profiles: {lab: {backend: tekton, namespace: NS, kubeconfig: PATH}}")
        if not isinstance(select.value, str):
            raise SweepdeckError("Choose a tekton profile.")
        namespace = self.query_one("#matrix-namespace", Input).value.strip()
        if not namespace:
            raise SweepdeckError("Give the namespace to run in.")
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
            raise SweepdeckError(f"Namespace {namespace!r} is not a valid Kubernetes name.")
        return select.value, namespace

    async def action_launch(self) -> None:
        """Build the PipelineRun as chosen, check the cluster (worker), then launch."""
        if self.checking:
            return
        # enter in the path box is the natural first step; f8 with a typed path loads it too
        if self.matrix is None and not self.load(self.query_one("#matrix-path", Input).value):
            return
        assert self.matrix is not None
        try:
            pr = self.plan().pipelinerun(self.matrix)
            profile, namespace = self._target()
            tekton = self.app.backend_for("tekton", profile)  # type: ignore[attr-defined]  # a SweepdeckApp
            spec = matrix_spec(self.matrix, profile=profile, namespace=namespace, store=self.app.store)  # type: ignore[attr-defined]  # a SweepdeckApp
        except SweepdeckError as exc:
            self.query_one("#matrix-checks", Static).update(_error_text(exc))
            return
        self.checking = True
        self.query_one("#matrix-checks", Static).update(Text("… checking the cluster", style="bold"))
        self._check_and_launch(spec, MatrixLaunch(tekton, pr, namespace))

    @work(exclusive=True, group="matrix-launch", exit_on_error=False)
    async def _check_and_launch(self, spec, launcher: MatrixLaunch) -> None:
        from backends.base import Check

        try:
            checks = list(await launcher.preflight(spec))
        except SweepdeckError as exc:
            checks = [Check("Cluster", "fail", exc.message, exc.hint)]
        except Exception as exc:  # a bug must not kill the screen
            checks = [Check("Cluster", "fail", f"{type(exc).__name__}: {exc}", "See the log; this is a bug.")]
        self.checking = False
        self.checks = checks
        failed = [c for c in checks if c.status == "fail"]
        box = self.query_one("#matrix-checks", Static)
        if failed:
            text = Text(f"✗ BLOCKED ({len(failed)} of {len(checks)} checks failed):", style="bold")
            for c in failed:
                text.append(f"\n  ✗ {c.name}: {c.detail}")
                if c.fix:
                    text.append(f" — {c.fix}")
            box.update(text)
            return
        box.update(Text(f"✓ {len(checks)} checks passed; launching", style="bold"))
        try:
            self.app.launch_spec(spec, backend=launcher)  # type: ignore[attr-defined]  # a SweepdeckApp
        except SweepdeckError as exc:
            box.update(_error_text(exc))


__all__ = ["MatrixScreen"]
