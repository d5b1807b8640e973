"""The queue API over real HTTP (uvicorn on a free port): the cycle, errors, roles, leases, exactly-once results."""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import pytest

from tests.integration.queue.conftest import ADMIN, WORKER, ApiServer, W, auth, db_url

pytestmark = pytest.mark.services

SMALL = {"hardware": ["H100:1"], "frameworks": ["vllm"], "batch_sizes": [1, 2], "sequence_lengths": [1024]}


def test_full_cycle_over_http(api):
    with api.client("admin") as admin, api.client("worker") as c:
        assert c.get("/health").json() == {"status": "ok"}
        dry = admin.post(f"{W}/populate/mv1", params={"dry_run": True}, json=SMALL).json()
        assert dry["total"] == 10 and dry["created"] == 0
        assert admin.post(f"{W}/populate/mv1", json=SMALL).json()["created"] == 10
        batch = c.post(f"{W}/configs/get-batch", json={"limit": 4}).json()
        assert len(batch) == 4 and all(b["status"] == "running" for b in batch)
        assert len({b["lease_id"] for b in batch}) == 4, "one lease per config"
        lease = {b["id"]: b["lease_id"] for b in batch}
        r = c.post(
            f"{W}/configs/{batch[0]['id']}/status", json={"status": "completed", "lease_id": lease[batch[0]["id"]]}
        )
        assert r.status_code == 200 and r.json()["status"] == "completed"
        r = c.post(
            f"{W}/configs/{batch[1]['id']}/status",
            json={
                "status": "failed",
                "error_message": "OOM killed during inference",
                "lease_id": lease[batch[1]["id"]],
            },
        )
        assert r.json()["error_message"] == "OOM killed during inference"
        r = c.post(
            f"{W}/configs/{batch[2]['id']}/results", json={"metrics": {"tps": 1.5}, "lease_id": lease[batch[2]["id"]]}
        )
        assert r.status_code == 201
        prog = admin.get(f"{W}/progress/mv1").json()
        assert {k: prog[k] for k in ("total", "pending", "running", "completed", "failed", "progress_pct")} == {
            "total": 10,
            "pending": 6,
            "running": 2,
            "completed": 1,
            "failed": 1,
            "progress_pct": 20.0,
        }
        failed = admin.get(f"{W}/configs/mv1", params={"status": "failed"}).json()
        assert [f["id"] for f in failed] == [batch[1]["id"]]
        assert admin.get(f"{W}/failures/mv1").json() == [{"error_message": "OOM killed during inference", "count": 1}]
        assert admin.get(f"{W}/results/mv1").json()[0]["metrics"] == {"tps": 1.5}
        assert admin.post(f"{W}/maintenance/reset-stale", params={"timeout_minutes": 0}).json() == {
            "reset": 2,
            "failed": 0,
        }
        # an admin retries the failed config: back to pending, recorded under the admin token's name
        r = admin.post(f"{W}/configs/{batch[1]['id']}/status", json={"status": "pending"})
        assert r.status_code == 200 and r.json()["status"] == "pending"
        events = admin.get(f"{W}/configs/{batch[1]['id']}/history").json()["events"]
        assert [(e["action"], e["actor"]) for e in events] == [("claim", "pods"), ("fail", "pods"), ("retry", "ops")]
        doc = c.get("/openapi.json").json()
        assert "/api/v1/workflow/configs/get-batch" in doc["paths"]
        assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert c.get("/docs").status_code == 200


def test_errors_are_clear(api):
    with api.client("admin") as admin, api.client("worker") as c:
        admin.post(f"{W}/populate/mv1", json=SMALL)
        r = c.post(f"{W}/configs/get-batch", json={"limit": 501})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "limit"
        r = c.post(f"{W}/configs/get-batch", json={"limit": "lots"})
        assert r.status_code == 422
        r = c.post(f"{W}/configs/123456/status", json={"status": "completed", "lease_id": "0" * 32})
        assert r.status_code == 404 and "123456" in r.json()["detail"]
        pending = admin.get(f"{W}/configs/mv1", params={"status": "pending", "limit": 1}).json()[0]
        r = c.post(f"{W}/configs/{pending['id']}/status", json={"status": "completed", "lease_id": "0" * 32})
        assert (
            r.status_code == 409
            and r.json()["reason"] == "lease_unknown"
            and "not a lease of config" in r.json()["detail"]
        )
        r = c.post(f"{W}/configs/{pending['id']}/status", json={"status": "completed"})
        assert r.status_code == 422 and "lease_id is required" in r.json()["detail"][0]["msg"]
        r = c.post(f"{W}/configs/{pending['id']}/status", json={"status": "exploded", "lease_id": "0" * 32})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "status"
        r = admin.post(f"{W}/configs/{pending['id']}/status", json={"status": "pending"})
        assert r.status_code == 409 and "only a failed config can be retried" in r.json()["detail"]
        assert admin.get(f"{W}/progress/mv2").json()["total"] == 0


@pytest.mark.parametrize(
    "body,field,reason",
    [
        ({"batch_sizes": [0]}, ["batch_sizes", 0], "greater than 0"),
        ({"batch_sizes": [-4]}, ["batch_sizes", 0], "greater than 0"),
        ({"batch_sizes": []}, ["batch_sizes"], "at least 1 item"),
        ({"sequence_lengths": [1024, "long"]}, ["sequence_lengths", 1], "valid integer"),
        ({"sequence_lengths": [1.5]}, ["sequence_lengths", 0], "valid integer"),
        ({"sequence_lengths": [True]}, ["sequence_lengths", 0], "valid integer"),
        ({"hardware": []}, ["hardware"], "at least 1 item"),
        ({"hardware": ["H100:1", "  "]}, ["hardware", 1], "at least 1 character"),
        ({"hardware": ["H100:99999999999"]}, ["hardware"], "GPU count outside 1-1024"),
        ({"workloads": ["--rm"]}, ["workloads"], "begins with '-'"),
        ({"workloads": ["w" * 51]}, ["workloads", 0], "at most 50 characters"),
        ({"frameworks": ["vllm", "vllm"]}, ["frameworks"], "duplicate values: vllm"),
        ({"workloads": "chatbot"}, ["workloads"], "valid list"),
        ({"batch_size": [1]}, ["batch_size"], "Extra inputs are not permitted: unknown field 'batch_size'"),
        (
            {"hardware": [f"h{i}" for i in range(1000)], "frameworks": [f"f{i}" for i in range(1000)]},
            [],
            "at most 1,000,000",
        ),
    ],
)
def test_bad_populate_body_is_422_naming_the_field(api, body, field, reason):
    with api.client("admin") as c:
        for dry_run in (True, False):
            r = c.post(f"{W}/populate/mv2", params={"dry_run": dry_run}, json=body)
            assert r.status_code == 422, r.text
            [err] = r.json()["detail"]
            assert err["loc"] == ["body", *field] and reason in err["msg"], err
        assert c.get(f"{W}/progress/mv2").json()["total"] == 0  # nothing written


def test_partial_populate_body_keeps_the_other_defaults(api):
    with api.client("admin") as c:
        r = c.post(f"{W}/populate/mv3", params={"dry_run": True}, json={"batch_sizes": [1], "sequence_lengths": [2048]})
        assert r.status_code == 200 and r.json()["total"] == 10 * 3 * 5 * 1 * 1


# ----------------------------------------------------------------------------- roles

#: Every operation of the API: (method, path template, role it needs, a request that is valid apart from the token).
OPERATIONS = [
    ("POST", "/configs/get-batch", "worker", {"json": {"limit": 1}}),
    ("POST", "/configs/heartbeat", "worker", {"json": {"leases": [{"config_id": 1, "lease_id": "0" * 32}]}}),
    ("POST", "/configs/{config_id}/status", "worker", {"json": {"status": "completed", "lease_id": "0" * 32}}),
    ("POST", "/configs/{config_id}/results", "worker", {"json": {"lease_id": "0" * 32, "metrics": {}}}),
    ("POST", "/populate/{model_version_id}", "admin", {"params": {"dry_run": True}}),
    ("POST", "/maintenance/reset-stale", "admin", {"params": {"timeout_minutes": 60}}),
    ("GET", "/progress/{model_version_id}", "admin", {}),
    ("GET", "/rate/{model_version_id}", "admin", {}),
    ("GET", "/configs/{model_version_id}", "admin", {}),
    ("GET", "/configs/{config_id}/history", "admin", {}),
    ("GET", "/results/{model_version_id}", "admin", {}),
    ("GET", "/failures/{model_version_id}", "admin", {}),
    ("GET", "/breakdown/{model_version_id}", "admin", {}),
    ("GET", "/stale/{model_version_id}", "admin", {}),
]


def _call(c: httpx.Client, method: str, path: str, kw: dict, headers: dict | None = None) -> httpx.Response:
    url = W + path.format(config_id=1, model_version_id="mv1")
    return c.request(method, url, headers=headers, **kw)


def test_the_role_table_covers_every_operation_of_the_openapi_document(api):
    doc = httpx.get(f"{api.url}/openapi.json").json()
    documented = {(m.upper(), p.removeprefix(W)) for p, ops in doc["paths"].items() if p.startswith(W) for m in ops}
    assert documented == {(m, p) for m, p, _, _ in OPERATIONS}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert (op.get("security") == [{"HTTPBearer": []}]) == path.startswith(W), path


@pytest.mark.parametrize("method,path,role,kw", OPERATIONS, ids=[f"{m} {p}" for m, p, _, _ in OPERATIONS])
def test_401_403_per_role_and_endpoint(api, method, path, role, kw):
    with api.client(None) as c:
        c.post(f"{W}/populate/mv1", json=SMALL, headers=auth("admin")).raise_for_status()
        r = _call(c, method, path, kw)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert "Authorization: Bearer" in r.json()["detail"]
        r = _call(c, method, path, kw, {"Authorization": "Bearer not-a-token-of-this-queue"})
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
        assert "not-a-token" not in r.text  # the presented token is never echoed
        r = _call(c, method, path, kw, {"Authorization": f"Basic {ADMIN}"})
        assert r.status_code == 401
        worker = _call(c, method, path, kw, auth("worker"))
        admin = _call(c, method, path, kw, auth("admin"))
        if role == "admin":
            assert worker.status_code == 403 and "'pods' has the worker role" in worker.json()["detail"]
        else:
            assert worker.status_code not in (401, 403), worker.text
        assert admin.status_code not in (401, 403), admin.text  # admin may do everything
        assert admin.status_code < 500 and worker.status_code < 500


def test_public_progress_opens_only_the_counts(tmp_path):
    with (
        ApiServer(f"sqlite:///{tmp_path / 'q.db'}", app_options={"public_progress": True}) as api,
        api.client(None) as c,
    ):
        c.post(f"{W}/populate/mv1", json=SMALL, headers=auth("admin")).raise_for_status()
        assert c.get(f"{W}/progress/mv1").json()["total"] == 10
        assert c.get(f"{W}/rate/mv1").status_code == 200
        for method, path, _role, kw in OPERATIONS:
            if path.startswith(("/progress", "/rate")):
                continue
            assert _call(c, method, path, kw).status_code == 401, path


def test_retrying_a_failed_config_needs_an_admin(api):
    with api.client("admin") as admin, api.client("worker") as c:
        admin.post(f"{W}/populate/mv1", json=SMALL).raise_for_status()
        [cfg] = c.post(f"{W}/configs/get-batch", json={"limit": 1}).json()
        c.post(
            f"{W}/configs/{cfg['id']}/status", json={"status": "failed", "lease_id": cfg["lease_id"]}
        ).raise_for_status()
        r = c.post(f"{W}/configs/{cfg['id']}/status", json={"status": "pending"})
        assert r.status_code == 403 and "needs an admin token" in r.json()["detail"]
        assert admin.post(f"{W}/configs/{cfg['id']}/status", json={"status": "pending"}).json()["status"] == "pending"


# ----------------------------------------------------------------------------- leases and exactly-once


def test_stale_worker_race_b_wins_and_a_gets_409(api_db):
    """A claims; reset-stale returns A's config; B claims it; A's late report is refused, B's result stands."""
    with api_db.client("admin") as admin, api_db.client("worker") as w:
        admin.post(f"{W}/populate/mv1", json=SMALL).raise_for_status()
        [a] = w.post(f"{W}/configs/get-batch", json={"limit": 1, "worker": "A"}).json()
        assert admin.post(f"{W}/maintenance/reset-stale", params={"timeout_minutes": 0}).json() == {
            "reset": 1,
            "failed": 0,
        }
        [b] = w.post(f"{W}/configs/get-batch", json={"limit": 1, "worker": "B"}).json()
        assert b["id"] == a["id"] and b["lease_id"] != a["lease_id"] and b["retry_count"] == 1
        cid = a["id"]
        for late in (
            {"status": "completed", "lease_id": a["lease_id"], "metrics": {"tps": 1.0}},
            {"status": "failed", "lease_id": a["lease_id"], "error_message": "A's late failure"},
            {"status": "pending", "lease_id": a["lease_id"]},
        ):
            r = w.post(f"{W}/configs/{cid}/status", json=late)
            assert r.status_code == 409, r.text
            body = r.json()
            assert body["reason"] == "lease_revoked" and body["config_id"] == cid and body["status"] == "running"
            assert body["detail"].startswith(
                f"Config {cid} was reassigned: your lease was revoked by reset-stale (ops, "
            )
            assert "now runs under another worker's lease" in body["detail"] and "not recorded" in body["detail"]
        r = w.post(f"{W}/configs/{cid}/results", json={"lease_id": a["lease_id"], "metrics": {"tps": 1.0}})
        assert r.status_code == 409 and r.json()["reason"] == "lease_revoked"
        r = w.post(
            f"{W}/configs/{cid}/status",
            json={"status": "completed", "lease_id": b["lease_id"], "metrics": {"tps": 2.0}},
        )
        assert r.status_code == 200 and r.json()["status"] == "completed"
        r = w.post(
            f"{W}/configs/{cid}/status",
            json={"status": "completed", "lease_id": a["lease_id"], "metrics": {"tps": 1.0}},
        )
        assert r.status_code == 409 and "has since been completed" in r.json()["detail"]
        results = admin.get(f"{W}/results/mv1").json()
        assert [(x["config_id"], x["metrics"], x["lease_id"]) for x in results] == [(cid, {"tps": 2.0}, b["lease_id"])]
        h = admin.get(f"{W}/configs/{cid}/history").json()
        assert [(e["action"], e["lease_id"], e["detail"]) for e in h["events"] if e["action"] != "result"] == [
            ("claim", a["lease_id"], "A"),
            ("reset", a["lease_id"], "stale (lease expired or not renewed for 0 min)"),
            ("claim", b["lease_id"], "B"),
            ("complete", b["lease_id"], None),
        ]
        assert admin.get(f"{W}/progress/mv1").json()["completed"] == 1


def test_reports_are_exactly_once_and_retries_get_the_same_answer(api_db):
    with api_db.client("admin") as admin, api_db.client("worker") as w:
        admin.post(f"{W}/populate/mv1", json=SMALL).raise_for_status()
        c1, c2, c3 = w.post(f"{W}/configs/get-batch", json={"limit": 3}).json()
        done = {"status": "completed", "lease_id": c1["lease_id"], "metrics": {"tps": 3.5, "p99_ms": [1, 2]}}
        first = w.post(f"{W}/configs/{c1['id']}/status", json=done)
        again = [w.post(f"{W}/configs/{c1['id']}/status", json=done) for _ in range(4)]
        assert first.status_code == 200 and all((r.status_code, r.json()) == (200, first.json()) for r in again)
        r = w.post(f"{W}/configs/{c1['id']}/status", json={**done, "metrics": {"tps": 9.9}})
        assert r.status_code == 409 and r.json()["reason"] == "result_differs"
        r = w.post(f"{W}/configs/{c1['id']}/status", json={**done, "status": "failed"})
        assert (
            r.status_code == 409 and r.json()["reason"] == "wrong_state" and "already completed" in r.json()["detail"]
        )

        body = {"lease_id": c2["lease_id"], "metrics": {"tps": 7.0}}
        posted = [w.post(f"{W}/configs/{c2['id']}/results", json=body) for _ in range(5)]
        assert {(r.status_code, r.json()["id"]) for r in posted} == {(201, posted[0].json()["id"])}
        r = w.post(f"{W}/configs/{c2['id']}/results", json={**body, "metrics": {"tps": 1.0}})
        assert r.status_code == 409 and r.json()["reason"] == "result_differs"
        # the status with the same result afterwards adds no second row; a different one is refused
        r = w.post(f"{W}/configs/{c2['id']}/status", json={"status": "completed", **body})
        assert r.status_code == 200
        r = w.post(f"{W}/configs/{c2['id']}/results", json=body)
        assert r.status_code == 201 and r.json()["id"] == posted[0].json()["id"]  # a retry, after completion too
        r = w.post(f"{W}/configs/{c2['id']}/results", json={**body, "metrics": {"other": 1}})
        assert r.status_code == 409

        # a result for a config that is not running under that lease is refused
        pending = admin.get(f"{W}/configs/mv1", params={"status": "pending", "limit": 1}).json()[0]
        r = w.post(f"{W}/configs/{pending['id']}/results", json={"lease_id": c3["lease_id"], "metrics": {}})
        assert r.status_code == 409 and r.json()["reason"] == "lease_unknown"
        w.post(
            f"{W}/configs/{c3['id']}/status", json={"status": "pending", "lease_id": c3["lease_id"]}
        ).raise_for_status()
        r = w.post(f"{W}/configs/{c3['id']}/status", json={"status": "pending", "lease_id": c3["lease_id"]})
        assert r.status_code == 200 and r.json()["status"] == "pending"  # a retried give-back
        r = w.post(f"{W}/configs/{c3['id']}/results", json={"lease_id": c3["lease_id"], "metrics": {}})
        assert r.status_code == 409 and r.json()["reason"] == "lease_revoked" and "given back" not in r.json()["detail"]

        rows = admin.get(f"{W}/results/mv1").json()
        assert sorted(x["config_id"] for x in rows) == sorted([c1["id"], c2["id"]])  # one row per attempt


def _utc(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t


def _wait_past(moment: dt.datetime, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while dt.datetime.now(dt.UTC).replace(tzinfo=None) <= moment:
        assert time.monotonic() < deadline, "the clock did not pass the lease's expiry"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_heartbeats_extend_leases_and_expiry_revokes_them(request, tmp_path, kind):
    with (
        ApiServer(db_url(kind, request, tmp_path), store_options={"lease_seconds": 2}) as api,
        api.client("admin") as admin,
        api.client("worker") as w,
    ):
        admin.post(f"{W}/populate/mv1", json=SMALL).raise_for_status()
        kept, lost = w.post(f"{W}/configs/get-batch", json={"limit": 2}).json()
        assert (_utc(kept["lease_expires_at"]) - _utc(kept["started_at"])).total_seconds() == pytest.approx(2)
        assert set(kept) == {"id", "model_version_id", "hardware_config_id", "framework_id", "workload_type",
                             "batch_size", "sequence_length", "status", "priority", "created_at", "started_at",
                             "completed_at", "error_message", "retry_count", "worker", "lease_id", "lease_expires_at"}
        beat = w.post(
            f"{W}/configs/heartbeat", json={"leases": [{"config_id": kept["id"], "lease_id": kept["lease_id"]}]}
        )
        renewed = beat.json()["renewed"][0]
        assert beat.json()["revoked"] == [] and _utc(renewed["lease_expires_at"]) > _utc(kept["lease_expires_at"])
        _wait_past(_utc(lost["lease_expires_at"]))
        r = w.post(f"{W}/configs/{lost['id']}/status", json={"status": "completed", "lease_id": lost["lease_id"]})
        assert r.status_code == 409 and r.json()["reason"] == "lease_expired" and "expired at" in r.json()["detail"]
        beat = w.post(
            f"{W}/configs/heartbeat",
            json={"leases": [{"config_id": c["id"], "lease_id": c["lease_id"]} for c in (kept, lost)]},
        ).json()
        assert lost["id"] in beat["revoked"]
        # an expired lease makes the config stale whatever the timeout: reset-stale returns it
        stale = admin.get(f"{W}/stale/mv1", params={"older_than_minutes": 120}).json()
        assert lost["id"] in {c["id"] for c in stale}
        assert admin.post(f"{W}/maintenance/reset-stale", params={"timeout_minutes": 120}).json()["reset"] >= 1
        r = w.post(f"{W}/configs/{lost['id']}/status", json={"status": "completed", "lease_id": lost["lease_id"]})
        assert (
            r.status_code == 409
            and r.json()["reason"] == "lease_revoked"
            and "waiting in the queue again" in r.json()["detail"]
        )


def test_body_size_limit_is_413_and_configurable(tmp_path, api):
    with api.client("admin") as admin, api.client("worker") as w:
        admin.post(f"{W}/populate/mv1", json=SMALL).raise_for_status()
        [cfg] = w.post(f"{W}/configs/get-batch", json={"limit": 1}).json()
        big = {"lease_id": cfg["lease_id"], "metrics": {"blob": "x" * (5 * 1024 * 1024)}}
        r = w.post(f"{W}/configs/{cfg['id']}/results", json=big)
        assert r.status_code == 413 and "larger than 1,048,576 bytes" in r.json()["detail"]
        # without a Content-Length (chunked) the limit holds as well
        r = w.post(
            f"{W}/configs/{cfg['id']}/results",
            content=iter([json.dumps(big).encode()]),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        ok = {"lease_id": cfg["lease_id"], "metrics": {"blob": "x" * (900 * 1024)}}
        assert w.post(f"{W}/configs/{cfg['id']}/results", json=ok).status_code == 201
        assert admin.get(f"{W}/results/mv1").json()[0]["metrics"]["blob"] == ok["metrics"]["blob"]
    with (
        ApiServer(f"sqlite:///{tmp_path / 'small.db'}", app_options={"max_body_bytes": 2048}) as small,
        small.client("admin") as admin,
    ):
        r = admin.post(f"{W}/populate/mv1", json={"hardware": [f"hw{i}:1" for i in range(300)]})
        assert r.status_code == 413 and "2,048 bytes" in r.json()["detail"]
        assert admin.post(f"{W}/populate/mv1", json=SMALL).status_code == 200


@pytest.mark.parametrize(
    "method,path,kw,where",
    [
        ("POST", "/configs/get-batch", {"json": {"limit": 5, "model_version": "typo"}}, ["body", "model_version"]),
        ("POST", "/configs/get-batch", {"json": {"limit": True}}, ["body", "limit"]),
        ("POST", "/configs/get-batch", {"json": {"limit": 2**70}}, ["body", "limit"]),
        ("POST", "/configs/get-batch", {"json": {"priority_threshold": 2**70}}, ["body", "priority_threshold"]),
        (
            "POST",
            f"/configs/{2**70}/status",
            {"json": {"status": "completed", "lease_id": "0" * 32}},
            ["path", "config_id"],
        ),
        ("GET", f"/configs/{2**70}/history", {}, ["path", "config_id"]),
        ("GET", "/rate/mv1", {"params": {"window_minutes": "1e308"}}, ["query", "window_minutes"]),
        ("GET", "/stale/mv1", {"params": {"older_than_minutes": "1e308"}}, ["query", "older_than_minutes"]),
        ("POST", "/maintenance/reset-stale", {"params": {"timeout_minutes": "1e308"}}, ["query", "timeout_minutes"]),
        ("POST", "/maintenance/reset-stale", {"params": {"timeout_minutes": "nan"}}, ["query", "timeout_minutes"]),
        ("POST", "/maintenance/reset-stale", {"params": {"timeout_minute": "5"}}, ["query", "timeout_minute"]),
        ("GET", "/configs/mv1", {"params": {"statuss": "failed"}}, ["query", "statuss"]),
        ("GET", "/progress/mv1", {"params": {"x": "1"}}, ["query", "x"]),
    ],
)
def test_hostile_input_is_422_naming_the_field(api, method, path, kw, where):
    with api.client("admin") as c:
        c.post(f"{W}/populate/mv1", json=SMALL).raise_for_status()
        r = c.request(method, W + path, **kw)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [where]
        if where[-1] in ("model_version", "timeout_minute", "statuss", "x"):
            assert f"unknown field '{where[-1]}'" in r.json()["detail"][0]["msg"]
        assert c.get(f"{W}/progress/mv1").json()["running"] == 0  # nothing was claimed


def test_nonfinite_and_unencodable_json_is_422(api):
    with api.client("admin") as admin, api.client("worker") as w:
        admin.post(f"{W}/populate/mv1", json=SMALL).raise_for_status()
        [cfg] = w.post(f"{W}/configs/get-batch", json={"limit": 1}).json()
        for raw in (
            '{"lease_id": "%s", "metrics": {"x": NaN}}',
            '{"lease_id": "%s", "metrics": {"x": 1e999}}',
            '{"lease_id": "%s", "metrics": {"\\ud800": 1}}',
            '{"lease_id": "%s", "metrics": {"x": "a\\u0000b"}}',
        ):
            r = w.post(
                f"{W}/configs/{cfg['id']}/results",
                content=raw % cfg["lease_id"],
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "metrics"], (raw, r.text)
        r = w.post(
            f"{W}/configs/get-batch",
            content="[" * 100_000 + "]" * 100_000,
            headers={"content-type": "application/json"},
        )
        assert 400 <= r.status_code < 500
        assert WORKER not in r.text
