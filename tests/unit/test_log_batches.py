"""LogBatch records: what ``events.jsonl`` and the control socket carry for log lines."""

from __future__ import annotations

import json

from backends.events import LogLine
from backends.store import EventLog, RunDir, batch_record, encode_record, expand_record
from backends.supervisor.protocol import decode


def _lines(n: int, ts: float = 1_700_000_000.25, step: float = 0.000_37) -> list[LogLine]:
    return [LogLine(f"line {i} é", "err" if i % 3 == 0 else "out", "vllm", ts + i * step) for i in range(n)]


def test_a_batch_keeps_each_line_its_stream_and_its_time_to_the_microsecond():
    lines = _lines(50)
    record = json.loads(encode_record(batch_record(lines)))
    assert record["type"] == "LogBatch" and "ts_each" not in record
    assert all(isinstance(dt, int) for dt in record["dt_us"])  # integers, not 50 floats
    back = expand_record(record)
    assert [(ln.text, ln.stream, ln.source) for ln in back] == [(ln.text, ln.stream, ln.source) for ln in lines]
    assert all(abs(a.ts - b.ts) < 1e-6 for a, b in zip(back, lines, strict=True))


def test_lines_with_one_time_carry_no_offsets():
    lines = [LogLine(f"x{i}", "out", "vllm", 5.0) for i in range(3)]
    record = batch_record(lines)
    assert "dt_us" not in record and "streams" not in record
    assert [ln.ts for ln in expand_record(record)] == [5.0, 5.0, 5.0]


def test_a_batch_written_before_dt_us_is_still_read():
    old = {"type": "LogBatch", "source": "vllm", "stream": "out", "ts": 1.0, "lines": ["a", "b"],
           "streams": "oe", "ts_each": [1.0, 2.5]}
    assert [(ln.text, ln.stream, ln.ts) for ln in expand_record(old)] == [("a", "out", 1.0), ("b", "err", 2.5)]


def test_offsets_of_the_wrong_length_fall_back_to_the_batch_time():
    record = {"type": "LogBatch", "source": "s", "stream": "err", "ts": 3.0, "lines": ["a", "b"], "dt_us": [1]}
    assert [(ln.stream, ln.source, ln.ts) for ln in expand_record(record)] == [("err", "s", 3.0), ("err", "s", 3.0)]


def test_a_line_with_an_undecodable_byte_is_still_one_valid_record():
    # a lone surrogate (bytes read with surrogateescape): the fast encoder refuses it, json.dumps replaces it
    lines = [LogLine("ok", "out", "vllm", 1.0), LogLine("bad \udcff byte", "out", "vllm", 1.0)]
    data = encode_record(batch_record(lines))
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert [ln.text for ln in expand_record(json.loads(data))] == ["ok", "bad ? byte"]


def test_the_protocol_reads_what_json_reads():
    assert decode(b'{"type":"LogBatch","lines":["\\udcff"]}') == {"type": "LogBatch", "lines": ["\udcff"]}
    assert decode(b'{"a": NaN}')["a"] != 0  # json's extension, refused by msgspec: still a record
    assert decode(b"[1, 2]") is None
    assert decode(b"{not json") is None


async def test_the_event_log_writes_what_it_sends_to_its_clients(tmp_path):
    sent: list[bytes] = []  # (in a loop: lines wait for the batch)
    log = EventLog(tmp_path / "events.jsonl", on_record=sent.append)
    for line in _lines(5):
        log.append(line)
    log.close()
    data = (tmp_path / "events.jsonl").read_bytes()
    assert b"".join(sent) == data and data.count(b"\n") == 1  # one batch, the same bytes both ways
    assert [ln.text for ln in RunDir(tmp_path).events()] == [f"line {i} é" for i in range(5)]


# ---------------------------------------------------------------- the diagnosis prefilter


def test_the_batch_prefilter_lets_no_attention_word_through():
    from backends import diagnosis as dg

    ordinary = [f"INFO 11-23 10:00:{i % 60:02d} [engine.py:{i}] Avg prompt throughput: {i} tok/s" for i in range(300)]
    assert not dg._needs_attention(ordinary)
    for word in dg._ATTENTION:
        for shown in (word, word.upper()):
            batch = [*ordinary[:150], f"(EngineCore pid=7) something {shown} happened", *ordinary[150:]]
            assert dg._needs_attention(batch), word


def test_reading_a_real_log_in_batches_finds_what_reading_it_line_by_line_finds():
    import pytest

    from backends.diagnosis import LogDiagnoser
    from tests.support.reference import REFERENCE

    logs = sorted((REFERENCE / "vllm-capacity" / "logs").glob("*.log"))
    if not logs:
        pytest.skip(f"no reference logs in {REFERENCE}")
    for path in logs:
        lines = path.read_text(errors="replace").splitlines()
        one, many = LogDiagnoser(), LogDiagnoser()
        by_line = [found for found in map(one.feed, lines) if found is not None]
        by_batch = [found for start in range(0, len(lines), 512) for found in many.feed_many(lines[start:start + 512])]
        assert [(f.rule_id, f.evidence) for f in by_batch] == [(f.rule_id, f.evidence) for f in by_line], path.name
        assert many.line_no == one.line_no and many.settings == one.settings and many.version == one.version
