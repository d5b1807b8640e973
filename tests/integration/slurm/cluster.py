"""A throw-away single-node SLURM cluster and an OpenSSH server on loopback.

Used by the integration tests (``conftest.py``) and by
``tests/benchmarks/bench_slurm.py``. Everything lives in one temporary
directory: munged (run as user ``munge`` on a private socket), slurmctld and
slurmd on free ports with two fake A40 GPUs, and sshd on ``127.0.0.1:<free
port>`` with a host key and a client key made for this run. Nothing under
``/etc`` is read or changed: the SLURM commands find this cluster through
``SLURM_CONF``, which sshd sets for every session (``SetEnv``).

Each job gets a node-local ``$TMPDIR`` from a TaskProlog (a fresh, random,
0700 directory the login side is never told about), the way Alvis does, so
an implementation that reads the job's ``$TMPDIR`` from the login side fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procstate import gone

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def _pid_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (PID 1 reaps slowly here)."""
    return not gone(pid)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _kill(pid: int | None, timeout: float = 5.0) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


TASK_PROLOG = """#!/bin/sh
# Give every job task a node-local scratch directory, like Alvis: a fresh,
# random, private directory that nothing on the login side knows about.
d=$(mktemp -d {base}/nodelocal/job.XXXXXXXX)
echo "export TMPDIR=$d"
"""


@dataclass
class TestCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent)."""

    __test__ = False  # not a pytest test class

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sweepdeck-slurm-")))
    ssh_port: int = 0
    #: The compute node's name. "localhost" rather than the machine's host name:
    #: a node-hop tunnel connects to the node by name, and on CI machines the
    #: host name often resolves to an interface where our sshd (127.0.0.1) is not.
    node: str = "localhost"
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    #: Where sshd listens, and so the address the profiles' ``ssh_host`` names.
    listen: str = "127.0.0.1"
    _started: list[str] = field(default_factory=list)

    # paths -----------------------------------------------------------------
    @property
    def slurm_conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    @property
    def client_key(self) -> Path:
        return self.base / "ssh" / "id_ed25519"

    @property
    def host_key(self) -> Path:
        return self.base / "ssh" / "ssh_host_ed25519_key"

    @property
    def sshd_pidfile(self) -> Path:
        return self.base / "ssh" / "sshd.pid"

    @property
    def env(self) -> dict[str, str]:
        """Environment for running SLURM commands locally against this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf)}

    @property
    def user(self) -> str:
        return pwd.getpwuid(os.getuid()).pw_name

    def cmd(self, argv: list[str]) -> list[str]:
        """How a daemon or a SLURM command of this cluster is run (as is here; a variant runs it elsewhere)."""
        return argv

    # lifecycle ---------------------------------------------------------------
    def start(self) -> TestCluster:
        try:
            os.chmod(self.base, 0o755)  # munge and job users must traverse it
            for sub in ("etc", "state", "spool", "log", "nodelocal", "ssh", "munge", "home"):
                (self.base / sub).mkdir(exist_ok=True)
            os.chmod(self.base / "nodelocal", 0o1777)
            self._start_munge()
            self._start_slurm()
            self._start_sshd()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        mdir = self.base / "munge"
        key = mdir / "munge.key"
        with open(key, "wb") as fh:
            fh.write(os.urandom(1024))
        os.chmod(key, 0o600)
        os.chmod(mdir, 0o755)  # munged wants its socket directory executable by all
        try:
            pw = pwd.getpwnam("munge")
            for p in (mdir, key):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            prefix = ["runuser", "-u", "munge", "--"] if os.geteuid() == 0 else []
        except KeyError:
            prefix = []
        r = subprocess.run(
            self.cmd(prefix + ["/usr/sbin/munged", f"--socket={self.munge_socket}", f"--key-file={key}",
                      f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
                      f"--seed-file={mdir / 'munged.seed'}"]),
            check=False, capture_output=True, text=True, timeout=20,
        )
        if r.returncode != 0:
            raise RuntimeError(f"munged failed: {r.stderr.strip()}")
        self._started.append("munge")
        self._wait(lambda: Path(self.munge_socket).exists(), 10, "munged socket")

    @property
    def munge_socket(self) -> str:
        return str(self.base / "munge" / "munge.socket")

    def _start_slurm(self) -> None:
        mem = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024) // 2)
        b = self.base
        (b / "etc" / "taskprolog.sh").write_text(TASK_PROLOG.format(base=b))
        os.chmod(b / "etc" / "taskprolog.sh", 0o755)
        conf = f"""\
ClusterName=sweepdeck-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser={self.user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/log/slurmctld.pid
SlurmdPidFile={b}/log/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
MailProg=/bin/true
JobCompType=jobcomp/none
MinJobAge=300
KillWait=2
InactiveLimit=0
SchedulerParameters=defer_batch=0
TaskProlog={b}/etc/taskprolog.sh
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=8 RealMemory={mem} Gres=gpu:A40:2 State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        self.slurm_conf.write_text(conf)
        (b / "etc" / "gres.conf").write_text(f"NodeName={self.node} Name=gpu Type=A40 File=/dev/null,/dev/zero\n")
        env = self.env
        subprocess.run(self.cmd(["slurmctld", "-i", "-f", str(self.slurm_conf)]), check=True, capture_output=True,
                       env=env, timeout=30)
        self._started.append("slurmctld")
        subprocess.run(self.cmd(["slurmd", "-N", self.node, "-f", str(self.slurm_conf)]), check=True,
                       capture_output=True, env=env, timeout=30)
        self._started.append("slurmd")

        def idle() -> bool:
            r = subprocess.run(self.cmd(["sinfo", "-h", "-o", "%T"]), capture_output=True, text=True, env=env,
                               timeout=15)
            return r.returncode == 0 and r.stdout.strip() == "idle"

        self._wait(idle, 30, "the SLURM node to become idle", log=b / "log" / "slurmctld.log")

    def _start_sshd(self) -> None:
        sdir = self.base / "ssh"
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                           capture_output=True)
        shutil.copy(f"{self.client_key}.pub", sdir / "authorized_keys")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.ssh_port = free_port()
        (sdir / "sshd_config").write_text(f"""\
Port {self.ssh_port}
ListenAddress {self.listen}
HostKey {self.host_key}
PidFile {self.sshd_pidfile}
AuthorizedKeysFile {sdir}/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
AllowTcpForwarding yes
MaxSessions 20
MaxStartups 50
ClientAliveInterval 0
Subsystem sftp /usr/lib/openssh/sftp-server
SetEnv SLURM_CONF={self.slurm_conf}
LogLevel ERROR
""")
        self.start_sshd()

    def start_sshd(self, config: str = "sshd_config") -> None:
        """(Re)start sshd on the same port, host key and config."""
        argv = [SSHD, "-f", str(self.base / "ssh" / config), "-E", str(self.base / "log" / "sshd.log")]
        subprocess.run(self.cmd(argv), check=True, capture_output=True, timeout=20)
        if "sshd" not in self._started:
            self._started.append("sshd")

        def listening() -> bool:
            try:
                with socket.create_connection((self.listen, self.ssh_port), timeout=1):
                    return True
            except OSError:
                return False

        self._wait(listening, 10, "sshd to listen", log=self.base / "log" / "sshd.log")

    def restart_sshd_with_new_host_key(self) -> None:
        """The server "was reinstalled": same port, another host key (undo with stop_sshd + start_sshd)."""
        sdir = self.base / "ssh"
        key = sdir / "other_host_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                           capture_output=True)
        text = (sdir / "sshd_config").read_text().replace(f"HostKey {self.host_key}", f"HostKey {key}")
        (sdir / "sshd_config.other").write_text(text)
        self.stop_sshd()
        self.start_sshd("sshd_config.other")

    def stop_sshd(self, sessions: bool = True) -> None:
        """Stop the listening sshd and (by default) every session it serves."""
        pid = _read_pid(self.sshd_pidfile)
        if sessions:
            self.kill_ssh_sessions()
        _kill(pid)

    def ssh_session_pids(self) -> list[int]:
        """PIDs of the per-connection sshd processes of this server."""
        master = _read_pid(self.sshd_pidfile)
        if not master:
            return []
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == master:
                    out.append(int(d.name))
        return out

    def kill_ssh_sessions(self) -> int:
        """Drop every open SSH connection (a network hiccup); the listener stays."""
        pids = self.ssh_session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        env = self.env
        if "sshd" in self._started:
            self.stop_sshd()
        if "slurmctld" in self._started:
            subprocess.run(self.cmd(["scancel", "--full", "-u", self.user]), capture_output=True, env=env, timeout=15)
        for name in ("slurmd", "slurmctld"):
            if name in self._started:
                _kill(_read_pid(self.base / "log" / f"{name}.pid"))
        if "munge" in self._started:
            _kill(_read_pid(self.base / "munge" / "munged.pid"))
        # job processes that outlived slurmd (linuxproc tracking is best effort)
        self._started.clear()
        shutil.rmtree(self.base, ignore_errors=True)

    # helpers -----------------------------------------------------------------
    def squeue(self, *args: str) -> str:
        r = subprocess.run(self.cmd(["squeue", "-h", *args]), capture_output=True, text=True, env=self.env, timeout=20)
        return r.stdout.strip()

    def our_jobs(self, name: str | None = None) -> list[str]:
        args = ["-o", "%i %T"] + (["-n", name] if name else [])
        return [ln for ln in self.squeue(*args).splitlines() if ln.strip()]

    @staticmethod
    def _wait(cond, timeout: float, what: str, log: Path | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.1)
        tail = ""
        if log and log.exists():
            tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"timed out waiting for {what}{tail}")
