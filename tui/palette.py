"""The command palette (ctrl+p): every action of the app by name.

Lists the app-wide actions from :mod:`tui.bindings`, plus every binding
active on the current screen (so screens built elsewhere, such as the run
monitor, appear without registering anything here). Each hit shows its key.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui import bindings as keys

# Names in the palette (the footer's short words are too terse out of context).
TITLES = {
    "quit": "Quit",
    "help": "Help: list every key",
    "quick_command": "Quick command",
    "show_runs": "Go to the runs list",
    "new_experiment": "New experiment",
    "open_run": "Open run",
    "attach_run": "Attach to run",
    "delete_run": "Delete run record",
    "filter_runs": "Filter runs",
    "refresh_runs": "Refresh runs",
    "matrix_sweep": "Tekton matrix sweep: launch a matrix PipelineRun",
    "matrix_go": "Matrix sweep: launch",
    "matrix_unroll": "Matrix sweep: unroll the highlighted parameter",
    "matrix_close": "Matrix sweep: close",
    "wizard_next": "Next step",
    "wizard_back": "Previous step",
    "filter_models": "Filter models",
    "custom_workload": "Custom workload",
    "preset_workload": "Preset workloads",
    "edit_value": "Edit value",
    "add_arg": "Add vLLM argument",
    "remove_arg": "Remove argument / undo change",
    "confirm_changes": "Confirm changes",
    "edit_id": "Change experiment id",
    "choose_backend": "Choose backend / profile",
    "rerun_preflight": "Re-run pre-flight checks",
    "override_warnings": "Override pre-flight warnings",
    "launch": "Launch",
    "apply_remedy": "Pre-flight: apply the offered fix",
    "edit_from_check": "Pre-flight: change the setting a check names, in the review",
    "sweep_reset_stale": "Reset stale configs (back to pending)",
    "sweep_next_section": "Sweep: next section",
    "sweep_previous_section": "Sweep: previous section",
    "sweep_toggle": "Show / hide the sweep pane",
    "sweep_open_group": "Drill into the failure group",
    "sweep_group_close": "Close the failure group",
    "sweep_group_reload": "Reload the failure group",
    "monitor_stop_now": "Stop the run at once (skip its clean-up steps)",
    "replay_run": "Replay the run in the monitor",
    "mark_run": "Mark the run for compare",
    "compare_runs": "Compare the marked runs",
    "results_list": "Results: every run's results",
    "results_list_open": "Open the run's results",
    "results_list_mark": "Mark for compare",
    "results_list_compare": "Compare the marked runs",
    "results_list_close": "Close the results list",
    "results_next_tab": "Results: next tab",
    "results_previous_tab": "Results: previous tab",
    "results_next_plot": "Results: next plot",
    "results_export": "Results: export as Markdown",
    "results_close": "Close the results",
}


class SweepdeckCommands(Provider):
    """Commands for the screen the palette was opened from."""

    def commands(self) -> Iterator[tuple[str, str, str, object]]:
        """``(name, help, key, callback)`` for every action available now."""
        screen = self.screen
        app = self.app
        user_keys = getattr(app, "user_keys", {})
        seen: set[str] = set()
        for spec in keys.KEYS:
            if not spec.palette or spec.scope != "app":
                continue
            seen.add(spec.action.removeprefix("app."))
            key = keys.display_key(keys.effective_key(spec, user_keys))
            yield TITLES.get(spec.id, spec.description), spec.help, key, partial(screen.run_action, spec.action)
        try:
            # Every node from the focused widget up to the app (not only the
            # binding that wins a key: "enter" opens a run *and* selects a row).
            chain = list(screen._binding_chain)
        except Exception:
            chain = []
        for node, bindings_map in chain:
            for key, bindings in bindings_map.key_to_bindings.items():
                for binding in bindings:
                    action = binding.action.removeprefix("app.").removeprefix("screen.")
                    if action in seen or not binding.description or binding.system:
                        continue
                    if not binding.show and binding.id not in keys.BY_ID:
                        continue  # widget internals (cursor moves...)
                    seen.add(action)
                    spec = keys.BY_ID.get(binding.id or "")
                    help_text = (spec.help if spec else "") or binding.tooltip or binding.description
                    shown_key = keys.effective_key(spec, user_keys) if spec else key
                    yield (
                        TITLES.get(binding.id or "", binding.description),
                        help_text,
                        keys.display_key(shown_key),
                        partial(_run, node, binding.action),
                    )
        # "New experiment" works from every screen; its key is the runs list's (named so elsewhere).
        if "new_experiment" not in seen:
            seen.add("new_experiment")
            spec = keys.BY_ID["new_experiment"]
            key = keys.display_key(keys.effective_key(spec, user_keys)) + " on the runs list"
            yield TITLES["new_experiment"], spec.help, key, partial(app.run_action, "new_experiment")
        # The matrix sweep too (after the screen's own bindings: on the runs list it shows its key).
        if "matrix_sweep" not in seen and hasattr(app, "action_matrix_sweep"):
            spec = keys.BY_ID["matrix_sweep"]
            yield TITLES["matrix_sweep"], spec.help, "", partial(app.run_action, "matrix_sweep")
        yield from _results_list(app, seen)

    async def discover(self) -> Hits:
        for name, help_text, key, callback in self.commands():
            yield DiscoveryHit(f"{name}  ({key})" if key else name, callback, help=help_text)  # type: ignore[arg-type]  # Textual types help as str | None only

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, key, callback in self.commands():
            shown = f"{name}  ({key})" if key else name
            score = max(matcher.match(shown), matcher.match(help_text) * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(shown), callback, help=help_text)  # type: ignore[arg-type]  # Textual types help as str | None only


async def _run(node, action: str) -> None:
    await node.run_action(action)


def _results_list(app, seen: set[str]) -> Iterator[tuple[str, str, str, object]]:
    """The results list from every screen (on the runs list it comes with its key, above)."""
    if "results_list" not in seen and hasattr(app, "store"):
        spec = keys.BY_ID["results_list"]
        yield TITLES["results_list"], spec.help, "", partial(_open_results_list, app)


def _open_results_list(app) -> None:
    from tui.screens.results import ResultsListScreen

    if not isinstance(app.screen, ResultsListScreen):
        app.push_screen(ResultsListScreen())
