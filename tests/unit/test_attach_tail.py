"""``sweepdeck attach`` starts at the last N log lines: the event log is read backwards, nothing before is parsed."""

from __future__ import annotations

import json

from backends.events import LogLine, Notice, to_dict
from backends.store import batch_record, expand_record
from tui.commands.attach import tail_offset


def _write(path, records) -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))


def _log_lines_from(path, offset: int) -> list[str]:
    lines = []
    with open(path, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            for event in expand_record(json.loads(raw)):
                if isinstance(event, LogLine):
                    lines.append(event.text)
    return lines


def test_starts_at_the_record_that_holds_the_last_n_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    records = []
    for b in range(400):  # 400 batches of 100 lines (~3.5 MB): several chunks read backwards
        records.append(batch_record([LogLine(f"line {b * 100 + i} " + "x" * 60) for i in range(100)]))
        if b % 7 == 0:
            records.append(to_dict(Notice(f"notice {b}")))
    records.append(to_dict(LogLine("the last line")))
    _write(path, records)
    start = tail_offset(path, 1000)
    shown = _log_lines_from(path, start)
    assert 901 <= len(shown) <= 1000  # whole records, at most N lines
    assert shown[-1] == "the last line" and shown[0].startswith(f"line {40000 - len(shown) + 1} ")
    with open(path, "rb") as fh:  # the offset is a record's first byte
        fh.seek(start - 1)
        assert fh.read(1) == b"\n"
    assert tail_offset(path, None) == 0
    assert tail_offset(path, 10**9) == 0  # fewer lines than asked: everything
    assert _log_lines_from(path, tail_offset(path, 0)) == []
    assert tail_offset(tmp_path / "missing.jsonl", 10) == 0
