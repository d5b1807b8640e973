"""The reference queue worker (what each Argo worker pod runs).

Loop: claim a batch → run each config → report its result and status →
claim again, until the queue has nothing left for it. A config is run either

* through the built-in workload runner against an OpenAI-compatible
  endpoint (``--endpoint``; the config's batch size becomes the concurrency,
  its sequence length splits into prompt and output tokens by workload), or
* by a command template (``--command 'bench --bs {batch_size} --seq {sequence_length}'``):
  each argv word is formatted with the config's fields — no shell is involved,
  so no config value can inject anything, and a word that a value would make
  begin with ``-`` (read as an option) is refused unless it follows a literal
  ``--``. Exit 0 = completed.

Every claimed config comes with a lease. The worker sends it with each report,
heartbeats all the leases it holds every third of their lifetime, and drops a
config whose lease was revoked (``reset-stale`` gave it to another worker):
a heartbeat that says so cancels it, a report that the queue refuses with 409
is logged and dropped. Reports are retried on connection errors and 502/503/504
— the lease makes a retry harmless (the queue answers it as the first).

On SIGTERM (a spot interruption, ``argo stop``) it stops claiming, cancels
the config in progress and hands every unfinished config of its batch back to
pending before exiting 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from config.errors import SweepdeckError

#: Status codes worth retrying a request for (a proxy or the server restarting).
RETRY_STATUS = (502, 503, 504)

# Prompt share of the sequence length per workload (the rest is output).
PROMPT_SHARE = {
    "chatbot": 0.5,
    "qa": 0.75,
    "summarization": 0.875,
    "code-generation": 0.8,
    "creative-writing": 0.25,
}


def workload_for(config: dict[str, Any], max_requests: int | None = None):
    """A workload profile that exercises one config cell."""
    from config.catalog import make_workload

    seq = int(config["sequence_length"])
    share = PROMPT_SHARE.get(config["workload_type"], 0.5)
    prompt = max(1, int(seq * share))
    output = max(1, seq - prompt)
    batch = int(config["batch_size"])
    return make_workload(
        str(config["workload_type"]),
        {
            "rate_type": "concurrent",
            "max_concurrency": batch,
            "rate": batch,
            "max_requests": max_requests or batch * 2,
            "prompt_tokens": prompt,
            "prompt_tokens_max": prompt,
            "prompt_tokens_min": prompt,
            "output_tokens": output,
            "output_tokens_min": output,
            "output_tokens_max": output,
        },
        source=f"config {config['id']}",
    )


def format_command(template: str, config: dict[str, Any]) -> list[str]:
    """argv from a template; each word formatted separately (never a shell string).

    A word the template does not itself start with ``-`` may not start with ``-``
    after formatting — a config value would otherwise become an option of the
    command — unless it comes after a literal ``--`` word (end of options).

    Raises:
        SweepdeckError: the template cannot be parsed, uses an unknown field, or a
            value would become an option.
    """
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise SweepdeckError(f"Cannot parse --command {template!r}: {exc}.") from None
    argv: list[str] = []
    options_end = False
    for word in words:
        try:
            value = word.format(**config)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise SweepdeckError(
                f"--command uses an unknown field {exc}.",
                "Fields: " + ", ".join(sorted(config)),
            ) from None
        if value.startswith("-") and not word.startswith("-") and not options_end:
            raise SweepdeckError(
                f"Config {config.get('id')}: {word!r} becomes {value!r}, which the command would read as an option; "
                "not run.",
                "Put the value after a literal -- in --command, or in an option of its own (--name={field}).",
            )
        argv.append(value)
        options_end = options_end or word == "--"
    return argv


def _lease_seconds(config: dict[str, Any]) -> float | None:
    """A claimed config's lease lifetime (``lease_expires_at - started_at``, both the server's clock)."""
    try:
        end = dt.datetime.fromisoformat(str(config["lease_expires_at"]))
        start = dt.datetime.fromisoformat(str(config["started_at"]))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def _clean(value: Any) -> Any:
    """What the queue accepts: no NUL in text, no NaN/Infinity (a command's output may have either)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@dataclass
class QueueWorker:
    """Claims and runs configs until the queue is empty or it is stopped.

    Args:
        api_url: Base URL of the queue API (``http://host:8000``).
        batch_size: Configs per claim (1–500).
        endpoint / model: Run configs through the workload runner against this server.
        command: Or run this command template per config.
        max_requests: Requests per config with the runner (default 2 × batch size).
        token: The bearer token to send (default: :func:`backends.queue.auth.client_token`
            for the worker role, from ``token_file``, ``SWEEPDECK_QUEUE_TOKEN`` or the default file).
        token_file: Where to read the token from.
        heartbeat_s: Seconds between heartbeats (default: a third of the lease).
        retries: Times a request is retried on connection errors and 502/503/504.
        on_log: Called with each progress line (the CLI prints them).
    """

    api_url: str
    batch_size: int = 100
    model_version_id: str | None = None
    priority_threshold: int | None = None
    endpoint: str | None = None
    model: str | None = None
    command: str | None = None
    max_requests: int | None = None
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    token: str | None = None
    token_file: str | None = None
    heartbeat_s: float | None = None
    retries: int = 4
    on_log: Callable[[str], None] = print
    client: httpx.AsyncClient | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _current: asyncio.Task | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"completed": 0, "failed": 0, "released": 0, "claimed": 0, "reassigned": 0}
    )

    def __post_init__(self) -> None:
        from backends.queue.auth import client_token
        from backends.queue.store import CLAIMED_FIELDS

        if not (self.endpoint or self.command):
            raise SweepdeckError("The worker needs --endpoint (workload runner) or --command (template).")
        if not 1 <= self.batch_size <= 500:
            raise SweepdeckError(f"--batch-size must be 1-500, got {self.batch_size}.")
        if self.command:  # an unknown field fails now, not on the first config
            format_command(self.command, {k: 1 for k in CLAIMED_FIELDS})
        self.api_url = self.api_url.rstrip("/")
        self.token = self.token or client_token("worker", self.token_file)
        self._headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._leases: dict[int, str] = {}
        self._running_id: int | None = None
        self._dropped: set[int] = set()

    def stop(self) -> None:
        """Stop claiming; cancel the config in progress (it goes back to pending)."""
        self._stopping.set()
        if self._current is not None:
            self._current.cancel()

    async def run(self) -> dict[str, int]:
        own = self.client is None
        client = self.client or httpx.AsyncClient(timeout=60)
        base = f"{self.api_url}/api/v1/workflow"
        beats: asyncio.Task | None = None
        try:
            while not self._stopping.is_set():
                batch = await self._claim(client, base)
                if not batch:
                    self.on_log(f"[INFO] queue empty; worker {self.name} done: {self.counts}")
                    break
                self.counts["claimed"] += len(batch)
                self.on_log(f"[INFO] claimed {len(batch)} configs")
                self._leases = {c["id"]: c["lease_id"] for c in batch}
                if beats is None:
                    beats = asyncio.create_task(self._heartbeats(client, base, self._interval(batch[0])))
                try:
                    await self._run_batch(client, base, batch)
                finally:
                    await self._give_back(client, base)
            return dict(self.counts)
        except httpx.HTTPError as exc:
            raise SweepdeckError(
                f"Queue API at {self.api_url} failed: {exc}.", "Check --api-url and that `sweepdeck queue serve` runs."
            ) from None
        finally:
            if beats is not None:
                beats.cancel()
            if own:
                await client.aclose()

    def _interval(self, config: dict[str, Any]) -> float:
        if self.heartbeat_s:
            return self.heartbeat_s
        lease = _lease_seconds(config) or 600.0
        return min(300.0, max(0.5, lease / 3))

    async def _claim(self, client: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"limit": self.batch_size, "worker": self.name}
        if self.priority_threshold is not None:
            body["priority_threshold"] = self.priority_threshold
        if self.model_version_id:
            body["model_version_id"] = self.model_version_id
        resp = await self._post(client, f"{base}/configs/get-batch", body)
        self._check(resp, "claim")
        return resp.json()

    async def _run_batch(self, client: httpx.AsyncClient, base: str, batch: list[dict[str, Any]]) -> None:
        for config in batch:
            cid = config["id"]
            if self._stopping.is_set():
                return
            if cid not in self._leases:
                continue  # a heartbeat learnt it was reassigned before it ran
            self._running_id = cid
            self._current = asyncio.ensure_future(self._run_one(config))
            try:
                status, error, metrics = await self._current
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return
                if cid in self._dropped:
                    continue  # reassigned while it ran: nothing to report
                raise
            finally:
                self._current = self._running_id = None
            await self._report(
                client, base, cid, _clean({"status": status, "error_message": error, "metrics": metrics})
            )

    async def _report(self, client: httpx.AsyncClient, base: str, cid: int, body: dict[str, Any]) -> None:
        lease = self._leases.get(cid)
        if lease is None:
            return
        resp = await self._post(client, f"{base}/configs/{cid}/status", {**body, "lease_id": lease})
        self._leases.pop(cid, None)
        if resp.status_code == 409:
            self._drop_note(cid, resp)
            return
        self._check(resp, f"report on config {cid}")
        if body["status"] == "pending":
            self.counts["released"] += 1
        else:
            self.counts[body["status"]] += 1

    async def _give_back(self, client: httpx.AsyncClient, base: str) -> None:
        """Whatever was claimed and not finished goes back (SIGTERM, errors)."""
        for cid in list(self._leases):
            try:
                await self._report(client, base, cid, {"status": "pending", "error_message": None})
            except (httpx.HTTPError, SweepdeckError):
                self._leases.pop(cid, None)  # its lease expires; reset-stale returns it

    async def _heartbeats(self, client: httpx.AsyncClient, base: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            held = dict(self._leases)
            if not held:
                continue
            body = {"leases": [{"config_id": cid, "lease_id": lease} for cid, lease in held.items()]}
            try:
                resp = await self._post(client, f"{base}/configs/heartbeat", body)
                resp.raise_for_status()
                revoked = resp.json().get("revoked", [])
            except (httpx.HTTPError, ValueError) as exc:
                self.on_log(f"[WARN] heartbeat failed ({type(exc).__name__}); retrying in {interval:g} s")
                continue
            for cid in revoked:
                if self._leases.get(cid) == held.get(cid):
                    self._leases.pop(cid, None)
                    self._dropped.add(cid)
                    self.counts["reassigned"] += 1
                    self.on_log(f"[WARN] config {cid}: lease revoked (reset-stale gave it to another worker); dropped")
                    if self._running_id == cid and self._current is not None:
                        self._current.cancel()

    def _drop_note(self, cid: int, resp: httpx.Response) -> None:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        self.counts["reassigned"] += 1
        self.on_log(f"[WARN] config {cid}: the queue refused the report (409): {detail}")

    async def _post(self, client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
        """POST with retries on connection errors and 502/503/504 (every report carries its lease: a retry is safe)."""
        for attempt in range(self.retries + 1):
            try:
                resp = await client.post(url, json=body, headers=self._headers)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if resp.status_code not in RETRY_STATUS or attempt == self.retries:
                    return resp
            await asyncio.sleep(min(10.0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _check(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code in (401, 403):
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise SweepdeckError(
                f"The queue API refused the worker's {what} (HTTP {resp.status_code}): {detail}",
                "Give the worker a token of this queue: --token-file FILE or SWEEPDECK_QUEUE_TOKEN.",
            )
        resp.raise_for_status()

    async def _run_one(self, config: dict[str, Any]) -> tuple[str, str | None, dict[str, Any] | None]:
        started = time.monotonic()
        if self.command:
            try:
                argv = format_command(self.command, config)
            except SweepdeckError as exc:
                return "failed", exc.message[:500], None
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True
                )
            except OSError as exc:
                return "failed", f"cannot start {argv[0]}: {exc.strerror}", None
            try:
                out, err = await proc.communicate()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):  # it may have ended as it was cancelled
                    proc.kill()
                await proc.wait()
                raise
            if proc.returncode == 0:
                return (
                    "completed",
                    None,
                    {
                        "duration_s": round(time.monotonic() - started, 3),
                        "stdout_tail": out.decode(errors="replace")[-500:],
                    },
                )
            tail = (err or out).decode(errors="replace").strip().splitlines()
            return "failed", (tail[-1] if tail else f"exit code {proc.returncode}")[:500], None
        from backends.loadgen import run_workload

        profile = workload_for(config, self.max_requests)
        summary = await run_workload(self.endpoint, self.model or "model", profile)  # type: ignore[arg-type]  # no --command: run() checked --endpoint
        failed = summary.get("failed", 0)
        completed = summary.get("completed", 0)
        if completed == 0 and failed:
            errors = summary.get("errors") or {}
            msg = next(iter(errors), "all requests failed") if isinstance(errors, dict) else "all requests failed"
            return "failed", str(msg)[:500], summary
        return "completed", None, summary
