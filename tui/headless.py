"""Headless output: every event as one line (or one JSON object), for ``sweepdeck run``/``attach``.

``[VLLM OUT] ...`` / ``[VLLM ERR] ...`` for server output, ``[INFO]`` /
``[WARN]`` / ``[ERROR]`` for the rest, pre-flight checks with ✓ / ! / ✗, a
diagnosis with its numbered fixes, and a summary table at the end (a rich
Table rendered without colour when ``NO_COLOR`` is set or stdout is not a
terminal). With ``json_mode`` every event is one JSON line
(:func:`backends.events.to_dict`), checks and the final result included.

No Textual here; rich is imported only to draw the final tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Collection
from typing import IO, TYPE_CHECKING, Any

from backends.events import Alert, Endpoint, Event, Finished, LogLine, Metrics, Notice, Phase, Progress, to_dict

if TYPE_CHECKING:
    from backends.base import Check, Remedy
    from backends.session import SessionResult
    from config.spec import ExperimentSpec

# Spec field -> the `sweepdeck run` flag that sets it (to print a fix as a command).
FIX_FLAGS = {
    "engine.tp": "--tp",
    "engine.max_model_len": "--max-model-len",
    "engine.max_num_seqs": "--max-num-seqs",
    "engine.max_num_batched_tokens": "--max-num-batched-tokens",
    "engine.image": "--image",
    "engine.memory": "--memory",
    "engine.cpu": "--cpu",
    "workload.max_requests": "--max-requests",
    "model": "--model",
}

_LEVEL = {"info": "[INFO]", "warning": "[WARN]", "error": "[ERROR]"}


def _symbols(stream: IO[str]) -> dict[str, str]:
    enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    if enc in ("utf8", "utf8sig"):
        return {"pass": "✓", "warn": "!", "fail": "✗"}
    return {"pass": "ok", "warn": "!", "fail": "X"}


def fix_flags(changes: dict[str, Any], current_extra: tuple[str, ...] = ()) -> str:
    """The ``sweepdeck run`` flags that apply a fix's changes ('' if some change has no flag)."""
    parts: list[str] = []
    for path, value in changes.items():
        if path == "engine.extra_args":
            added = [a for a in value if a not in current_extra]
            parts += [f"--vllm-arg={a}" for a in added]
            continue
        flag = FIX_FLAGS.get(path)
        if flag is None:
            return ""
        parts.append(f"{flag} {value}")
    return " ".join(parts)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def remedies_for(failing: list[Check]) -> list[Remedy]:
    """The remedies that could clear every blocking check ([] when some check has none).

    A check whose ``data["blocked_by"]`` names a check with a remedy counts
    as covered: it can only be decided again once that remedy is done (a
    secret in a namespace that does not exist yet).
    """
    with_remedy = {c.name: c.remedy for c in failing if c.remedy is not None}
    if not failing or not with_remedy:
        return []
    for c in failing:
        if c.remedy is None and c.data.get("blocked_by") not in with_remedy:
            return []
    return list(with_remedy.values())


def ask_yes_no(question: str, out: IO[str] | None = None) -> bool:
    """Ask on the terminal (default no); False at once when stdin is not a terminal.

    Args:
        question: Shown with `` [y/N] ``.
        out: Where the question goes (stderr keeps ``--json`` output clean); stdout by default.
    """
    if not sys.stdin.isatty():
        return False
    out = out or sys.stdout
    try:
        out.write(f"{question} [y/N] ")
        out.flush()
        answer = sys.stdin.readline()
    except (EOFError, OSError):
        return False
    return answer.strip().lower() in ("y", "yes")


async def offer_remedies(backend, spec, checks: list[Check], on_event, *, fix: bool | Collection[str],
                         ask: Callable[[str], bool] | None) -> bool:
    """Carry out the pre-flight remedies when the user agrees; True if every one was done.

    Only when pre-flight fails on checks that all have a remedy (see
    :func:`remedies_for`). Each is done without asking when ``fix`` says so,
    else after ``ask(question)`` says yes; with neither, nothing is done.

    Args:
        backend: The backend that made the checks.
        spec: The spec they were made for.
        checks: The pre-flight results (or just the failing ones).
        on_event: Gets a :class:`Notice` saying what was done.
        fix: Do them without asking: True for every remedy (``--fix``), or the
            remedy ids to do so (``argo submit --populate``).
        ask: Asks a yes/no question (None: there is nobody to ask).

    Raises:
        SweepdeckError: a remedy failed (its message says why).
    """
    from backends.base import apply_remedy, blocking

    remedies = remedies_for(blocking(checks))
    for remedy in remedies:
        unasked = fix is True or (not isinstance(fix, bool) and remedy.id in fix)
        if not unasked and (ask is None or not ask(remedy.question)):
            return False  # one declined: pre-flight would fail again, and asking again would nag
        on_event(Notice(await apply_remedy(backend, spec, remedy)))
    return bool(remedies)


#: Pre-flight → remedies → pre-flight again, at most this many times (a remedy can uncover another).
REMEDY_ROUNDS = 3


async def drive_with_remedies(backend, spec, on_event, *, fix: bool | Collection[str],
                              ask: Callable[[str], bool] | None,
                              hint: Callable[[list[Remedy]], str], **drive_options: Any) -> SessionResult:
    """:func:`backends.session.drive`, and when pre-flight fails on what remedies can clear, offer them and try again.

    Args:
        backend, spec, on_event: As for ``drive``.
        fix, ask: As for :func:`offer_remedies`.
        hint: What to add to the error when the remedies were not done
            (``Or let sweepdeck do it: re-run with --fix (…)``).
        drive_options: The rest of ``drive``'s options.

    Raises:
        PreflightFailed: pre-flight still fails (its hint names the remedies on offer).
    """
    from backends.base import blocking
    from backends.session import PreflightFailed
    from backends.supervisor.drive import drive

    for round_ in range(REMEDY_ROUNDS + 1):
        try:
            return await drive(backend, spec, on_event=on_event, **drive_options)
        except PreflightFailed as exc:
            if round_ == REMEDY_ROUNDS:
                raise
            if await offer_remedies(backend, spec, exc.checks, on_event, fix=fix, ask=ask):
                continue
            remedies = remedies_for(blocking(exc.checks))
            if not remedies:
                raise
            raise PreflightFailed(exc.message, f"{exc.hint} {hint(remedies)}".strip(), exc.checks) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class HeadlessPrinter:
    """Prints events as lines; usable as ``on_event``.

    Args:
        out: Where events go (stdout).
        err: Where the final failure line goes (stderr).
        json_mode: One JSON object per line instead of text.
        spec: The spec, to print fixes as flags.
        progress_every: Minimum seconds between live progress/metrics lines.
    """

    def __init__(
        self,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        *,
        json_mode: bool = False,
        spec: ExperimentSpec | None = None,
        progress_every: float = 2.0,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.json_mode = json_mode
        self.spec = spec
        self.progress_every = progress_every
        self._last_progress = 0.0
        self._last_done = -1
        self._last_metrics = 0.0
        self._client_warned = False
        self._sym = _symbols(self.out)
        self.alerts: list[Alert] = []

    # ------------------------------------------------------------ plumbing

    def _line(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
            # every line as it comes, on a terminal and through a pipe alike (`| tee run.log`, CI):
            # a block-buffered pipe showed nothing for a whole run
            self.out.flush()
        except BrokenPipeError:  # `sweepdeck run ... | head`: keep running, stop printing
            self.out = open(os.devnull, "w")  # noqa: SIM115 - the printer's output from now on

    def _json(self, data: dict[str, Any]) -> None:
        self._line(json.dumps(data, default=str))

    def flush(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.out.flush()

    # -------------------------------------------------------------- events

    def __call__(self, event: Event) -> None:
        if isinstance(event, Alert):
            self.alerts.append(event)
        if self.json_mode:
            self._json(to_dict(event))
            if isinstance(event, Finished):
                self.flush()
            return
        if isinstance(event, LogLine):
            self._line(f"[{event.source.upper()} {event.stream.upper()}] {event.text}")
        elif isinstance(event, Notice):
            self._line(f"{_LEVEL.get(event.level, '[INFO]')} {event.message}")
        elif isinstance(event, Phase):
            detail = f" ({event.detail})" if event.detail else ""
            kind = "" if not event.kind or event.unit.startswith(event.kind) else f"{event.kind} "
            self._line(f"[INFO] {kind}{event.unit}: {event.state}{detail}")
        elif isinstance(event, Endpoint):
            if event.reachable:
                self._line(f"[INFO] Endpoint ready: {event.url}" + (f" serving {event.model}" if event.model else ""))
            else:
                self._line(f"[WARN] Endpoint {event.url} unreachable" + (f": {event.detail}" if event.detail else ""))
        elif isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, Metrics):
            self._metrics(event)
        elif isinstance(event, Alert):
            self.alert(event)
        elif isinstance(event, Finished):
            self.finished(event)
        if isinstance(event, (Finished, Alert)):
            self.flush()

    def _progress(self, p: Progress) -> None:
        now = time.monotonic()
        final = p.total and p.done >= p.total
        if p.done == self._last_done and not final:
            return
        if not final and now - self._last_progress < self.progress_every:
            return
        self._last_progress, self._last_done = now, p.done
        self._line(
            f"[INFO] Progress: {p.done}/{p.total} done ({p.completed} ok, {p.failed} failed, {p.running} running)"
        )

    def _metrics(self, m: Metrics) -> None:
        now = time.monotonic()
        if now - self._last_metrics < self.progress_every:
            return
        self._last_metrics = now
        tpot = f"TPOT mean {_ms(m.tpot_ms_mean)} ms, " if m.tpot_ms_mean is not None else ""
        self._line(
            f"[INFO] Metrics: {m.requests_per_s:.2f} req/s, {m.output_tokens_per_s:.0f} tok/s, "
            f"TTFT p50 {_ms(m.ttft_ms_p50)} ms, ITL mean {_ms(m.itl_ms_mean)} ms, {tpot}in flight {m.in_flight}"
        )
        if m.client_limited and not self._client_warned:
            self._client_warned = True
            self._line(f"[WARN] The load generator limited this measurement: {m.client_limited}")

    def alert(self, alert: Alert) -> None:
        tag = _LEVEL.get(alert.severity, "[WARN]")
        title = f"Diagnosis: {alert.message}" if alert.diagnosis else alert.message
        self._line(f"{tag} {title}")
        if alert.evidence:
            evidence = alert.evidence if len(alert.evidence) <= 160 else alert.evidence[:159] + "…"
            self._line(f"        evidence: {evidence}")
        if alert.fixes:
            self._line("  Suggested fixes:")
            extra = self.spec.engine.extra_args if self.spec is not None else ()
            for i, fix in enumerate(alert.fixes, 1):
                desc = f": {fix.description}" if fix.description else ""
                flags = fix_flags(fix.changes, extra)
                how = f"   [re-run with {flags}]" if flags else ""
                self._line(f"    {i}. {fix.label}{desc}{how}")
        elif alert.diagnosis:
            self._line("  No automatic fix; see the message above.")

    def finished(self, event: Finished) -> None:
        if event.outcome == "succeeded":
            self._line(f"[INFO] Finished: succeeded. {event.message}".rstrip())
        elif event.outcome == "detached":
            self._line(f"[INFO] {event.message}")
        elif event.outcome == "cancelled":
            self._line(f"[WARN] Cancelled: {event.message}")
        else:
            self._line(f"[ERROR] Failed: {event.message}")

    # ---------------------------------------------------------- pre-flight

    def checks(self, checks: list[Check]) -> None:
        if self.json_mode:
            for c in checks:
                self._json({"type": "Check", "name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix,
                            "data": c.data,
                            "remedy": {"id": c.remedy.id, "label": c.remedy.label, "question": c.remedy.question,
                                       "args": c.remedy.args}
                            if c.remedy is not None else None})
            return
        self._line("[INFO] Pre-flight checks:")
        for c in checks:
            detail = f" — {c.detail}" if c.detail else ""
            self._line(f"  {self._sym[c.status]} {c.name}{detail}")
            if c.fix and c.status != "pass":
                self._line(f"      fix: {c.fix}")
            if c.remedy is not None and c.status != "pass":
                self._line(f"      sweepdeck can do it: {c.remedy.label} (asked first; --fix does it without asking)")
        self.flush()

    def spec_summary(self, spec: ExperimentSpec) -> None:
        if self.json_mode:
            self._json({"type": "Spec", **spec.to_dict()})
            return
        self._line("[INFO] Experiment:")
        width = max(len(label) for label, _ in spec.summary_lines())
        for label, value in spec.summary_lines():
            self._line(f"  {label:<{width}}  {value}")
        changes = spec.changes()
        if changes:
            self._line("  Changes:")
            for change in changes:
                self._line(f"    {change.describe()}")
        self.flush()

    # -------------------------------------------------------------- result

    def result(self, result: SessionResult) -> None:
        """The final summary table (and the failure line on stderr)."""
        run = result.run
        if self.json_mode:
            self._json(
                {
                    "type": "Result",
                    "outcome": result.outcome,
                    "message": result.message,
                    "exit_code": result.exit_code,
                    "run_id": run.id if run else None,
                    "run_dir": str(run.store.path) if run else None,
                }
            )
            self.flush()
        else:
            summary = (result.finished.summary if result.finished else None) or {}
            print_summary_table(self.out, result, summary)
            self.flush()
        if result.outcome not in ("succeeded", "detached"):
            try:
                self.err.write(f"[ERROR] {result.outcome}: {result.message}\n")
                if run is not None:
                    self.err.write(f"  Run directory: {run.store.path}\n")
                self.err.flush()
            except (BrokenPipeError, ValueError):
                pass


def make_console(out: IO[str], width: int = 100):
    """A rich Console that draws plain text unless ``out`` is a colour terminal."""
    from rich.console import Console

    tty = out.isatty() if hasattr(out, "isatty") else False
    no_color = bool(os.environ.get("NO_COLOR")) or not tty
    return Console(
        file=out,
        force_terminal=tty,
        no_color=no_color,
        color_system=None if no_color else "auto",
        highlight=False,
        emoji=False,
        width=None if tty else width,
        soft_wrap=False,
    )


def print_summary_table(out: IO[str], result: SessionResult, summary: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    run = result.run
    console = make_console(out)
    head = Table(title="Summary", box=box.SIMPLE, show_header=False, title_justify="left")
    head.add_column("key", style="bold")
    head.add_column("value")
    if run is not None:
        head.add_row("Experiment", run.id)
        head.add_row("Backend", run.backend)
        head.add_row("Model", run.spec.model)
        head.add_row("Workload", run.spec.workload.app)
    head.add_row("Outcome", result.outcome)
    if result.message:
        head.add_row("Message", result.message)
    if "completed" in summary:
        head.add_row(
            "Requests",
            f"{summary.get('completed', 0)} completed, {summary.get('failed', 0)} failed"
            + (f", {summary['cancelled']} cancelled" if summary.get("cancelled") else ""),
        )
        if summary.get("duration_s") is not None:
            head.add_row("Duration", f"{summary['duration_s']:.2f} s")
        head.add_row("Throughput", f"{summary.get('requests_per_s', 0):.2f} req/s, "
                                   f"{summary.get('output_tokens_per_s', 0):.1f} output tok/s")
    if result.finished is not None and result.finished.results:
        head.add_row("Results", result.finished.results)
    if run is not None:
        head.add_row("Run directory", str(run.store.path))
    console.print(head)
    rows = [(label, summary.get(key)) for label, key in (
        ("TTFT (ms)", "ttft_ms"), ("ITL (ms)", "itl_ms"), ("TPOT (ms)", "tpot_ms"), ("Latency (ms)", "latency_ms"))]
    rows = [(label, stats) for label, stats in rows if isinstance(stats, dict) and stats.get("mean") is not None]
    if rows:
        table = Table(box=box.SIMPLE_HEAD, title="Latency", title_justify="left")
        table.add_column("metric")
        for col in ("mean", "median", "p90", "p99"):
            table.add_column(col, justify="right")
        for label, stats in rows:
            table.add_row(label, *(_ms(stats.get(col)) for col in ("mean", "median", "p90", "p99")))
        console.print(table)
    print_benchmarks_table(out, summary.get("results"))


def _trio(stats: Any) -> str:
    """``mean / p50 / p99`` of a summary's stats dict."""
    if not isinstance(stats, dict):
        return "-"
    return " / ".join(_ms(stats.get(k)) for k in ("mean", "median", "p99"))


def _rate(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_benchmarks_table(out: IO[str], results: Any) -> None:
    """The harness reports' rows (one per branch and benchmark/rate), as the backend summarised them.

    ``results`` is ``{branch: {"harness", "report", "benchmarks": [row...]} | {"error": ...}}``
    (:func:`backends.tekton.reports.summarize`); anything else prints nothing.
    """
    from rich import box
    from rich.table import Table

    if not isinstance(results, dict):
        return
    branches = [(label, r) for label,
                r in results.items() if isinstance(r, dict) and (r.get("benchmarks") or r.get("error"))]
    if not branches:
        return
    console = make_console(out, width=150)  # nine columns: wider than the 100 of the other tables
    harnesses = sorted({str(r.get("harness")) for _, r in branches if r.get("harness")})
    table = Table(box=box.SIMPLE_HEAD, title="Benchmarks" + (f" ({', '.join(harnesses)})" if harnesses else ""),
                  title_justify="left")
    for col, justify in (("run", "left"), ("benchmark", "left"), ("ok", "right"), ("failed", "right"),
                         ("req/s", "right"),
                         ("out tok/s", "right"), ("TTFT ms mean/p50/p99", "right"), ("ITL ms mean/p50/p99", "right"),
                         ("latency ms p50/p99", "right")):
        table.add_column(col, justify=justify)
    for label, r in branches:
        if r.get("error"):
            table.add_row(label, f"not copied: {r['error']}", "", "", "", "", "", "", "")
            continue
        for row in r["benchmarks"]:
            lat = row.get("latency_ms") or {}
            table.add_row(
                label, str(row.get("name", "")), str(row.get("completed", 0)), str(row.get("failed", 0)),
                _rate(row.get("requests_per_s"), 2), _rate(row.get("output_tokens_per_s"), 1),
                _trio(row.get("ttft_ms")), _trio(row.get("itl_ms")),
                f"{_ms(lat.get('median'))} / {_ms(lat.get('p99'))}",
            )
    console.print(table)
