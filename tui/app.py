"""The full-screen app: runs list, wizard, monitor, dialogs; quit and cleanup.

Backends are injected: :class:`SweepdeckApp` takes a mapping of backend name
to a Backend instance or a factory ``(name, profile) -> Backend`` (or one
factory for all). :func:`run_app` uses the real registry
(:func:`backends.registry.get_backend`); tests pass fakes.

Every run lives in its own supervisor process (:mod:`backends.supervisor`);
the app is one of its clients. Leaving never strands anything: quit/ctrl+c
with anything live asks "clean up everything" (default) / "detach" /
"cancel". Cleanup is bounded in time: each live run gets a share, a stuck
supervisor is stopped, then this process's own registry runs. SIGTERM,
SIGHUP and a lost terminal make the app leave at once
(:class:`tui.terminal.TerminalGuard`): the supervisors stop every run that
was not detached, because its last client is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from textual import events
from textual.app import App
from textual.screen import Screen

from backends.base import Backend, demonstration
from backends.cleanup import REGISTRY, CleanupRegistry
from backends.store import RunStore
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.palette import SweepdeckCommands
from tui.screens.dialogs import (
    QUIT_CLEANUP,
    QUIT_DETACH,
    CleanupScreen,
    HelpDialog,
    QuickCommandDialog,
    QuitDialog,
)
from tui.screens.runs import RunsScreen

if TYPE_CHECKING:
    from config.settings import Settings
    from config.spec import ExperimentSpec
    from tui.screens.runs import RunRow

log = logging.getLogger(__name__)

BackendFactory = Callable[[str, "str | None"], Backend]
Backends = Mapping[str, "Backend | BackendFactory"] | BackendFactory | None

#: Seconds the whole cleanup on quit may take before stuck steps are forced.
CLEANUP_TIMEOUT = 10.0


def _default_controller_factory(backend, spec=None, **kw):
    from tui.controller import RunController

    return RunController(backend, spec, **kw)


def _controller_options(settings: Settings) -> dict[str, Any]:
    """Options the RunController takes from the settings (besides backend, spec, store and registry)."""
    options: dict[str, Any] = {"log_line_cap": settings.log_line_cap}
    with contextlib.suppress(SweepdeckError):
        options["default_image"] = settings.catalogs.models.default_image
    return options


def _default_monitor_factory(controller) -> Screen:
    from tui.screens.sweep import SweepMonitorScreen, is_sweep_run

    if is_sweep_run(controller):
        # an Argo work-queue sweep: the monitor with the sweep view on top
        return SweepMonitorScreen(controller)
    from tui.screens.monitor import RunMonitorScreen

    return RunMonitorScreen(controller)


class SweepdeckApp(App[int]):
    """sweepdeck's Textual app.

    Args:
        settings: Loaded user settings (catalogs, profiles, keys, theme).
        backends: Injected backends (see module doc); default: the registry.
        store: Run store (default: the XDG state dir / ``SWEEPDECK_STATE_DIR``).
        registry: Cleanup registry (default: the process-wide one).
        today: Fixed date for experiment ids (snapshots).
        clock: Time source for durations (snapshots).
        controller_factory: ``(backend, spec, *, store, registry[, record]) -> RunController``.
        monitor_factory: ``controller -> Screen``.
        install_signals: Leave at once on SIGTERM/SIGHUP or a lost terminal (:class:`tui.terminal.TerminalGuard`).
        cleanup_timeout: Bound of the cleanup on quit, seconds.
        colours16: The terminal shows 16 colours (:func:`tui.terminal.has_16_colours`): the
            cursor row gets terminal colours of its own (app.tcss, ``-c16``).
        freeze_heap: Once the runs list has read the whole store, put what is alive then out of
            the cyclic garbage collector's way (``gc.freeze``): with 10,000 runs a full
            collection otherwise stops the app for 50–110 ms now and then. Off by default (tests
            make many apps in one process); ``sweepdeck`` turns it on.
    """

    TITLE = "sweepdeck"
    CSS_PATH = ["styles/app.tcss", "styles/wizard.tcss", "styles/matrix.tcss"]
    COMMANDS = App.COMMANDS | {SweepdeckCommands}
    BINDINGS = keys.bindings("app")
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        settings: Settings,
        backends: Backends = None,
        *,
        store: RunStore | None = None,
        registry: CleanupRegistry | None = None,
        today: _dt.date | None = None,
        clock: Callable[[], float] | None = None,
        controller_factory: Callable[..., Any] | None = None,
        monitor_factory: Callable[[Any], Screen] | None = None,
        install_signals: bool = True,
        cleanup_timeout: float = CLEANUP_TIMEOUT,
        colours16: bool = False,
        freeze_heap: bool = False,
    ) -> None:
        user_keys = keys.keymap(settings.keys, _other_binding_ids()) if settings.keys else {}
        if "palette" in user_keys:
            # Textual reads the palette key from this attribute in App.__init__.
            self.COMMAND_PALETTE_BINDING = user_keys["palette"]
        super().__init__()
        self.settings = settings
        self.user_keys = {k: v for k, v in user_keys.items() if k != "palette"}
        if self.user_keys:
            self.set_keymap(self.user_keys)
        self._backends_arg = backends
        self._backend_cache: dict[tuple[str | None, ...], Backend] = {}  # (name, profile[, demonstration])
        self.store = store or RunStore()
        self.registry = registry if registry is not None else REGISTRY
        self.today = today
        self.clock = clock or time.time
        if controller_factory is None:
            options = _controller_options(settings)

            def controller_factory(backend, spec=None, **kw):
                return _default_controller_factory(backend, spec, **options, **kw)

        self.controller_factory = controller_factory
        self.monitor_factory = monitor_factory or _default_monitor_factory
        self.install_signals = install_signals
        self.cleanup_timeout = cleanup_timeout
        self.colours16 = colours16
        self.freeze_heap = freeze_heap
        self.controllers: list[Any] = []
        self._guard: Any = None
        self._quitting = False
        self._key_in_flight = False
        self._held_keys: list[events.Key] = []
        self._key_task: asyncio.Task | None = None
        self.cleanup_outcomes: list[Any] = []
        #: Printed when the app has left (``sweepdeck attach RUN`` for each detached run).
        self.farewell: list[str] = []
        if settings.theme:
            try:
                self.theme = settings.theme
            except Exception:
                log.warning("unknown theme %r", settings.theme)

    # ------------------------------------------------------------- lifecycle

    def on_mount(self) -> None:
        if self.colours16:
            self.add_class("-c16")  # app.tcss names terminal colours for the cursor there
        self.push_screen(RunsScreen())
        if self.install_signals:
            from tui.terminal import TerminalGuard

            loop = asyncio.get_running_loop()
            from backends.supervisor.client import hang_up_all

            self._guard = TerminalGuard(lambda code: loop.call_soon_threadsafe(self._terminal_lost, code),
                                        let_go=hang_up_all)
            try:
                self._guard.install()
            except ValueError as exc:  # not the main thread (embedded use)
                log.warning("terminal guard not installed: %s", exc)
                self._guard = None

    def on_unmount(self) -> None:
        if self._guard is not None:
            self._guard.uninstall()
            self._guard = None

    def _terminal_lost(self, code: int) -> None:
        """SIGTERM, SIGHUP or a dead terminal: leave now. The supervisors stop the runs this app held
        (their last client is gone) unless they were detached; the guard's timer bounds the exit."""
        self._quitting = True
        self.exit(return_code=code)

    # -------------------------------------------------------------- backends

    def backend_for(self, name: str, profile: str | None = None, *, demo: str | None = None) -> Backend:
        """The backend for ``name``/``profile``, created once and reused.

        Args:
            name: Backend name.
            profile: Profile name (None: the backend's default).
            demo: A failure the backend's built-in simulator demonstrates (``oom``...,
                ``sweepdeck sim serve --fail``): :meth:`backends.base.BackendBase.demonstrating`.

        Raises:
            SweepdeckError: no such backend (or it cannot be created), or a demonstration
                asked of a backend that has no simulator.
        """
        if demo:
            return self._demo_backend(name, profile, demo)
        key = (name, profile)
        if key in self._backend_cache:
            return self._backend_cache[key]
        source = self._backends_arg
        if source is None:
            from backends.registry import get_backend

            backend = get_backend(self.settings, name, profile)
        elif isinstance(source, Mapping):
            if name not in source:
                raise SweepdeckError(
                    f"The {name} backend is not available in this session.",
                    "Available: " + ", ".join(sorted(source)),
                )
            value = source[name]
            backend = value if isinstance(value, Backend) and not isinstance(value, type) else value(name, profile)
        else:
            backend = source(name, profile)
        self._backend_cache[key] = backend
        return backend

    def _demo_backend(self, name: str, profile: str | None, demo: str) -> Backend:
        """The backend again, its simulator started with ``--fail DEMO`` (a labelled demonstration)."""
        key = (name, profile, demo)
        cached = self._backend_cache.get(key)
        if cached is not None:
            return cached
        backend = demonstration(self.backend_for(name, profile), demo)
        self._backend_cache[key] = backend
        return backend

    # ------------------------------------------------------------------ runs

    def launch_spec(self, spec: ExperimentSpec, backend: Backend | None = None) -> Any:
        """Start a run for ``spec`` (pre-flight done) and show its monitor.

        Args:
            spec: What to run.
            backend: A launch variant of the spec's backend (a matrix
                PipelineRun: :class:`backends.tekton.launch_matrix.MatrixLaunch`); default:
                the spec's backend/profile.
        """
        backend = backend or self.backend_for(spec.backend, spec.profile)
        controller = self.controller_factory(backend, spec, store=self.store, registry=self.registry)
        self.controllers.append(controller)
        self._drive(controller, "start")
        self._show_monitor(controller, replace_wizard=True)
        return controller

    def open_run(self, row: RunRow) -> Any:
        """Open a runs-table row: the live monitor, attach a detached run, or replay a finished one."""
        if row.controller is not None:
            self._show_monitor(row.controller)
            return row.controller
        if row.state == "detached":
            return self.attach_run(row)
        if row.record is None:
            raise SweepdeckError(f"No saved record for {row.id}.")
        backend = self._record_backend(row.record)
        controller = self.controller_factory(backend, None, store=self.store, registry=self.registry, record=row.record)
        # attach() of a finished record replays its saved events read-only.
        self._drive(controller, "attach")
        self._show_monitor(controller)
        return controller

    def attach_run(self, row: RunRow) -> Any:
        """Re-open a detached run: a controller attached to its saved session."""
        if row.record is None:
            raise SweepdeckError(f"No saved session for {row.id}.")
        backend = self._record_backend(row.record)
        controller = self.controller_factory(backend, None, store=self.store, registry=self.registry, record=row.record)
        if row.state == "lost":
            controller.adopt_lost = True  # follow what it left running (a SLURM job, a PipelineRun) again
        self.controllers.append(controller)
        self._drive(controller, "attach")
        self._show_monitor(controller)
        return controller

    def _record_backend(self, record) -> Backend:
        name = record.meta.get("backend") or record.backend
        return self.backend_for(name, record.meta.get("profile"))

    def _drive(self, controller: Any, method: str) -> None:
        """Run ``controller.start()``/``attach()`` in an app worker (it outlives screens)."""

        async def drive() -> None:
            try:
                await getattr(controller, method)()
            except SweepdeckError as exc:
                self.show_error(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # shown, not fatal: the app must stay usable to clean up
                log.exception("run %s failed", method)
                self.notify(f"{type(exc).__name__}: {exc}", title=f"Run {method} failed", severity="error", timeout=15)

        self.run_worker(drive(), group="controllers", name=f"{method} run", exit_on_error=False)

    def _show_monitor(self, controller: Any, replace_wizard: bool = False) -> None:
        try:
            screen = self.monitor_factory(controller)
        except ImportError as exc:
            self.notify(f"The run monitor is not available ({exc}).", severity="error")
            return
        if replace_wizard:
            from tui.screens.wizard import WizardScreen

            while isinstance(self.screen, WizardScreen) or (len(self.screen_stack) > 2
                                                            and not isinstance(self.screen, RunsScreen)):
                self.pop_screen()
        self.push_screen(screen)

    def show_error(self, exc: SweepdeckError) -> None:
        self.notify(exc.message + (f"\n{exc.hint}" if exc.hint else ""), title="Error", severity="error", timeout=10)

    # --------------------------------------------------------------- actions

    def action_new_experiment(self) -> None:
        from tui.screens.wizard import WizardScreen, WizardState

        state = WizardState(self.settings.catalogs, settings=self.settings, store=self.store, today=self.today,
                            backend=self.settings.default_backend or self.settings.local.backend,
                            profile=self._default_profile())
        self.push_screen(WizardScreen(state))

    def action_matrix_sweep(self, path: str = "") -> None:
        """Open the Tekton matrix sweep screen (a PipelineRun file → as is / unrolled / N at once)."""
        from tui.screens.matrix import MatrixScreen

        if isinstance(self.screen, MatrixScreen):
            return
        self.push_screen(MatrixScreen(path))

    def _default_profile(self) -> str | None:
        default = self.settings.default_profile
        if default and default != self.settings.local.name:  # the embedded profile is the backend's default
            return default
        return None

    def action_quick_command(self) -> None:
        def done(spec: ExperimentSpec | None) -> None:
            if spec is not None:
                self.open_wizard_with(spec)

        self.push_screen(QuickCommandDialog(self.settings.catalogs, self.settings, today=self.today), done)

    def open_wizard_with(self, spec: ExperimentSpec, start: str = "review") -> None:
        """Open the wizard on ``start`` with ``spec`` filled in."""
        from tui.screens.wizard import WizardScreen, WizardState

        state = WizardState.from_spec(spec, self.settings.catalogs, settings=self.settings, store=self.store,
                                      today=self.today)
        if isinstance(self.screen, WizardScreen):
            # A quick command replaces the wizard in progress instead of stacking a second one.
            self.pop_screen()
        self.push_screen(WizardScreen(state, start=start))

    def action_show_help(self) -> None:
        if isinstance(self.screen, HelpDialog):
            return
        screen = self.screen
        title = "This screen" + (f": {screen.sub_title}" if getattr(screen, "sub_title", "") else "")
        self.push_screen(HelpDialog(self.user_keys, self._other_rows(), here=self._here_rows(), here_title=title))

    def _here_rows(self) -> list[tuple[str, str, str]]:
        """``(key, id, what)`` of every binding that works on the current screen now (help shows them first)."""
        rows: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        try:
            active = self.screen.active_bindings
        except Exception:  # a screen being torn down: help still lists every key
            return rows
        for key, active_binding in active.items():
            binding = active_binding.binding
            spec = keys.BY_ID.get(binding.id or "")
            if binding.system or not binding.description or (not binding.show and spec is None):
                continue  # widget internals (cursor moves...)
            name = binding.id or binding.action
            if name in seen:
                continue
            seen.add(name)
            shown = keys.display_key(keys.effective_key(spec, self.user_keys)) if spec else keys.display_key(key)
            what = (spec.help if spec else "") or binding.tooltip or binding.description
            rows.append((shown, binding.id or "—", what))
        return rows

    def _other_rows(self) -> list[tuple[str, str, str, str]]:
        """Bindings of the current screen that :mod:`tui.bindings` does not list."""
        rows = []
        known = {k.id for k in keys.KEYS}
        screen = self.screen
        title = getattr(screen, "sub_title", "") or type(screen).__name__
        seen = set()
        try:
            active = screen.active_bindings
        except Exception:
            return rows
        for key, active_binding in active.items():
            binding = active_binding.binding
            if binding.id in known or binding.system or not binding.description:
                continue
            if (binding.id, binding.action) in seen:
                continue
            seen.add((binding.id, binding.action))
            rows.append((str(title), keys.display_key(key), binding.id or "—", binding.tooltip or binding.description))
        return rows

    def action_show_runs(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, RunsScreen):
            self.pop_screen()

    async def on_event(self, event: events.Event) -> None:
        if not isinstance(event, events.Key) or event.is_forwarded:
            await super().on_event(event)
            return
        # Once the app is leaving, keys typed behind the one that quit (``q`` then ``s``) must not open
        # screens on screens that are closing; Ctrl+C still reaches the app (a second one: leave at once).
        if self._quitting and event.key != "ctrl+c":
            event.stop()
            return
        # Keys typed together arrive together. Each goes where it belongs only once the key before it has
        # been handled: "s" then "abc" must type "abc" into the dialog "s" opens, not press "a", "b" and "c"
        # on the screen under it. So a key waits while the one before is on its way (bounded).
        if self._key_in_flight:
            self._held_keys.append(events.Key(event.key, event.character))
            event.stop()
            return
        target = self.focused or self.screen
        chain = [target, *(node for node in target.ancestors if node is not self)] if target is not self.screen \
            else [target]
        await super().on_event(event)
        self._key_in_flight = True
        self._key_task = asyncio.create_task(self._after_key(chain))  # kept: a task only weakly held may vanish

    async def _after_key(self, chain: list[Any]) -> None:
        """Wait until ``chain`` (the focused widget up to its screen) has handled the key it was given,
        then let the app handle what bubbled up to it, then the next key."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_drained(chain), KEY_ORDER_WAIT)
        if not self.call_later(self._release_keys):
            self._key_in_flight = False

    async def _release_keys(self) -> None:
        self._key_in_flight = False
        while self._held_keys and not self._key_in_flight:
            await self.on_event(self._held_keys.pop(0))

    async def action_quit(self) -> None:
        """Textual's own quit (ctrl+q, the palette) goes through the same dialog."""
        await self.action_request_quit()

    async def action_request_quit(self) -> None:
        if self._quitting:
            return
        if isinstance(self.screen, (QuitDialog, CleanupScreen)):
            return
        live = self.live_items()
        if not live:
            self._quitting = True
            self.exit(return_code=0)
            return

        def chosen(choice: str | None) -> None:
            if choice == QUIT_CLEANUP:
                self.run_worker(self.cleanup_and_exit(), name="cleanup", exit_on_error=False)
            elif choice == QUIT_DETACH:
                self.run_worker(self.detach_and_exit(), name="detach", exit_on_error=False)

        self.push_screen(QuitDialog(live), chosen)

    # --------------------------------------------------------------- cleanup

    def live_items(self) -> list[str]:
        """What would be left behind: live runs, then other registered undos."""
        items = []
        for ctrl in self.controllers:
            if getattr(ctrl, "live", False):
                run = getattr(ctrl, "run", None)
                spec = getattr(ctrl, "spec", None)
                name = getattr(run, "id", None) or getattr(spec, "experiment_id", None) or "run"
                items.append(f"run {name} ({getattr(ctrl, 'state', 'live')})")
        if self.registry.live():
            items.extend(self.registry.pending())
        return items

    async def cleanup_all(self, timeout: float | None = None) -> list[Any]:
        """Clean up every live run, then the registry; bounded by ``timeout`` in total.

        A controller whose cleanup does not finish in its share is abandoned
        (its registered undos are then forced by the registry run).
        """
        budget = self.cleanup_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        outcomes: list[Any] = []
        live = [c for c in self.controllers if getattr(c, "live", False)]
        for ctrl in live:
            left = deadline - time.monotonic()
            if left <= 0.5:
                break
            share = max(0.5, min(left - 0.5, budget * 0.8))
            try:
                result = await asyncio.wait_for(ctrl.cleanup(timeout=share), timeout=share + 0.5)
                outcomes.extend(result or [])
            except TimeoutError:
                log.warning("cleanup of %s timed out; forcing", getattr(ctrl, "run", ctrl))
            except Exception as exc:
                log.warning("cleanup of %s failed: %s", getattr(ctrl, "run", ctrl), exc)
        self.workers.cancel_group(self, "controllers")
        left = max(1.0, deadline - time.monotonic())
        outcomes.extend(await self.registry.run(left))
        self.cleanup_outcomes = outcomes
        return outcomes

    async def cleanup_and_exit(self, return_code: int = 0) -> None:
        if self._quitting:
            return
        self._quitting = True
        await self.push_screen(CleanupScreen(self.live_items()))
        try:
            await self.cleanup_all()
        finally:
            self.exit(return_code=return_code)

    async def detach_and_exit(self) -> None:
        """Let every live run go on without this client, then leave (saying how to attach again)."""
        if self._quitting:
            return
        self._quitting = True
        await self.push_screen(CleanupScreen(self.live_items(), verb="Detaching"))
        try:
            for ctrl in self.controllers:
                if not getattr(ctrl, "live", False):
                    continue
                try:
                    command = ctrl.detach()
                    if inspect.isawaitable(command):
                        command = await asyncio.wait_for(command, 5.0)
                except Exception as exc:  # one run that cannot detach must not keep the others
                    log.warning("detach of %s failed: %s", getattr(ctrl, "run", ctrl), exc)
                    self.farewell.append(f"[WARN] {getattr(ctrl, 'id', 'a run')} could not be detached: {exc}")
                    continue
                run_id = getattr(ctrl, "id", None)
                if command or run_id:
                    self.farewell.append(f"[INFO] {run_id} keeps running. Follow it again with: "
                                         f"{command or f'sweepdeck attach {run_id}'}")
            self.workers.cancel_group(self, "controllers")
            self.cleanup_outcomes = await self.registry.run(min(5.0, self.cleanup_timeout))
        finally:
            self.exit(return_code=0)


def _other_binding_ids() -> set[str]:
    """Binding ids defined by screens and widgets outside :mod:`tui.bindings` (for keymap validation)."""
    import importlib

    from textual.dom import DOMNode

    for module in ("tui.screens.monitor", "tui.screens.sweep", "tui.screens.recovery", "tui.screens.dialogs",
                   "tui.screens.wizard.steps"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    ids: set[str] = set()
    todo = [DOMNode]
    seen = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        for binding in cls.__dict__.get("BINDINGS", []) or []:
            bid = getattr(binding, "id", None)
            if bid:
                ids.add(bid)
    ids.add("palette")
    return ids


def run_app(args: Any) -> int:
    """``sweepdeck`` with no subcommand: load settings and run the app on the real backends."""
    from config.settings import load_settings
    from tui.terminal import print_after_exit

    settings = load_settings(getattr(args, "config", None), getattr(args, "catalog_dir", None))
    settings.catalogs.validate()
    from tui.terminal import has_16_colours

    # A run whose supervisor is gone is never shown as running: the runs screen settles
    # such runs when it first lists the store (listing 10,000 runs twice would double the start).
    app = SweepdeckApp(settings, colours16=has_16_colours(), freeze_heap=True)
    try:
        result = app.run()
    finally:
        # Last line of defence (a crash inside the app): nothing this process registered may outlive it.
        if app.registry.live():
            app.registry.run_sync(CLEANUP_TIMEOUT)
    print_after_exit(app.farewell)
    code = app.return_code if app.return_code is not None else result
    return int(code or 0)


#: Longest a key waits for the one typed before it to be handled (a busy screen must not stall typing).
KEY_ORDER_WAIT = 0.25


async def _drained(pumps: list[Any]) -> None:
    """Return once each of ``pumps``, in order, has processed the messages it holds now."""
    for pump in pumps:
        done = asyncio.Event()
        if pump.call_later(done.set):  # False: not running (closed), nothing to wait for
            await done.wait()
