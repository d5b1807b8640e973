"""The Argo work queue's results, per config, read through the queue API.

Every config of a model version that has a result becomes a load point; the
points are ordered and grouped like the sweep view (workload, then sequence
length, then batch size — the batch size is the concurrency the worker ran it
at). A result's ``metrics`` is what the worker posted: the load generator's
summary (``completed``, ``failed``, ``errors``, ``ttft_ms``, ``itl_ms``,
``latency_ms``, ``requests_per_s``, ``output_tokens_per_s``) or, for a
command worker, whatever that command reported. Failed configs are counted
in the failure breakdown with their error message.

The API may ask for a bearer token (``Authorization: Bearer …``); pass it as
``token``.
"""

from __future__ import annotations

from typing import Any

import httpx

from backends.results import loadgen
from backends.results.failures import Breakdown, reason_of
from backends.results.model import QUEUE_HARNESS, LoadPoint, Origin, Result, Setting
from config.errors import SweepdeckError

HARNESS = QUEUE_HARNESS
PREFIX = "/api/v1/workflow"
PAGE = 10_000


class QueueClient:
    """Reads a model version's configs and results (paged) from the queue API.

    Args:
        url: The queue service root (``http://host:8080``).
        token: Bearer token when the service asks for one.
        timeout: Seconds per request.
        transport: An httpx transport (tests).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url + PREFIX, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _pages(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        previous = None
        while True:
            page = self._get(path, {"limit": PAGE, "offset": offset})
            if page and page == previous:  # a server that ignores offset would page forever
                raise SweepdeckError(f"Queue API at {self.url}: {path} returns the same page for every offset.",
                                     "Is the URL the sweepdeck queue service (`sweepdeck queue serve`)?")
            previous = page
            if not isinstance(page, list):
                raise SweepdeckError(f"Queue API at {self.url}: {path} did not return a list.",
                                     "Is the URL the sweepdeck queue service (`sweepdeck queue serve`)?")
            out += [row for row in page if isinstance(row, dict)]
            if len(page) < PAGE:
                return out
            offset += PAGE

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            r = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise SweepdeckError(f"Queue API at {self.url} cannot be reached: {exc}.",
                                 "Check the URL and that `sweepdeck queue serve` runs.") from None
        if r.status_code in (401, 403):
            raise SweepdeckError(f"Queue API at {self.url} refused the request (HTTP {r.status_code}).",
                                 "Give its token with --queue-token or SWEEPDECK_QUEUE_TOKEN.")
        if r.status_code >= 400:
            raise SweepdeckError(
                f"Queue API at {self.url}: GET {path} failed with HTTP {r.status_code}: {r.text[:200]}")
        try:
            return r.json()
        except ValueError:
            raise SweepdeckError(f"Queue API at {self.url}: GET {path} did not answer JSON.") from None

    def configs(self, model_version_id: str) -> list[dict[str, Any]]:
        return self._pages(f"/configs/{model_version_id}")

    def results(self, model_version_id: str) -> list[dict[str, Any]]:
        return self._pages(f"/results/{model_version_id}")

    def result(self, model_version_id: str, name: str | None = None) -> Result:
        """The model version's results as one :class:`Result`."""
        return from_queue(model_version_id, self.configs(model_version_id), self.results(model_version_id),
                          self.url, name)


def _key(config: dict[str, Any]) -> tuple:
    return (str(config.get("workload_type") or ""), int(config.get("sequence_length") or 0),
            int(config.get("batch_size") or 0), int(config.get("hardware_config_id") or 0),
            int(config.get("framework_id") or 0), int(config.get("id") or 0))


def _point(config: dict[str, Any], metrics: dict[str, Any], shared: bool) -> LoadPoint:
    workload, seq, batch, hw, fw, _ = _key(config)
    label = f"{workload} seq {seq} batch {batch}" + (f" hw{hw} fw{fw}" if shared else "")
    point = loadgen.load_point({"summary": metrics}, label)
    point.rate, point.concurrency = None, batch or None
    point.group = f"{workload} · seq {seq}"
    return point


def from_queue(model_version_id: str, configs: list[dict[str, Any]], results: list[dict[str, Any]], url: str,
               name: str | None = None) -> Result:
    """Build the result of a model version from its configs and result rows."""
    latest: dict[int, dict[str, Any]] = {}
    for row in sorted(results, key=lambda r: int(r.get("id") or 0)):
        cid = row.get("config_id")
        if isinstance(cid, int) and isinstance(row.get("metrics"), dict):
            latest[cid] = row["metrics"]
    ordered = sorted(configs, key=_key)
    cells: dict[tuple, int] = {}
    for c in ordered:
        cells[_key(c)[:3]] = cells.get(_key(c)[:3], 0) + 1
    points: list[LoadPoint] = []
    failures = Breakdown()
    waiting = 0
    for c in ordered:
        metrics = latest.get(int(c.get("id") or 0))
        if c.get("status") == "failed":
            message = str(c.get("error_message") or "(no message)")
            failures.add(message, reason=f"config failed: {reason_of(message)}")
        elif metrics is None:
            waiting += c.get("status") in ("pending", "running")
        if metrics is None:
            continue
        points.append(_point(c, metrics, cells[_key(c)[:3]] > 1))
        for f in loadgen.breakdown({"summary": metrics}).failures():
            failures.add(f.sample, f.count, reason=f.reason)
    notes = []
    if waiting:
        notes.append(f"{waiting} of {len(configs)} configs have no result yet (pending or running)")
    spec = {
        "queue.model_version_id": Setting(model_version_id, "queue"),
        "queue.url": Setting(url, "queue"),
        "queue.workloads": Setting(sorted({_key(c)[0] for c in configs}), "queue"),
        "queue.sequence_lengths": Setting(sorted({_key(c)[1] for c in configs}), "queue"),
        "queue.batch_sizes": Setting(sorted({_key(c)[2] for c in configs}), "queue"),
    }
    return Result(
        name=name or model_version_id, origin=Origin(HARNESS, "api v1", [f"{url}{PREFIX}/results/{model_version_id}"]),
        load_points=points, failures=failures.failures(), spec=spec, notes=notes, path=url,
    )
