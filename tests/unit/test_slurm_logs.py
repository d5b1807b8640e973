"""RemoteTail: byte offsets across a dropped connection (fake SSH process, no server)."""

from __future__ import annotations

import asyncio

from backends.slurm.logs import RemoteTail


class FakeStdout:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        await asyncio.sleep(0)
        return self.chunks.pop(0) if self.chunks else b""  # b"" = the connection dropped


class FakeProc:
    def __init__(self, chunks):
        self.stdout = FakeStdout(chunks)

    def close(self):
        pass


class FakeConn:
    def __init__(self, data: bytes, cuts: list[int]) -> None:
        self.data = data
        self.cuts = cuts  # each process dies after delivering up to this absolute byte
        self.commands: list[str] = []

    async def create_process(self, command, encoding=None):
        self.commands.append(command)
        start = int(command.split("-c +", 1)[1].split()[0]) - 1
        end = self.cuts.pop(0) if self.cuts else len(self.data)
        piece = self.data[start:end]
        return FakeProc([piece[i:i + 7] for i in range(0, len(piece), 7)])


class FakeRemote:
    def __init__(self, conn):
        self.conn = conn

    async def wait_up(self, timeout=None):
        return self.conn


async def test_partial_line_at_a_drop_is_read_again_never_twice():
    lines = [f"line {i} " + "x" * (i % 13) for i in range(40)]
    data = ("\n".join(lines) + "\n").encode()
    # drop the connection three times, each time in the middle of a line
    cuts = [data.index(b"line 5 ") + 3, data.index(b"line 17 ") + 5, data.index(b"line 30 ") + 1]
    conn = FakeConn(data, cuts)
    got: list[str] = []
    tail = RemoteTail(FakeRemote(conn), "/runs/r1/vllm.out", "out", lambda stream, text: got.append(text))
    tail.start()
    for _ in range(400):
        if len(got) >= 40:
            break
        await asyncio.sleep(0.01)
    await tail.stop()
    assert got == lines
    assert tail.offset == len(data)
    # each resume started exactly at the beginning of the first line not yet delivered
    starts = [int(c.split("-c +", 1)[1].split()[0]) - 1 for c in conn.commands[:4]]
    assert starts == [0, data.index(b"line 5 "), data.index(b"line 17 "), data.index(b"line 30 ")]
    assert all("'/runs/r1/vllm.out'" in c or "/runs/r1/vllm.out" in c for c in conn.commands)


async def test_resume_offset_and_quoting():
    tail = RemoteTail(FakeRemote(None), "/runs/it's here/vllm.err", "err", lambda *a: None, offset=1234)
    cmd = tail.command()
    assert cmd.startswith("tail -c +1235 -F ") and "'/runs/it'\"'\"'s here/vllm.err'" in cmd
