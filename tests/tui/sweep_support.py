"""A scripted Argo sweep for the sweep-view tests and snapshots.

:func:`sweep_script` plays what :class:`backends.argo.backend.ArgoBackend`
yields — the Workflow's and its nodes' Phases, worker log lines, Sweep
snapshots — with fixed timestamps; :class:`FakeReader` stands in for
:class:`backends.argo.sweep.SweepReader` (the drill-in and reset-stale go
through it) and records its calls.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from typing import Any

from backends.events import LogLine, Phase, Sweep
from tests.tui.monitor_support import FIXED_NOW, Gate, ScriptedBackend, make_app, make_spec

MVID = "llama3-70b-v1"
WORKFLOW = "sweep-llama3-70b-v1-x7k2p"

OOM = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total capacity)"
TIMEOUT = "timeout: the vLLM server was not ready after 600 s"
REFUSED = "guidellm: connection refused [http://vllm-0:8000/v1]"

WORKLOADS = ("chatbot", "code-generation", "creative-writing", "qa", "summarization")


def _iso(epoch: float) -> str:
    """The queue's ``started_at`` form: naive UTC ISO 8601."""
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).replace(tzinfo=None).isoformat()


def sweep(completed: int = 3700, failed: int = 107, running: int = 293, total: int = 9000, *,
          rate: float = 118.2, stale: int = 3, ts: float | None = None) -> Sweep:
    """A snapshot of a 9,000-config sweep part-way through."""
    pending = total - completed - failed - running
    failures = [
        {"error_message": OOM, "count": 61},
        {"error_message": TIMEOUT, "count": 30},
        {"error_message": REFUSED, "count": failed - 91},
    ] if failed > 91 else ([{"error_message": OOM, "count": failed}] if failed else [])
    stale_rows = [
        {"id": 4211 + i * 17, "workload_type": WORKLOADS[i % 5], "batch_size": 8, "sequence_length": 4096,
         "status": "running", "started_at": _iso(FIXED_NOW + 30 - 3 * 3600 - i * 600), "retry_count": i % 2,
         "worker": f"{WORKFLOW}-worker-{12 + i}"}
        for i in range(stale)
    ]
    per = total // 5
    by_workload = []
    for i, w in enumerate(WORKLOADS):
        c = completed // 5 + (i * 37) % 100 - 40
        f = failed // 5 + (1 if i < failed % 5 else 0)
        r = running // 5 + (1 if i < running % 5 else 0)
        by_workload.append({"workload_type": w, "completed": c, "failed": f, "running": r, "pending": per - c - f - r})
    by_priority = []
    done_left, run_left, fail_left = completed + failed, running, failed
    for p in (100, 105, 110, 115, 120, 200, 205, 210, 300, 310, 400, 500):
        share = total // 12
        done = min(share, done_left)
        done_left -= done
        f = min(fail_left, round(done * failed / max(1, completed + failed)))
        fail_left -= f
        r = min(share - done, run_left)
        run_left -= r
        by_priority.append({"priority": p, "completed": done - f, "failed": f, "running": r,
                            "pending": share - done - r})
    remaining = pending + running
    return Sweep(
        MVID, total=total, pending=pending, running=running, completed=completed, failed=failed,
        configs_per_min=rate, eta_s=remaining / rate * 60 if rate else None,
        failures=failures, stale=stale_rows, by_workload=by_workload, by_priority=by_priority,
        stale_after_min=120.0, ts=ts if ts is not None else FIXED_NOW + 30,
    )


def node_phases(workers: int = 12) -> list[Phase]:
    """The Workflow, its populate node, ``workers`` worker nodes (one failed) and finalize."""
    t = FIXED_NOW
    out = [
        Phase(WORKFLOW, "Running", "", kind="workflow", started=t),
        Phase("populate", "Succeeded", "9,000 configs", kind="node", started=t, finished=t + 4),
    ]
    for i in range(workers):
        if i == 3:
            out.append(Phase(f"worker({i})", "Failed", "OOMKilled (exit code 137)", kind="node",
                             started=t + 5, finished=t + 21, retries=1))
        else:
            out.append(Phase(f"worker({i})", "Running", "", kind="node", started=t + 5 + i))
    out.append(Phase("finalize", "Pending", "", kind="node"))
    return out


def sweep_script(gate: Gate | None = None, *, workers: int = 12) -> list:
    """Nodes, a few worker log lines and one snapshot; then waits at ``gate``."""
    t = FIXED_NOW
    steps: list = [
        node_phases(workers),
        [LogLine(f"[worker-{i % 4}] config #{1000 + i} completed in {2 + i % 7}.{i % 10} s", source="worker",
                 ts=t + 6 + i)
         for i in range(12)],
        sweep(),
    ]
    steps.append(gate if gate is not None else Gate())
    return steps


class FakeReader:
    """Answers the drill-in and reset-stale like the queue API would; records calls.

    Args:
        configs: The failed configs per error message.
        reset_result: What ``reset_stale`` returns.
        delay: Seconds each call takes (a slow API).
    """

    def __init__(self, configs: dict[str, list[dict[str, Any]]] | None = None,
                 reset_result: dict[str, int] | None = None, delay: float = 0.0) -> None:
        self.configs = configs if configs is not None else default_group_configs()
        self.reset_result = reset_result if reset_result is not None else {"reset": 3, "failed": 1}
        self.delay = delay
        self.stale_after_min = 120.0
        self.failed_calls: list[str] = []
        self.reset_calls = 0
        self.closed = False

    async def failed_configs(self, error_message: str, limit: int = 500) -> list[dict[str, Any]]:
        self.failed_calls.append(error_message)
        if self.delay:
            await asyncio.sleep(self.delay)
        return list(self.configs.get(error_message, []))[:limit]

    async def reset_stale(self, timeout_minutes: float | None = None, max_retries: int = 3) -> dict[str, int]:
        self.reset_calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return dict(self.reset_result)

    async def aclose(self) -> None:
        self.closed = True


def default_group_configs() -> dict[str, list[dict[str, Any]]]:
    """The 61 configs of the OOM group (all with seq len 4096, larger batches)."""
    rows = []
    for i in range(61):
        rows.append({
            "id": 812 + i * 101, "model_version_id": MVID, "hardware_config_id": 1 + i % 2, "framework_id": 1,
            "workload_type": WORKLOADS[i % 5], "batch_size": 8 if i % 2 else 4, "sequence_length": 4096,
            "status": "failed", "priority": 130 + i * 10, "retry_count": i % 3, "error_message": OOM,
            "started_at": _iso(FIXED_NOW - 900 + i * 60), "completed_at": _iso(FIXED_NOW - 800 + i * 60),
            "worker": f"{WORKFLOW}-worker-{i}",
        })
    return {OOM: rows}


def argo_backend(script: Any, reader: FakeReader | None = None) -> ScriptedBackend:
    """A scripted backend with the ``work_queue`` capability whose ``reader()`` gives ``reader``."""
    backend = ScriptedBackend(script, name="argo")
    backend.capabilities = frozenset({"work_queue"})  # type: ignore[attr-defined]  # a fake backend's test-only attribute
    fake = reader if reader is not None else FakeReader()
    backend.reader = lambda model_version_id, queue_url=None: fake  # type: ignore[attr-defined]  # a fake backend's test-only attribute
    backend.fake_reader = fake  # type: ignore[attr-defined]  # a fake backend's test-only attribute
    return backend


def argo_spec(experiment_id: str | None = None):
    return make_spec(backend="argo", **({"experiment_id": experiment_id} if experiment_id else {}))


def make_sweep_app(script: Any, reader: FakeReader | None = None, **kw):
    """The real app (real controller, default monitor factory) on a scripted argo backend."""
    return make_app(argo_backend(script, reader), **kw)
