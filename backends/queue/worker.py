"""The reference queue worker (what each Argo worker pod runs).

Loop: claim a batch → run each config → report its result and status →
claim again, until the queue has nothing left for it. A config is run either

* through the built-in workload runner against an OpenAI-compatible
  endpoint (``--endpoint``; the config's batch size becomes the concurrency,
  its sequence length splits into prompt and output tokens by workload), or
* by a command template (``--command 'bench --bs {batch_size} --seq {sequence_length}'``):
  each argv word is formatted with the config's fields — no shell is involved,
  so no config value can inject anything. Exit 0 = completed.

On SIGTERM (a spot interruption, ``argo stop``) it stops claiming, cancels
the config in progress and hands every unfinished config of its batch back to
pending before exiting 0.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from config.errors import SweepdeckError

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
    """argv from a template; each word formatted separately (never a shell string)."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise SweepdeckError(f"Cannot parse --command {template!r}: {exc}.") from None
    try:
        return [w.format(**config) for w in words]
    except (KeyError, IndexError, ValueError) as exc:
        raise SweepdeckError(
            f"--command uses an unknown field {exc}.",
            "Fields: " + ", ".join(sorted(config)),
        ) from None


@dataclass
class QueueWorker:
    """Claims and runs configs until the queue is empty or it is stopped.

    Args:
        api_url: Base URL of the queue API (``http://host:8000``).
        batch_size: Configs per claim (1–500).
        endpoint / model: Run configs through the workload runner against this server.
        command: Or run this command template per config.
        max_requests: Requests per config with the runner (default 2 × batch size).
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
    on_log: Callable[[str], None] = print
    client: httpx.AsyncClient | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _current: asyncio.Task | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"completed": 0, "failed": 0, "released": 0, "claimed": 0})

    def __post_init__(self) -> None:
        if not (self.endpoint or self.command):
            raise SweepdeckError("The worker needs --endpoint (workload runner) or --command (template).")
        if not 1 <= self.batch_size <= 500:
            raise SweepdeckError(f"--batch-size must be 1-500, got {self.batch_size}.")
        self.api_url = self.api_url.rstrip("/")

    def stop(self) -> None:
        """Stop claiming; cancel the config in progress (it goes back to pending)."""
        self._stopping.set()
        if self._current is not None:
            self._current.cancel()

    async def run(self) -> dict[str, int]:
        own = self.client is None
        client = self.client or httpx.AsyncClient(timeout=60)
        base = f"{self.api_url}/api/v1/workflow"
        try:
            while not self._stopping.is_set():
                body: dict[str, Any] = {"limit": self.batch_size, "worker": self.name}
                if self.priority_threshold is not None:
                    body["priority_threshold"] = self.priority_threshold
                if self.model_version_id:
                    body["model_version_id"] = self.model_version_id
                resp = await client.post(f"{base}/configs/get-batch", json=body)
                resp.raise_for_status()
                batch = resp.json()
                if not batch:
                    self.on_log(f"[INFO] queue empty; worker {self.name} done: {self.counts}")
                    break
                self.counts["claimed"] += len(batch)
                self.on_log(f"[INFO] claimed {len(batch)} configs")
                pending = [c["id"] for c in batch]
                try:
                    for config in batch:
                        if self._stopping.is_set():
                            break
                        self._current = asyncio.ensure_future(self._run_one(config))
                        try:
                            status, error, metrics = await self._current
                        except asyncio.CancelledError:
                            if self._stopping.is_set():
                                break
                            raise
                        finally:
                            self._current = None
                        r = await client.post(
                            f"{base}/configs/{config['id']}/status",
                            json={"status": status, "error_message": error, "metrics": metrics},
                        )
                        r.raise_for_status()
                        pending.remove(config["id"])
                        self.counts[status] += 1
                finally:
                    # Whatever we claimed and did not finish goes back (SIGTERM, errors).
                    for cid in pending:
                        try:
                            await client.post(f"{base}/configs/{cid}/status", json={"status": "pending", "error_message": None})
                            self.counts["released"] += 1
                        except httpx.HTTPError:
                            pass  # reset-stale will return it
            return dict(self.counts)
        except httpx.HTTPError as exc:
            raise SweepdeckError(f"Queue API at {self.api_url} failed: {exc}.", "Check --api-url and that `sweepdeck queue serve` runs.") from None
        finally:
            if own:
                await client.aclose()

    async def _run_one(self, config: dict[str, Any]) -> tuple[str, str | None, dict[str, Any] | None]:
        started = time.monotonic()
        if self.command:
            argv = format_command(self.command, config)
            try:
                proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
            except OSError as exc:
                return "failed", f"cannot start {argv[0]}: {exc.strerror}", None
            try:
                out, err = await proc.communicate()
            except asyncio.CancelledError:
                proc.kill()
                await proc.wait()
                raise
            if proc.returncode == 0:
                return "completed", None, {"duration_s": round(time.monotonic() - started, 3), "stdout_tail": out.decode(errors="replace")[-500:]}
            tail = (err or out).decode(errors="replace").strip().splitlines()
            return "failed", (tail[-1] if tail else f"exit code {proc.returncode}")[:500], None
        from backends.loadgen import run_workload

        profile = workload_for(config, self.max_requests)
        summary = await run_workload(self.endpoint, self.model or "model", profile)
        failed = summary.get("failed", 0)
        completed = summary.get("completed", 0)
        if completed == 0 and failed:
            errors = summary.get("errors") or {}
            msg = next(iter(errors), "all requests failed") if isinstance(errors, dict) else "all requests failed"
            return "failed", str(msg)[:500], summary
        return "completed", None, summary
