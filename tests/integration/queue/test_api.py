"""The queue API over real HTTP (uvicorn on a free port)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.services

W = "/api/v1/workflow"
SMALL = {"hardware": ["H100:1"], "frameworks": ["vllm"], "batch_sizes": [1, 2], "sequence_lengths": [1024]}


def test_full_cycle_over_http(api):
    with httpx.Client(base_url=api.url, timeout=10) as c:
        assert c.get("/health").json() == {"status": "ok"}
        dry = c.post(f"{W}/populate/mv1", params={"dry_run": True}, json=SMALL).json()
        assert dry["total"] == 10 and dry["created"] == 0
        assert c.post(f"{W}/populate/mv1", json=SMALL).json()["created"] == 10
        batch = c.post(f"{W}/configs/get-batch", json={"limit": 4}).json()
        assert len(batch) == 4 and all(b["status"] == "running" for b in batch)
        r = c.post(f"{W}/configs/{batch[0]['id']}/status", json={"status": "completed"})
        assert r.status_code == 200 and r.json()["status"] == "completed"
        r = c.post(f"{W}/configs/{batch[1]['id']}/status", json={"status": "failed", "error_message": "OOM killed during inference"})
        assert r.json()["error_message"] == "OOM killed during inference"
        assert c.post(f"{W}/configs/{batch[2]['id']}/results", json={"metrics": {"tps": 1.5}}).status_code == 201
        prog = c.get(f"{W}/progress/mv1").json()
        assert {k: prog[k] for k in ("total", "pending", "running", "completed", "failed", "progress_pct")} == {
            "total": 10, "pending": 6, "running": 2, "completed": 1, "failed": 1, "progress_pct": 20.0}
        failed = c.get(f"{W}/configs/mv1", params={"status": "failed"}).json()
        assert [f["id"] for f in failed] == [batch[1]["id"]]
        assert c.get(f"{W}/failures/mv1").json() == [{"error_message": "OOM killed during inference", "count": 1}]
        assert c.get(f"{W}/results/mv1").json()[0]["metrics"] == {"tps": 1.5}
        assert c.post(f"{W}/maintenance/reset-stale", params={"timeout_minutes": 0}).json() == {"reset": 2, "failed": 0}
        assert "/api/v1/workflow/configs/get-batch" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200


def test_errors_are_clear(api):
    with httpx.Client(base_url=api.url, timeout=10) as c:
        c.post(f"{W}/populate/mv1", json=SMALL)
        r = c.post(f"{W}/configs/get-batch", json={"limit": 501})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "limit"
        r = c.post(f"{W}/configs/get-batch", json={"limit": "lots"})
        assert r.status_code == 422
        r = c.post(f"{W}/configs/123456/status", json={"status": "completed"})
        assert r.status_code == 404 and "123456" in r.json()["detail"]
        pending = c.get(f"{W}/configs/mv1", params={"status": "pending", "limit": 1}).json()[0]
        r = c.post(f"{W}/configs/{pending['id']}/status", json={"status": "completed"})
        assert r.status_code == 409 and "pending" in r.json()["detail"]
        r = c.post(f"{W}/configs/{pending['id']}/status", json={"status": "exploded"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "status"
        assert c.get(f"{W}/progress/mv2").json()["total"] == 0


@pytest.mark.parametrize("body,field,reason", [
    ({"batch_sizes": [0]}, ["batch_sizes", 0], "greater than 0"),
    ({"batch_sizes": [-4]}, ["batch_sizes", 0], "greater than 0"),
    ({"batch_sizes": []}, ["batch_sizes"], "at least 1 item"),
    ({"sequence_lengths": [1024, "long"]}, ["sequence_lengths", 1], "valid integer"),
    ({"sequence_lengths": [1.5]}, ["sequence_lengths", 0], "valid integer"),
    ({"hardware": []}, ["hardware"], "at least 1 item"),
    ({"hardware": ["H100:1", "  "]}, ["hardware", 1], "at least 1 character"),
    ({"frameworks": ["vllm", "vllm"]}, ["frameworks"], "duplicate values: vllm"),
    ({"workloads": "chatbot"}, ["workloads"], "valid list"),
    ({"batch_size": [1]}, ["batch_size"], "Extra inputs are not permitted"),
    ({"hardware": [f"h{i}" for i in range(1000)], "frameworks": [f"f{i}" for i in range(1000)]}, [], "at most 1,000,000"),
])
def test_bad_populate_body_is_422_naming_the_field(api, body, field, reason):
    with httpx.Client(base_url=api.url, timeout=10) as c:
        for dry_run in (True, False):
            r = c.post(f"{W}/populate/mv2", params={"dry_run": dry_run}, json=body)
            assert r.status_code == 422, r.text
            [err] = r.json()["detail"]
            assert err["loc"] == ["body", *field] and reason in err["msg"], err
        assert c.get(f"{W}/progress/mv2").json()["total"] == 0  # nothing written


def test_partial_populate_body_keeps_the_other_defaults(api):
    with httpx.Client(base_url=api.url, timeout=10) as c:
        r = c.post(f"{W}/populate/mv3", params={"dry_run": True}, json={"batch_sizes": [1], "sequence_lengths": [2048]})
        assert r.status_code == 200 and r.json()["total"] == 10 * 3 * 5 * 1 * 1
