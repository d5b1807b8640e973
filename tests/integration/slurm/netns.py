"""The test cluster behind a link that can be cut: its own network namespace, joined by a veth pair.

:class:`PartitionedCluster` is :class:`~.cluster.TestCluster` with every daemon
— munged, slurmctld, slurmd (so every job and the server in it) and sshd —
started inside a network namespace of its own (``nsenter --net``). The
namespace reaches this machine only through a veth pair with a private /30 on
both ends; sshd listens on the namespace's end, so a client here reaches the
"cluster" the way a laptop reaches a login node: over that one link.
:meth:`cut` takes the link down (``ip link set … down``), :meth:`restore`
brings it back. Inside the namespace nothing changes: the controller, the
node, the job and its server go on talking over the namespace's own loopback.

The namespace, the veth pair and every process left in the namespace are
removed by :meth:`stop`. Needs root, iproute2 and util-linux's nsenter.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field

from tests.integration.slurm.cluster import TestCluster, _pid_alive

IP = "/usr/sbin/ip"
NSENTER = "/usr/bin/nsenter"
#: /30 networks are picked from here (private, and not one this machine uses).
POOL = ipaddress.ip_network("10.213.0.0/16")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check, timeout=20)


def _used_networks() -> list[ipaddress.IPv4Network]:
    text = _ip("-4", "-o", "addr", "show").stdout
    out = []
    for line in text.splitlines():
        parts = line.split()
        if "inet" in parts:
            out.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return out


def _free_slash30() -> ipaddress.IPv4Network:
    used = _used_networks()
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "big"))
    subnets = list(POOL.subnets(new_prefix=30))
    for _ in range(200):
        net = rng.choice(subnets)
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError(f"no free /30 in {POOL}")


@dataclass
class PartitionedCluster(TestCluster):
    """The test cluster in a network namespace; :meth:`cut` / :meth:`restore` the one link to it."""

    __test__ = False

    netns: str = field(default_factory=lambda: f"sdk{os.getpid()}{random.randrange(1000):03d}")
    network: ipaddress.IPv4Network | None = None

    @property
    def outside(self) -> str:
        """This machine's end of the veth pair (its name)."""
        return f"{self.netns}a"[-15:]

    @property
    def inside(self) -> str:
        return f"{self.netns}b"[-15:]

    def cmd(self, argv: list[str]) -> list[str]:
        # Only the network namespace: ``ip netns exec`` would also mount a fresh /sys, which hides
        # /sys/fs/cgroup, and slurmd 22.05 then refuses to start ("Unable to initialize cgroup plugin").
        return [NSENTER, f"--net=/run/netns/{self.netns}", "--", *argv]

    def start(self) -> PartitionedCluster:
        try:
            self._make_link()
        except BaseException:
            self._remove_link()
            raise
        return super().start()  # stops (and so removes the namespace) itself if a daemon fails

    def _make_link(self) -> None:
        self.network = _free_slash30()
        ours, theirs = (str(h) for h in self.network.hosts())
        self.listen = theirs
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _ip("link", "set", self.inside, "netns", self.netns)
        _ip("addr", "add", f"{ours}/30", "dev", self.outside)
        _ip("link", "set", self.outside, "up")
        for argv in (["addr", "add", f"{theirs}/30", "dev", self.inside], ["link", "set", self.inside, "up"],
                     ["link", "set", "lo", "up"]):
            _ip("netns", "exec", self.netns, IP, *argv)

    # the partition ---------------------------------------------------------------
    def cut(self) -> None:
        """Take the link down: nothing passes between this machine and the cluster."""
        _ip("link", "set", self.outside, "down")

    def restore(self) -> None:
        _ip("link", "set", self.outside, "up")

    def link_up(self) -> bool:
        """Is this machine's end of the link up?"""
        flags = _ip("-o", "link", "show", self.outside, check=False).stdout.split(">", 1)[0]
        return ",UP" in flags or "<UP" in flags

    # teardown --------------------------------------------------------------------------
    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._remove_link()

    def namespace_pids(self) -> list[int]:
        r = _ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in r.stdout.split() if p.isdigit()] if r.returncode == 0 else []

    def _remove_link(self) -> None:
        """Every process left in the namespace (job steps, servers), the veth pair, the namespace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [p for p in self.namespace_pids() if _pid_alive(p)]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            end = time.monotonic() + 5
            while pids and any(_pid_alive(p) for p in self.namespace_pids()) and time.monotonic() < end:
                time.sleep(0.1)
        _ip("link", "del", self.outside, check=False)  # takes the peer with it
        _ip("netns", "del", self.netns, check=False)
