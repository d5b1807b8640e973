"""The `sweepdeck queue` CLI: report (paged), reset-stale, serve as a real process, the worker's --endpoint mode."""

from __future__ import annotations

import httpx
import pytest

from tui.cli import main

pytestmark = pytest.mark.services

W = "/api/v1/workflow"
MATRIX = {"hardware": ["H100:1", "A100:1"], "frameworks": ["vllm"], "batch_sizes": [1, 2], "sequence_lengths": [1024]}  # 20


def _complete_all(url: str, metric=lambda c: float(c["id"])) -> list[dict]:
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.post(f"{W}/populate/mv1", json=MATRIX).json()["created"] == 20
        batch = c.post(f"{W}/configs/get-batch", json={"limit": 500}).json()
        for cfg in batch:
            c.post(f"{W}/configs/{cfg['id']}/status",
                   json={"status": "completed", "metrics": {"output_tokens_per_s": metric(cfg)}}).raise_for_status()
    return batch


def _table(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rank"))
    return [line.split() for line in lines[start + 1:]]


@pytest.mark.parametrize("page_size", [7, 20, 10_000])
def test_report_pages_through_every_config_and_result(api, capsys, page_size):
    batch = _complete_all(api.url)
    assert main(["queue", "report", "--api-url", api.url, "mv1", "--page-size", str(page_size), "--top", "50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("20 completed, 0 failed of 20 (100.00%)")
    rows = _table(out)
    # every result is ranked: 2 hardware × 5 workloads = 10 groups of 2 configs (the batch sizes)
    assert len(rows) == 10 and sum(int(r[-1]) for r in rows) == 20
    # the best group holds the highest config ids, which only the last page of a small page size has
    best = max(batch, key=lambda c: c["id"])
    mates = [c["id"] for c in batch if (c["hardware_config_id"], c["workload_type"]) == (best["hardware_config_id"], best["workload_type"])]
    assert rows[0][1] == str(best["hardware_config_id"]) and rows[0][3] == best["workload_type"]
    assert float(rows[0][4]) == pytest.approx(sum(mates) / len(mates))


def test_report_bad_page_size_is_one_message(api, capsys):
    assert main(["queue", "report", "--api-url", api.url, "mv1", "--page-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--page-size must be 1-10000" in err and "Traceback" not in err


def test_results_listing_has_offset(api):
    _complete_all(api.url)
    with httpx.Client(base_url=api.url, timeout=10) as c:
        whole = [r["id"] for r in c.get(f"{W}/results/mv1", params={"limit": 100}).json()]
        paged = [r["id"] for off in (0, 8, 16) for r in c.get(f"{W}/results/mv1", params={"limit": 8, "offset": off}).json()]
        assert len(whole) == 20 and paged == whole
        assert c.get(f"{W}/results/mv1", params={"offset": -1}).status_code == 422
