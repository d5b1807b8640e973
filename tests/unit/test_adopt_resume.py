"""Following a run again after its supervisor died: events go through the supervisor's run dir; the
SLURM log tails resume after the lines the run saved (no server, no processes)."""

from __future__ import annotations

from backends.base import Run
from backends.events import LogLine, Notice
from backends.session import Session
from backends.slurm.backend import _saved_line_counts
from backends.store import RunDir, RunRecord, RunStore
from config.catalog import load_catalogs
from config.spec import build_spec


class ReopeningBackend:
    """attach() opens the run's directory again, as every real backend does."""

    name = "slurm"

    async def attach(self, saved: RunRecord) -> Run:
        return Run(saved.id, self.name, saved.spec(), RunDir(saved.path), {"job_id": "7"})


async def test_adopt_writes_through_the_run_dir_the_supervisor_serves_from(tmp_path):
    store = RunStore(tmp_path / "state")
    spec = build_spec(load_catalogs(), "llama2-7b", workload="chatbot", experiment_id="lost-1")
    run_dir = store.create(spec, backend="slurm")
    sent: list[bytes] = []
    run_dir.log.on_record = sent.append  # what the supervisor does: every record saved goes to its clients
    session = Session(ReopeningBackend(), spec, store=store, run_dir=run_dir)
    run = await session.adopt(RunRecord(run_dir.id, run_dir.path, run_dir.meta()))
    assert run.store is run_dir
    assert any(b"Re-attached to lost-1" in record for record in sent), sent
    await session._emit(LogLine("after the adopt", "out", "vllm"))
    run_dir.log.flush()
    assert any(b"after the adopt" in record for record in sent)
    assert run_dir.meta()["state"] == "running"


def test_saved_line_counts_are_the_server_lines_per_stream(tmp_path):
    run_dir = RunDir(tmp_path)
    events = [LogLine(f"out {i}", "out", "vllm") for i in range(3)] + [Notice("between")]
    events += [LogLine(f"err {i}", "err", "vllm") for i in range(2)] + [LogLine("not the server's", "out", "loadgen")]
    events += [LogLine("out 3", "out", "vllm")]
    for event in events:
        run_dir.append_event(event)
    run_dir.close()
    assert _saved_line_counts(run_dir) == {"out": 4, "err": 2}
    assert _saved_line_counts(RunDir(tmp_path / "nothing-yet")) == {"out": 0, "err": 0}


async def test_saved_line_counts_read_each_line_of_a_batch_that_mixes_the_streams(tmp_path):
    """stdout and stderr lines close together are saved as one batch: each counts for its own stream
    (counted as the batch's first stream, attach skipped stdout lines and replayed stderr)."""
    run_dir = RunDir(tmp_path)
    run_dir.append_event(LogLine("out 0", "out", "vllm"))
    run_dir.append_event(LogLine("err 0", "err", "vllm"))
    run_dir.append_event(LogLine("out 1", "out", "vllm"))
    run_dir.append_event(LogLine("err 1", "err", "vllm"))
    run_dir.close()  # with a loop running, the four wait in one batch until here
    records = [record for _end, record in run_dir.records()]
    assert any(record.get("streams") for record in records), records  # one mixed batch was written
    assert _saved_line_counts(run_dir) == {"out": 2, "err": 2}
