"""A job that ended: its log tails read the rest of each file at once (real sshd, no job).

The error that explains a failed start is often the last thing vLLM writes; a follower on a busy
login node may not have passed it on when the job leaves squeue. ``RemoteTail.finish`` reads from
the delivered offset to the end (the end may lack its newline), so nothing written is missed and
nothing is delivered twice.
"""

from __future__ import annotations

import os
import pwd

import pytest

from backends.slurm.logs import RemoteTail
from backends.slurm.ssh import HostKeys, Remote, SshTarget

pytestmark = pytest.mark.services


async def test_finish_delivers_every_line_after_the_offset_once(cluster, tmp_path):
    log = tmp_path / "vllm.err"
    first = "INFO started\n"
    rest = "ERROR torch.OutOfMemoryError: CUDA out of memory\n\nlast line without a newline"
    log.write_text(first + rest)
    user = pwd.getpwnam(cluster.user)
    os.chown(tmp_path, user.pw_uid, user.pw_gid)
    os.chown(log, user.pw_uid, user.pw_gid)
    target = SshTarget("127.0.0.1", port=cluster.ssh_port, user=cluster.user, key=str(cluster.client_key),
                       known_hosts=str(tmp_path / "known_hosts"), connect_timeout=10.0)
    remote = Remote(target, host_keys=HostKeys(tmp_path / "known_hosts"))
    await remote.connect()
    got: list[tuple[str, str]] = []
    try:
        tail = RemoteTail(remote, str(log), "err", lambda stream, text: got.append((stream, text)),
                          offset=len(first.encode()))  # the follower had delivered the first line
        await tail.finish()
    finally:
        await remote.close()
    assert got == [("err", "ERROR torch.OutOfMemoryError: CUDA out of memory"), ("err", ""),
                   ("err", "last line without a newline")]
    assert tail.offset == len((first + rest).encode()) + 1  # as if the last line had its newline
    assert tail.lines == 3
