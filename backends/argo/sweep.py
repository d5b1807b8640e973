"""Read a work-queue sweep over the queue's HTTP API.

One :class:`SweepReader` per (queue URL, model version). It is the only place that
knows the queue API's read paths, so the Argo backend (which turns snapshots into
:class:`~backends.events.Sweep` events), ``sweepdeck argo watch`` and the TUI sweep
view all see the same numbers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from backends.events import Phase, Sweep
from config.durations import format_elapsed, parse_timestamp
from config.errors import SweepdeckError

API = "/api/v1/workflow"


class QueueUnavailable(SweepdeckError):
    """The work-queue API did not answer (``status`` None) or answered with an error status."""

    def __init__(self, message: str, hint: str = "", status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class SweepReader:
    """Read progress, failures, stale configs and breakdowns of one model version.

    Args:
        base_url: The queue API's base URL (``http://queue:8080``).
        model_version_id: The model version being swept.
        stale_after_min: Running longer than this counts as stale (reset-stale's timeout).
        rate_window_min: Window for configs-per-minute.
        client: An ``httpx.AsyncClient`` to share (tests, the backend); one is made if not given.
        timeout: Per-request timeout in seconds.
        token: The bearer token to send; by default the admin token of ``token_file``, of
            ``SWEEPDECK_QUEUE_TOKEN`` or of the file ``queue serve`` generates
            (:func:`backends.queue.auth.client_token`). ``""`` sends none.
        token_file: Where to read the token from.
    """

    def __init__(
        self,
        base_url: str,
        model_version_id: str,
        *,
        stale_after_min: float = 120.0,
        rate_window_min: float = 5.0,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        token: str | None = None,
        token_file: str | None = None,
    ) -> None:
        from backends.queue.auth import client_token

        self.base_url = base_url.rstrip("/")
        self.model_version_id = str(model_version_id)
        self.stale_after_min = stale_after_min
        self.rate_window_min = rate_window_min
        self._own = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        token = client_token("admin", token_file) if token is None else token
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()

    async def __aenter__(self) -> SweepReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- requests

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        url = self.base_url + path
        try:
            resp = await self._client.request(method, url, headers=self._headers, **kw)
        except httpx.HTTPError as exc:
            raise QueueUnavailable(
                f"The work-queue API at {self.base_url} did not answer ({type(exc).__name__}: {exc or 'no detail'}).",
                "Start it with `sweepdeck queue serve --db URL` or set the profile's queue_url.",
            ) from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            hint = (
                "Give sweepdeck an admin token of this queue: the profile's queue_token_file, or "
                "$SWEEPDECK_QUEUE_TOKEN."
                if resp.status_code in (401, 403)
                else ""
            )
            raise QueueUnavailable(f"{method} {path} → HTTP {resp.status_code}: {detail}", hint, resp.status_code)
        return resp.json()

    async def health(self) -> bool:
        """True if ``/health`` answers ok."""
        try:
            return (await self._request("GET", "/health")).get("status") == "ok"
        except QueueUnavailable:
            return False

    async def progress(self) -> dict[str, Any]:
        return await self._request("GET", f"{API}/progress/{self.model_version_id}")

    async def failures(self) -> list[dict[str, Any]]:
        return await self._request("GET", f"{API}/failures/{self.model_version_id}")

    async def failed_configs(self, error_message: str, limit: int = 500) -> list[dict[str, Any]]:
        """The configs of one failure group (drill-in)."""
        return await self._request(
            "GET",
            f"{API}/configs/{self.model_version_id}",
            params={"status": "failed", "error_message": error_message, "limit": limit},
        )

    async def stale(self) -> list[dict[str, Any]]:
        return await self._request(
            "GET", f"{API}/stale/{self.model_version_id}", params={"older_than_minutes": self.stale_after_min}
        )

    async def breakdown(self, by: str) -> list[dict[str, Any]]:
        return await self._request("GET", f"{API}/breakdown/{self.model_version_id}", params={"by": by})

    async def rate(self) -> float:
        data = await self._request(
            "GET", f"{API}/rate/{self.model_version_id}", params={"window_minutes": self.rate_window_min}
        )
        return float(data.get("configs_per_minute", 0.0))

    async def reset_stale(self, timeout_minutes: float | None = None, max_retries: int = 3) -> dict[str, int]:
        """Return stale running configs to pending (past ``max_retries`` → failed)."""
        minutes = self.stale_after_min if timeout_minutes is None else timeout_minutes
        return await self._request(
            "POST", f"{API}/maintenance/reset-stale", params={"timeout_minutes": minutes, "max_retries": max_retries}
        )

    async def populate(self, *, dry_run: bool) -> dict[str, int]:
        """Populate the default matrix for this model version (``dry_run`` → counts only)."""
        return await self._request(
            "POST", f"{API}/populate/{self.model_version_id}", params={"dry_run": str(dry_run).lower()}
        )

    # ----------------------------------------------------------------- snapshot

    async def snapshot(self, *, details: bool = True) -> Sweep:
        """Everything the sweep view shows, read concurrently.

        Args:
            details: Also read failures, stale configs and breakdowns (the group-by
                queries); ``False`` reads only the O(1) counts and the rate.
        """
        if details:
            prog, rate, fails, stale, by_wl, by_prio = await asyncio.gather(
                self.progress(),
                self.rate(),
                self.failures(),
                self.stale(),
                self.breakdown("workload_type"),
                self.breakdown("priority"),
            )
        else:
            prog, rate = await asyncio.gather(self.progress(), self.rate())
            fails, stale, by_wl, by_prio = [], [], [], []
        remaining = int(prog["pending"]) + int(prog["running"])
        eta = remaining / rate * 60.0 if rate > 0 else None
        return Sweep(
            model_version_id=self.model_version_id,
            total=int(prog["total"]),
            pending=int(prog["pending"]),
            running=int(prog["running"]),
            completed=int(prog["completed"]),
            failed=int(prog["failed"]),
            configs_per_min=rate,
            eta_s=eta if remaining else 0.0,
            failures=fails,
            stale=stale,
            by_workload=by_wl,
            by_priority=by_prio,
            stale_after_min=self.stale_after_min,
        )


# --------------------------------------------------------------------- text form



def bar(pct: float, width: int = 30) -> str:
    """A text progress bar that reads without colour: ``[#########.........]``."""
    filled = int(round(width * max(0.0, min(100.0, pct)) / 100.0))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_line(s: Sweep) -> str:
    """One line: bar, %, counts, rate, ETA (what ``argo watch`` prints each tick)."""
    return (
        f"{bar(s.pct)} {s.pct:5.1f}%  {s.done}/{s.total}  "
        f"pending {s.pending}  running {s.running}  completed {s.completed}  failed {s.failed}  "
        f"{s.configs_per_min:.1f} configs/min  ETA {format_elapsed(s.eta_s)}"
    )


def detail_lines(s: Sweep, *, limit: int = 5) -> list[str]:
    """Failure groups, stale configs and the breakdowns by workload and by priority as indented text lines."""
    out: list[str] = []
    if s.failures:
        out.append("Failures by error:")
        out += [f"  {f['count']:>6}  {f['error_message']}" for f in s.failures[:limit]]
        if len(s.failures) > limit:
            out.append(f"  … {len(s.failures) - limit} more groups")
    if s.stale:
        out.append(
            f"Stale (running > {s.stale_after_min:g} min): {len(s.stale)} — reset with `sweepdeck queue reset-stale`"
        )
        out += [
            f"  #{c['id']} {c.get('workload_type', '')} started {_age(c.get('started_at'))} ago, "
            f"retries {c.get('retry_count', 0)}"
            for c in s.stale[:limit]
        ]
    if s.by_workload:
        out.append("By workload:")
        out += [_breakdown_line(str(r["workload_type"]), r) for r in s.by_workload]
    if s.by_priority:
        out.append("By priority:")
        rows = sorted(s.by_priority, key=lambda r: int(r.get("priority", 0)))
        out += [_breakdown_line(str(r["priority"]), r) for r in rows[: limit * 4]]
        if len(rows) > limit * 4:
            out.append(f"  … {len(rows) - limit * 4} more priorities")
    return out


def node_lines(workflow: Phase | None, nodes: list[Phase], now: float | None = None) -> list[str]:
    """The Workflow and its nodes as text: name, phase, duration, retries, message (the sweep view's node table).

    Args:
        workflow: The Workflow's own phase (``kind="workflow"``).
        nodes: Its nodes, in start order.
        now: Epoch seconds for the durations of running nodes (default: the clock).
    """
    now = time.time() if now is None else now

    def duration(p: Phase) -> str:
        if p.started is None:
            return "—"
        end = p.finished if p.finished is not None else now
        return format_elapsed(max(0.0, end - p.started))

    out: list[str] = []
    if workflow is not None:
        line = f"Workflow {workflow.unit}: {workflow.state} ({duration(workflow)})"
        out.append(line + (f" — {workflow.detail}" if workflow.detail else ""))
    if nodes:
        width = min(40, max(len(p.unit) for p in nodes))
        out.append("Nodes:")
        for p in nodes:
            line = f"  {p.unit:<{width}}  {p.state:<10} {duration(p):>7}"
            if p.retries:
                line += f"  retries {p.retries}"
            if p.detail:
                line += f"  {' '.join(p.detail.split())[:160]}"
            out.append(line)
    return out


def _breakdown_line(key: str, r: dict[str, Any]) -> str:
    total = sum(int(r.get(k, 0)) for k in ("pending", "running", "completed", "failed"))
    done = int(r.get("completed", 0)) + int(r.get("failed", 0))
    pct = 100.0 * done / total if total else 0.0
    return f"  {key:<18} {done:>6}/{total:<6} {pct:5.1f}%  failed {r.get('failed', 0)}"


def _age(started: str | None) -> str:
    t = parse_timestamp(started)
    return "?" if t is None else format_elapsed(time.time() - t)
