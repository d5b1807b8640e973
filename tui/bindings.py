"""Every key binding of the app, by id, with its default key.

A user remaps keys in their config (``keys: {new_experiment: ctrl+n}``); the
ids are Textual binding ids, so :meth:`textual.app.App.set_keymap` does the
substitution (the way posting does it). The help dialog (``?``) and the
command palette list the same table, so nothing is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

from config.errors import SweepdeckError


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One binding.

    Args:
        id: Stable id users remap in ``keys:``.
        key: Default key(s), Textual spelling, comma-separated for alternatives.
        action: Textual action string.
        description: Short footer text.
        scope: Where it works: ``app``, ``runs``, ``wizard``, ``model``,
            ``workload``, ``review``, ``summary``, ``preflight``.
        show: Show in the footer (everything is always in help).
        priority: Fire even when an input has focus.
        palette: Offer in the command palette.
        help: Longer text for help and the palette.
        also: A key the focused widget answers with the same action (the
            wizard's rows and inputs take ``enter`` as Next); the footer shows
            it next to ``key``.
    """

    id: str
    key: str
    action: str
    description: str
    scope: str = "app"
    show: bool = True
    priority: bool = False
    palette: bool = True
    help: str = ""
    also: str = ""

    def binding(self) -> Binding:
        return Binding(
            self.key,
            self.action,
            self.description,
            show=self.show,
            priority=self.priority,
            id=self.id,
            tooltip=self.help,
        )


KEYS: tuple[KeySpec, ...] = (
    # app-wide
    KeySpec("quit", "q", "app.request_quit", "Quit", help="Quit (asks what to do with live runs)"),
    KeySpec("interrupt", "ctrl+c", "app.request_quit", "Quit", show=False, priority=True, palette=False,
            help="Ctrl+C: same as quit, works everywhere"),
    KeySpec("help", "question_mark,f1", "app.show_help", "Help",
            help="List every key binding, this screen's first (f1 too: it works while you type in a field)"),
    KeySpec("quick_command", "colon", "app.quick_command", "Quick cmd",
            help="Type an experiment in one line: llama3-70b chatbot TP=4"),
    KeySpec("show_runs", "ctrl+o", "app.show_runs", "Runs", show=False,
            help="Go back to the runs list (the current screen stays open in the background)"),
    # runs (home)
    KeySpec("new_experiment", "n", "new_experiment", "New", scope="runs", help="Start the new-experiment wizard"),
    KeySpec("open_run", "enter", "open_run", "Open", scope="runs", help="Open the selected run"),
    KeySpec("attach_run", "a", "attach_run", "Attach", scope="runs", help="Attach to a detached run"),
    KeySpec("delete_run", "d", "delete_run", "Delete", scope="runs", help="Delete a finished run's record"),
    KeySpec("clean_run", "x", "clean_run", "Clean up", scope="runs", show=False,
            help="Remove what a lost run left behind (a SLURM job, a PipelineRun…); asks first"),
    KeySpec("filter_runs", "slash", "filter_runs", "Filter", scope="runs", help="Filter the runs list"),
    KeySpec("refresh_runs", "ctrl+r", "refresh_runs", "Refresh", scope="runs", show=False,
            help="Re-read the run store"),
    KeySpec("matrix_sweep", "m", "app.matrix_sweep", "Matrix", scope="runs", show=False,
            help="Launch a Tekton matrix PipelineRun (as is, unrolled, or N at once)"),
    KeySpec("replay_run", "p", "replay_run", "Replay", scope="runs", show=False,
            help="Open the run monitor's replay of the selected run (enter opens a finished run's results)"),
    KeySpec("mark_run", "space", "mark_run", "Mark", scope="runs", show=False,
            help="Mark / unmark the selected run for compare"),
    KeySpec("compare_runs", "c", "compare_runs", "Compare", scope="runs", show=False,
            help="Compare the marked runs (2 to 8): metrics side by side, deltas, curves, settings that differ"),
    KeySpec("results_list", "R", "results_list", "Results", scope="runs", show=False,
            help="List every run's results (best tok/s, TTFT, failures) to open or compare"),
    # results list
    KeySpec("results_list_open", "enter", "open_result", "Open", scope="results_list",
            help="Open the selected run's results"),
    KeySpec("results_list_mark", "space", "mark_result", "Mark", scope="results_list",
            help="Mark / unmark the selected run for compare"),
    KeySpec("results_list_compare", "c", "compare_marked", "Compare", scope="results_list",
            help="Compare the marked runs (2 to 8)"),
    KeySpec("results_list_close", "escape", "close", "Back", scope="results_list", help="Close the results list"),
    # results and compare screens
    KeySpec("results_next_tab", "right_square_bracket", "tab(1)", "Next tab", scope="results",
            help="Next tab: load points, failures, configuration, plots, files (compare: metrics, curves, settings)"),
    KeySpec("results_previous_tab", "left_square_bracket", "tab(-1)", "Prev tab", scope="results", show=False,
            help="Previous tab"),
    KeySpec("results_next_plot", "g", "next_plot", "Next plot", scope="results",
            help="Next plot: throughput vs latency, TTFT/ITL percentiles vs load, tok/s over time"),
    KeySpec("results_export", "e", "export", "Export", scope="results",
            help="Write the results (or the comparison) as Markdown to a file in the current directory"),
    KeySpec("results_close", "escape", "close", "Back", scope="results", help="Close the results"),
    # Tekton matrix sweep screen
    KeySpec("matrix_go", "f8", "launch", "Launch", scope="matrix", priority=True,
            help="Check the cluster and launch the matrix PipelineRun as chosen"),
    KeySpec("matrix_unroll", "space", "toggle_unroll", "Unroll", scope="matrix_params",
            help="Unroll the highlighted matrix parameter (or stop unrolling it)"),
    KeySpec("matrix_close", "escape", "close", "Back", scope="matrix", help="Close the matrix screen"),
    # wizard (every step)
    KeySpec("wizard_next", "f8,ctrl+right", "next_step", "Next", scope="wizard", priority=True, also="enter",
            help="Next step, on every step (Launch on the pre-flight step); enter does the same (not in an editor)"),
    KeySpec("wizard_back", "escape,ctrl+left", "previous_step", "Back", scope="wizard",
            help="Previous step (closes the wizard on the first step)"),
    # model step
    KeySpec("filter_models", "slash", "focus_filter", "Filter", scope="model", help="Filter models by id or alias"),
    # workload step
    KeySpec("custom_workload", "c", "custom", "Custom", scope="workload", help="Edit a custom workload"),
    KeySpec("preset_workload", "p", "presets", "Presets", scope="workload", help="Choose a preset workload"),
    # vLLM review step
    KeySpec("edit_value", "e", "edit", "Edit", scope="review", help="Edit the selected value"),
    KeySpec("add_arg", "plus", "add_arg", "Add arg", scope="review", help="Add a vLLM argument"),
    KeySpec("remove_arg", "x", "remove_arg", "Remove", scope="review",
            help="Remove the selected argument / undo a change"),
    KeySpec("confirm_changes", "y", "confirm", "Confirm", scope="review",
            help="Confirm the CHANGED / NEW settings (required before continuing)"),
    KeySpec("plan_fix_1", "1", "plan_fix(1)", "Fix 1", scope="review", show=False,
            help="Apply the memory planner's first suggestion (shown under the settings when it does not fit)"),
    KeySpec("plan_fix_2", "2", "plan_fix(2)", "Fix 2", scope="review", show=False,
            help="Apply the memory planner's second suggestion"),
    KeySpec("plan_fix_3", "3", "plan_fix(3)", "Fix 3", scope="review", show=False,
            help="Apply the memory planner's third suggestion"),
    # summary step
    KeySpec("edit_id", "i", "edit_id", "Exp. id", scope="summary", help="Change the experiment id"),
    KeySpec("choose_backend", "b", "choose_backend", "Backend", scope="summary", help="Choose the backend / profile"),
    # pre-flight step
    KeySpec("rerun_preflight", "r", "rerun", "Re-run", scope="preflight", help="Run the pre-flight checks again"),
    KeySpec("override_warnings", "o", "override", "Override", scope="preflight",
            help="Launch despite warnings (failures always block)"),
    KeySpec("launch", "l", "launch", "Launch", scope="preflight", show=False,
            help="Launch the experiment (enter and f8 do it too on this step)"),
    KeySpec("edit_from_check", "e", "edit_setting", "Edit it", scope="preflight",
            help="Go back to the vLLM review with the setting the highlighted check's fix names (TP 1…), to edit"),
    KeySpec("apply_remedy", "f", "remedy", "Fix it", scope="preflight",
            help="Let the backend fix the selected failing check (e.g. create the namespace); asks first"),
    # the sweep view (the run monitor of an Argo work-queue sweep)
    KeySpec("sweep_reset_stale", "R", "reset_stale", "Reset stale", scope="sweep",
            help="Return stale running configs to pending (asks first; past the retry limit they fail)"),
    KeySpec("sweep_next_section", "right_square_bracket", "sweep_section(1)", "Section", scope="sweep",
            help="Next sweep section: failures, stale, workloads, priorities, nodes"),
    KeySpec("sweep_previous_section", "left_square_bracket", "sweep_section(-1)", "Prev section", scope="sweep",
            show=False, help="Previous sweep section"),
    KeySpec("sweep_toggle", "5", "toggle_pane('sweep')", "Sweep", scope="sweep", show=False,
            help="Show / hide the sweep pane"),
    KeySpec("sweep_open_group", "enter", "select_cursor", "Drill in", scope="sweep_failures",
            help="List the configs of the selected failure group"),
    KeySpec("sweep_group_close", "escape,q", "close", "Close", scope="sweep_group", help="Close the failure group"),
    KeySpec("sweep_group_reload", "r", "reload", "Reload", scope="sweep_group", help="Read the group's configs again"),
)

BY_ID: dict[str, KeySpec] = {k.id: k for k in KEYS}

SCOPE_TITLES = {
    "app": "Everywhere",
    "runs": "Runs",
    "wizard": "New experiment (every step)",
    "model": "Model step",
    "workload": "Workload step",
    "review": "vLLM review step",
    "summary": "Summary step",
    "preflight": "Pre-flight step",
    "matrix": "Tekton matrix sweep",
    "matrix_params": "Tekton matrix sweep: parameter table",
    "sweep": "Sweep view (Argo runs)",
    "sweep_failures": "Sweep view: failure groups",
    "sweep_group": "Failure group (drill-in)",
    "results_list": "Results list",
    "results": "Results and compare",
}


#: The keys each screen's footer never drops, most important first (tui.widgets.footer).
#: A screen names its sets in ``FOOTER``; the wizard adds its step's set to ``wizard``.
#: Everything else shows while the row has room and is always in help (?).
GLOBAL_ESSENTIAL = ("help", "quick_command", "quit")
ESSENTIAL: dict[str, tuple[str, ...]] = {
    "runs": ("new_experiment", "open_run", "filter_runs", *GLOBAL_ESSENTIAL),
    "wizard": ("wizard_next", "wizard_back", *GLOBAL_ESSENTIAL),
    "model": ("filter_models",),
    "workload": ("custom_workload", "preset_workload"),
    "review": ("edit_value", "confirm_changes"),
    "summary": ("edit_id", "choose_backend"),
    "preflight": ("apply_remedy", "edit_from_check", "rerun_preflight", "override_warnings"),
    "monitor": ("monitor_back", "monitor_recovery", "monitor_cancel_run", "help", "quit"),
    "sweep": ("sweep_reset_stale", "sweep_next_section"),
    "results": ("results_close", "results_next_tab", "results_next_plot", "results_export", "help", "quit"),
    "results_list": ("results_list_open", "results_list_mark", "results_list_compare", "results_list_close",
                     "help", "quit"),
    "matrix": ("matrix_go", "matrix_close", "help"),
}


def bindings(scope: str) -> list[Binding]:
    """Textual bindings for one scope."""
    return [k.binding() for k in KEYS if k.scope == scope]


def keymap(keys: dict[str, str], extra_ids: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """Validate a user's ``keys:`` table (binding id → key).

    Args:
        keys: From the user config.
        extra_ids: Binding ids defined elsewhere (monitor screen...).

    Raises:
        SweepdeckError: an id nobody defines (with close ids as hint).
    """
    import difflib

    known = set(BY_ID) | set(extra_ids)
    out = {}
    for binding_id, key in keys.items():
        if binding_id not in known:
            close = difflib.get_close_matches(binding_id, sorted(known), n=3)
            raise SweepdeckError(
                f"keys.{binding_id}: no key binding has this id.",
                ("Did you mean: " + ", ".join(close) + "? " if close else "") + "Press ? in the app to see every id.",
            )
        out[binding_id] = key
    return out


def effective_key(spec: KeySpec, user_keys: dict[str, str]) -> str:
    """The key in force for ``spec`` after the user's remapping."""
    return user_keys.get(spec.id, spec.key)


def display_key(key: str) -> str:
    """Human spelling of a Textual key list (``question_mark`` → ``?``)."""
    names = {
        "question_mark": "?", "colon": ":", "slash": "/", "plus": "+", "escape": "esc",
        "enter": "enter", "minus": "-", "space": "space",
        "left_square_bracket": "[", "right_square_bracket": "]",
        "equals_sign": "=", "greater_than_sign": ">", "less_than_sign": "<", "exclamation_mark": "!",
    }
    parts = []
    for one in key.split(","):
        one = one.strip()
        *mod, last = one.split("+")
        parts.append("+".join(mod + [names.get(last, last)]))
    return " / ".join(parts)
