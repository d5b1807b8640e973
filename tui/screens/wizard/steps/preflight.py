"""Step 5, Pre-flight: the backend's checks; failures block, warnings need an override, fixes said the app's way."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, LoadingIndicator, Static

from config.errors import SweepdeckError
from tui import bindings as keys
from tui.screens import themed
from tui.screens.dialogs import ConfirmDialog
from tui.screens.wizard.steps.base import Step, clip
from tui.screens.wizard.steps.review import ReviewStep

if TYPE_CHECKING:
    from backends.base import Check, Remedy


@dataclass(frozen=True, slots=True)
class NamedSetting:
    """A setting a pre-flight fix names as a command-line flag (``--tp 1``)."""

    path: str  # field path in the spec (engine.tp)
    label: str  # what the review calls it (TP)
    value: str | None  # the value the fix suggests, if it gives one


#: Command-line flags a backend's fix text may name → (field path, the review's word for it).
FIX_FLAGS = {
    "--tp": ("engine.tp", "TP"),
    "--tensor-parallel-size": ("engine.tp", "TP"),
    "--max-model-len": ("engine.max_model_len", "max_model_len"),
    "--max-num-seqs": ("engine.max_num_seqs", "max_num_seqs"),
    "--max-num-batched-tokens": ("engine.max_num_batched_tokens", "max_num_batched_tokens"),
    "--image": ("engine.image", "the image"),
}
_FLAG_IN_TEXT = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(f) for f in FIX_FLAGS) + r")(?:[ =](\S+?))?(?=[\s.,;)]|$)"
)


def in_app_terms(fix: str) -> tuple[str, NamedSetting | None]:
    """A backend's fix text said the app's way: ``Use --tp 1`` → ``Use TP 1``, and the setting it names.

    Backends write their fixes for the command line (``sweepdeck run --tp 1``);
    in the app the same change is made in the vLLM review, so the flag is
    replaced by the review's name for the setting and the pre-flight step
    offers a key that goes there.
    """
    match = _FLAG_IN_TEXT.search(fix)
    if match is None:
        return fix, None
    path, label = FIX_FLAGS[match.group(1)]
    value = match.group(2)
    said = f"{label} {value}" if value else label
    return fix[: match.start()] + said + fix[match.end():], NamedSetting(path, label, value)


CHECK_WORDS = {"pass": ("✓", "PASS"), "warn": ("!", "WARN"), "fail": ("✗", "FAIL")}


class PreflightStep(Step):
    """Runs backend.preflight(spec) in a worker; failures block, warnings need an override."""

    TITLE = "Pre-flight"
    SCOPE = "preflight"
    BINDINGS = keys.bindings("preflight")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.checks: list[Check] | None = None
        self.override = False
        self.running = False
        self._checked_spec = None

    def compose(self) -> ComposeResult:
        yield LoadingIndicator(id="preflight-loading")
        table: DataTable = DataTable(id="preflight-table", cursor_type="row")
        table.add_columns("Result", "Check", "Detail")
        yield table
        yield Static("", id="preflight-fix")
        yield Static("", id="preflight-verdict")

    def activate(self) -> None:
        spec = self.state.need_spec()
        if self.checks is None or self._checked_spec is not spec:
            self.run_checks()
        self.query_one("#preflight-table", DataTable).focus()

    def action_rerun(self) -> None:
        self.run_checks()

    def run_checks(self) -> None:
        self.checks = None
        self.override = False
        self.running = True
        self._checked_spec = self.state.spec
        self.query_one("#preflight-loading").display = True
        self.query_one("#preflight-table", DataTable).clear()
        self.query_one("#preflight-verdict", Static).update("Running the pre-flight checks…")
        self.query_one("#preflight-fix", Static).update("")
        self._preflight(self.state.need_spec())

    @work(exclusive=True, group="preflight", exit_on_error=False)
    async def _preflight(self, spec) -> None:
        from backends.base import Check
        from backends.preflight import run_preflight

        try:
            app: Any = self.app
            backend = app.backend_for(spec.backend, spec.profile, demo=self.state.demonstration())
            checks = await run_preflight(backend, spec, app.store)
        except SweepdeckError as exc:
            checks = [Check("Backend ready", "fail", exc.message, exc.hint)]
        except Exception as exc:  # a backend bug must not kill the wizard
            checks = [Check("Backend ready", "fail", f"{type(exc).__name__}: {exc}", "See the log; this is a bug.")]
        if spec is not self.state.spec:
            return
        self.show_checks(checks)

    def show_checks(self, checks: list[Check]) -> None:
        self.checks = checks
        self.running = False
        self.query_one("#preflight-loading").display = False
        self._fill_table()
        self.update_verdict()
        self.show_fix()

    def _fill_table(self) -> None:
        """The checks, each on one line that fits the terminal: a long detail ends in … here and
        is shown whole under the table for the highlighted check (nothing scrolls sideways)."""
        table = self.query_one("#preflight-table", DataTable)
        row = table.cursor_row if table.row_count else 0
        checks = self.checks or []
        name_width = min(28, max([len(c.name) for c in checks] + [5]))
        detail_width = max(20, (self.app.size.width or 120) - 8 - name_width - 3 * 2 - 2)
        table.clear(columns=True)
        table.add_column("Result", width=6)
        table.add_column("Check", width=name_width)
        table.add_column("Detail", width=detail_width)
        for i, check in enumerate(checks):
            icon, word = CHECK_WORDS.get(check.status, ("?", check.status.upper()))
            style = {"pass": "$success", "warn": "bold $warning", "fail": "bold $error"}.get(check.status, "")
            table.add_row(themed(self.app, f"{icon} {word}", style), clip(check.name, name_width),
                          clip(check.detail.replace("\n", " "), detail_width), key=str(i))
        if checks:
            table.move_cursor(row=min(row, len(checks) - 1))

    def on_resize(self) -> None:
        if self.checks:
            self._fill_table()

    @on(DataTable.RowHighlighted, "#preflight-table")
    def _highlight(self) -> None:
        self.show_fix()

    @on(DataTable.RowSelected, "#preflight-table")
    async def _select(self, event: DataTable.RowSelected) -> None:
        # enter launches here, as it goes forward on every other step (when the checks allow it)
        event.stop()
        await self.wizard.action_next_step()

    def _ordered(self) -> list[Check]:
        """The checks, the highlighted one first."""
        if not self.checks:
            return []
        table = self.query_one("#preflight-table", DataTable)
        first = self.checks[min(max(table.cursor_row, 0), len(self.checks) - 1)]
        return [first] + [c for c in self.checks if c is not first]

    def remedy_check(self) -> Check | None:
        """The check the remedy key acts on: the highlighted one if it offers a remedy, else the first that does."""
        if self.running:
            return None
        return next((c for c in self._ordered() if c.status != "pass" and c.remedy is not None), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The footer shows the remedy and edit keys only while there is something they would do.
        if action == "remedy":
            return self.remedy_check() is not None
        if action == "edit_setting":
            return self.setting_check() is not None
        return True

    def show_fix(self) -> None:
        """The highlighted check in full (its detail wrapped, so nothing is cut off), its fix in the
        app's terms, then the fixes of the other checks that did not pass; the remedy on offer first."""
        box = self.query_one("#preflight-fix", Static)
        self.wizard.refresh_bindings()
        if not self.checks:
            box.update("")
            return
        ordered = self._ordered()
        text = Text()
        offered = self.remedy_check()
        if offered is not None and offered.remedy is not None:
            # First line: the box is short at 80x24 and this is the one thing to press.
            text.append(f"{self.key_for('apply_remedy')}: {offered.remedy.label}", style="bold reverse")
            text.append(f"  (fixes “{offered.name}”; asks first)")
        first = ordered[0]
        icon, word = CHECK_WORDS.get(first.status, ("?", first.status.upper()))
        if text:
            text.append("\n")
        text.append(f"{icon} {first.name}: ", style="bold")
        text.append(first.detail)
        for check in ordered:
            if check.status == "pass" or not check.fix:
                continue
            icon, word = CHECK_WORDS.get(check.status, ("?", check.status.upper()))
            text.append("\n")
            text.append(f"FIX {icon} {check.name}: ", style="bold")
            fix, setting = in_app_terms(check.fix)
            text.append(fix)
            if setting is not None and check is self.setting_check():
                key = self.key_for("edit_from_check")
                text.append(f"  [{key}: change {setting.label} in the review]", style="bold")
        box.update(text)

    def setting_check(self) -> Check | None:
        """The check the edit key acts on: the highlighted one if its fix names a setting, else the first that does."""
        if self.running:
            return None
        return next((c for c in self._ordered() if c.status != "pass" and c.fix and in_app_terms(c.fix)[1]), None)

    def action_edit_setting(self) -> None:
        """Go back to the vLLM review with the setting the check's fix names, its editor open on the suggested value."""
        check = self.setting_check()
        setting = in_app_terms(check.fix)[1] if check is not None else None
        if setting is None:
            self.app.notify("No check here names a setting to change.")
            return
        wizard = self.wizard
        wizard.go(wizard.step_index("review"))
        wizard.query_one(ReviewStep).edit_path(setting.path, setting.value)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks or [] if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks or [] if c.status == "warn"]

    def update_verdict(self) -> None:
        verdict = self.query_one("#preflight-verdict", Static)
        launch = self.key_for("launch")
        if self.checks is None:
            verdict.update("Running the pre-flight checks…")
        elif self.failures and self.remedy_check() is not None:
            verdict.update(Text(
                f"✗ BLOCKED: {len(self.failures)} check(s) failed. "
                f"Press {self.key_for('apply_remedy')} to let sweepdeck fix it, "
                f"or fix them yourself and press {self.key_for('rerun_preflight')} to re-run.",
                style="bold",
            ))
        elif self.failures:
            verdict.update(Text(
                f"✗ BLOCKED: {len(self.failures)} check(s) failed. Fix them and press "
                f"{self.key_for('rerun_preflight')} "
                "to re-run (or go back and change the experiment).",
                style="bold",
            ))
        elif self.warnings and not self.override:
            verdict.update(Text(
                f"! {len(self.warnings)} warning(s). "
                f"Press {self.key_for('override_warnings')} to override them and launch, "
                f"or fix them and press {self.key_for('rerun_preflight')}.",
                style="bold",
            ))
        elif self.warnings:
            verdict.update(Text(f"! WARNINGS OVERRIDDEN. Press enter or {launch} to launch.", style="bold"))
        else:
            verdict.update(Text(f"✓ ALL {len(self.checks)} CHECKS PASSED. Press enter or {launch} to launch.",
                                style="bold"))

    def action_remedy(self) -> None:
        """Offer the remedy of :meth:`remedy_check`; it runs only after a yes."""
        check = self.remedy_check()
        if check is None or check.remedy is None:
            self.app.notify("No failing check here has a fix sweepdeck can apply.")
            return
        remedy = check.remedy
        spec = self.state.need_spec()

        def answered(yes: bool | None) -> None:
            if yes:
                self._apply_remedy(spec, remedy)

        self.app.push_screen(ConfirmDialog(remedy.label, remedy.question), answered)

    @work(exclusive=True, group="preflight-remedy", exit_on_error=False)
    async def _apply_remedy(self, spec, remedy: Remedy) -> None:
        """Carry out a confirmed remedy, say what happened, then run the checks again."""
        from backends.base import apply_remedy

        self.running = True  # launch stays blocked until the checks ran again
        self.refresh_bindings()
        self.query_one("#preflight-verdict", Static).update(Text(f"… {remedy.label}…", style="bold"))
        try:
            backend = self.app.backend_for(spec.backend, spec.profile)  # type: ignore[attr-defined]  # a SweepdeckApp
            message = await apply_remedy(backend, spec, remedy)
        except SweepdeckError as exc:
            self.app.notify(exc.message + (f"\n{exc.hint}" if exc.hint else ""), title=f"{remedy.label}: not done",
                            severity="error", timeout=10)
        except Exception as exc:  # a backend bug: say it, keep the wizard usable
            self.app.notify(f"{type(exc).__name__}: {exc}", title=f"{remedy.label}: failed",
                            severity="error", timeout=10)
        else:
            self.app.notify(message or f"{remedy.label}: done.", title=remedy.label)
        if spec is self.state.spec:
            self.run_checks()
        else:
            self.running = False

    def action_override(self) -> None:
        if self.failures:
            self.app.notify("Failed checks cannot be overridden; fix them first.", severity="error")
            return
        if not self.warnings:
            self.app.notify("No warnings to override.")
            return
        self.override = True
        self.update_verdict()

    def blocked(self) -> str:
        """Why launch is not allowed now ('' when it is)."""
        if self.running or self.checks is None:
            return "The pre-flight checks are still running."
        if self._checked_spec is not self.state.spec:
            return "The experiment changed since the checks ran; press r to re-run them."
        if self.failures:
            return f"{len(self.failures)} pre-flight check(s) failed: launch is blocked."
        if self.warnings and not self.override:
            return f"{len(self.warnings)} warning(s): press {self.key_for('override_warnings')} to override them first."
        return ""

    async def action_launch(self) -> None:
        await self.wizard.action_next_step()

    async def commit(self) -> bool:
        reason = self.blocked()
        if reason:
            self.wizard.set_status(Text("✗ " + reason), error=True)
            return False
        return True
