"""`sweepdeck alvis connect` end to end against real sshd + SLURM: the seed's testing checklist."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from backends.procs import port_free
from backends.slurm.ssh import LOOPBACK
from backends.store import RunStore
from tests.support.procstate import eventually, gone

pytestmark = pytest.mark.services


class Output:
    """Collects a subprocess's lines in a thread; wait for a line by substring."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if text in line:
                return line
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {text!r} in {timeout}s; output:\n" + "\n".join(self.lines))
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"process ended before {text!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line

    def wait_for_count(self, text: str, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` lines contain ``text`` (a replay printed the first ones)."""
        deadline = time.monotonic() + timeout
        while sum(text in ln for ln in self.lines) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"fewer than {count} lines with {text!r} in {timeout}s; output:\n" + self.text)
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"process ended before {count} lines with {text!r}; output:\n" + self.text)
            self.lines.append(line)

    def finish(self, timeout: float = 30) -> int:
        rc = self.proc.wait(timeout)
        while True:
            try:
                line = self._q.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return rc

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _served_models(port: int) -> list[str]:
    r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5, trust_env=False)
    r.raise_for_status()
    return [m["id"] for m in r.json()["data"]]



def _job_id(out: Output) -> str:
    """The job id the command reported (submitted, or the one it attached to)."""
    match = re.search(r"Job submitted: (\d+)|\(job (\d+)\)", out.text)
    assert match, out.text
    return match.group(1) or match.group(2)


def _interrupt_and_check(out: Output, prof, sig=signal.SIGINT) -> None:
    job_id = _job_id(out)
    out.proc.send_signal(sig)
    rc = out.finish(40)
    if sig == signal.SIGHUP:
        # the terminal is gone: the client hangs up at once; the run's supervisor cancels the job and cleans up
        assert rc == 128 + signal.SIGHUP, out.text
        left = eventually(lambda: prof.jobs_left() == [] and port_free(LOOPBACK, prof.local_port), 15)
        assert left, "job or tunnel left"
        return
    assert rc == 0, out.text
    assert f"[INFO] Cancelling job {job_id}..." in out.text
    assert f"[INFO] Cleaned up job {job_id}" in out.text
    assert "[INFO] Cleaned up successfully" in out.text
    assert prof.jobs_left() == [], "job left in squeue"
    assert port_free(LOOPBACK, prof.local_port), "tunnel listener left on the local port"


def _stop(prof, run_id: str) -> None:
    """Stop a detached run (its supervisor holds the job and the tunnel) and wait for its cleanup."""
    stop = Output(prof.sweepdeck("attach", run_id, "--stop"))
    assert stop.finish(60) == 0, stop.text
    assert prof.jobs_left() == [] and port_free(LOOPBACK, prof.local_port)


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* spells them) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            addr, _, hexport = parts[1].rpartition(":")
            if parts[3] == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


def test_clean_run_default_model_and_ctrl_c_cleanup(slurm_profile):
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli())
    try:
        out.wait_for("[INFO] Checking SSH connection to 127.0.0.1...")
        out.wait_for("[INFO] SSH connection successful")
        out.wait_for("[INFO] Loading model configuration for: gpt-oss-20b")
        out.wait_for("[INFO] Model path: /mimer/NOBACKUP/Datasets/LLM/huggingface/hub/models--openai--gpt-oss-20b/")
        out.wait_for("[INFO] Submitting job (duration: 0:10:00)...")
        job_line = out.wait_for("Job submitted: ")
        job_id = job_line.split(": ")[1]
        assert job_id.isdigit()
        out.wait_for("[INFO] Waiting for job to start...")
        out.wait_for(f"[INFO] Job is running on node: {prof.cluster.node}")
        out.wait_for("[INFO] Waiting for server address...")
        out.wait_for(f"[INFO] Server address: {prof.cluster.node}:")
        out.wait_for(f"[INFO] Establishing SSH tunnel (local port {prof.local_port})...")
        out.wait_for("[INFO] Testing connection...")
        out.wait_for(f"✓ Connection successful! Server available at http://localhost:{prof.local_port}")
        out.wait_for("[INFO] Streaming logs (Ctrl+C to stop and cleanup)...")
        out.wait_for("Application startup complete.")
        assert "[VLLM ERR]" in out.text or "[VLLM OUT]" in out.text
        # the served name is derived from the HF cache path, like the original job script
        assert _served_models(prof.local_port) == ["openai/gpt-oss-20b"]
        assert prof.jobs() == [f"{job_id} RUNNING"]
        # order of the original script's messages
        order = ["Checking SSH", "SSH connection successful", "Loading model", "Model path", "Submitting job",
                 "Job submitted", "Waiting for job to start", "Job is running on node", "Waiting for server address",
                 "Server address:", "Establishing SSH tunnel", "Testing connection", "Connection successful",
                 "Streaming logs"]
        positions = [next(i for i, ln in enumerate(out.lines) if key in ln) for key in order]
        assert positions == sorted(positions), out.text
        # a network hiccup mid-run is shown, and the tunnel comes back on the same port
        assert prof.cluster.kill_ssh_sessions() >= 1
        out.wait_for("[WARN] SSH connection lost")
        out.wait_for(f"[INFO] SSH reconnected; tunnel re-opened on 127.0.0.1:{prof.local_port}")
        assert _served_models(prof.local_port) == ["openai/gpt-oss-20b"]
        run_dirs = [d for d in (prof.cluster.base / "home" / "runs").iterdir() if d.name.startswith(prof.name)]
        server_pid = int((run_dirs[0] / "server.pid").read_text())
        _interrupt_and_check(out, prof)
        assert f"[INFO] Cancelling job {job_id}..." in out.text
        # the server process on the "node" is gone too (a zombie awaiting PID 1 counts as gone)
        assert eventually(lambda: gone(server_pid), 10)
    finally:
        if out.proc.poll() is None:
            out.proc.kill()


def test_custom_model_and_duration(slurm_profile):
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli("-m", "llama-3.1-8b", "-t", "1-02:30:00", "--detach"))
    rc = out.finish(60)
    assert rc == 0, out.text
    assert "[INFO] Loading model configuration for: llama-3.1-8b" in out.text
    assert "[INFO] Submitting job (duration: 1-02:30:00)..." in out.text
    assert "✓ Connection successful!" in out.text
    assert "[INFO] Detached: job" in out.text
    job_id = out.wait_for("Job submitted: ").split(": ")[1]
    # the job really got the duration and the catalog's settings
    r = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=prof.cluster.env, capture_output=True, text=True)
    assert "TimeLimit=1-02:30:00" in r.stdout
    assert "gres/gpu:a40=1" in r.stdout.lower() or "gpu:A40:1" in r.stdout
    assert prof.jobs() == [f"{job_id} RUNNING"]
    # rendered script in the run store

    run = next(r for r in RunStore().list() if r.handle_values().get("JOB_ID") == job_id)
    script = (run.path / "rendered" / "jobscript.sh").read_text()
    assert "#SBATCH --time 1-02:30:00" in script and "--max-model-len=8192" in script
    assert "#SBATCH --gpus-per-node=A40:1" in script
    assert oct((run.path / "handle").stat().st_mode & 0o777) == "0o600"
    session = run.handle_values()
    for key in ("JOB_ID", "NODE", "PORT", "LOCAL_PORT", "TMPDIR", "MODEL", "STARTED"):
        assert session.get(key), key
    assert session["MODEL"] == "llama-3.1-8b" and session["NODE"] == prof.cluster.node
    # TMPDIR names the run directory on the shared filesystem, never the job's node-local $TMPDIR
    assert session["TMPDIR"].startswith(str(prof.cluster.base / "home" / "runs"))
    # after detach the run's supervisor holds the job and the tunnel: it serves on
    assert _served_models(prof.local_port) == ["meta-llama/Llama-3.1-8B-Instruct"]
    _stop(prof, run.id)


def test_model_not_in_catalog(slurm_profile):
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli("-m", "nonexistent-model"))
    rc = out.finish(30)
    assert rc == 1
    assert "[ERROR] Model 'nonexistent-model' not found in models.json" in out.text
    assert "[INFO] Available models:" in out.text
    assert "  - gpt-oss-20b: GPT OSS 20B model" in out.text
    assert "  - llama-3.1-8b: Llama 3.1 8B Instruct" in out.text
    assert "_comment" not in out.text and "Submitting" not in out.text
    assert prof.jobs_left() == []


def test_list_models(slurm_profile):
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli("--list-models"))
    assert out.finish(30) == 0
    # no hub to discover: models.json alone, grouped by provider (from the hub path) and numbered
    assert "openai:\n   2. gpt-oss-20b (max: 10000) — GPT OSS 20B model" in out.text
    assert "meta-llama:\n   1. llama-3.1-8b (max: 8192) — Llama 3.1 8B Instruct" in out.text
    assert "_info" not in out.text and "Discovering" not in out.text


def test_port_busy_names_holder_and_next_port(slurm_profile):
    prof = slurm_profile
    prof.write()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", prof.local_port))
        holder.listen()
        out = Output(prof.cli())
        rc = out.finish(30)
    assert rc == 1
    assert f"port {prof.local_port} is in use by python" in out.text
    assert "[INFO] Next free port: " in out.text and "(use --port " in out.text
    assert "Submitting" not in out.text and prof.jobs_left() == []


def test_ssh_connection_failure(slurm_profile):
    prof = slurm_profile
    # nothing listens there
    prof.write(ssh_port=prof.local_port, connect_timeout=3.0)
    out = Output(prof.cli())
    assert out.finish(30) == 1
    assert "[INFO] Checking SSH connection to 127.0.0.1..." in out.text
    assert "[ERROR] SSH connection to 127.0.0.1:" in out.text and "refused" in out.text
    assert "Traceback" not in out.text
    # a key the server does not know: authentication failure
    import subprocess as sp

    other = prof.tmp / "other_key"
    sp.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    prof.write(ssh_key=str(other))
    out = Output(prof.cli())
    assert out.finish(30) == 1
    assert "SSH authentication to 127.0.0.1 failed" in out.text
    # a server that accepts TCP but never speaks SSH: timeout
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        prof.write(ssh_port=mute.getsockname()[1], connect_timeout=1.0)
        out = Output(prof.cli())
        assert out.finish(30) == 1
    assert "SSH connection to 127.0.0.1 timed out after 1 s" in out.text
    # a host name that does not resolve
    prof.write(ssh_host="no-such-host.invalid")
    out = Output(prof.cli())
    assert out.finish(30) == 1
    assert "Unknown SSH host 'no-such-host.invalid'" in out.text


def test_job_submission_failure(slurm_profile):
    prof = slurm_profile
    prof.write(partition="nosuch")
    out = Output(prof.cli())
    assert out.finish(30) == 1
    assert "[ERROR] Job submission failed: sbatch: error:" in out.text
    assert "partition" in out.text.lower()
    assert "Traceback" not in out.text and prof.jobs_left() == []


def test_job_never_starts_is_cancelled(slurm_profile):
    prof = slurm_profile
    prof.write(sbatch_args=["--hold"], start_timeout=2.0)
    out = Output(prof.cli())
    rc = out.finish(40)
    assert rc == 1, out.text
    assert "[INFO] Waiting for job to start..." in out.text
    assert "is pending (JobHeldUser)" in out.text
    assert "did not start within 0:00:02" in out.text and "was cancelled" in out.text
    assert prof.jobs_left() == []
    assert port_free(LOOPBACK, prof.local_port)


def test_vllm_startup_failure_is_diagnosed(slurm_profile):
    prof = slurm_profile
    import sys

    prof.write(container=f"{sys.executable} -m backends.sim serve --startup-delay 0.1 --fail oom")
    out = Output(prof.cli())
    rc = out.finish(60)
    assert rc == 1, out.text
    assert "[VLLM ERR]" in out.text and "CUDA out of memory" in out.text
    assert "[ERROR] CUDA out of memory" in out.text or "cuda" in out.text.lower() and "fix 1:" in out.text
    assert "fix 1:" in out.text  # suggested fixes from the diagnosis table
    assert "ended during server startup" in out.text
    assert "Connection successful" not in out.text
    assert prof.jobs_left() == [] and port_free(LOOPBACK, prof.local_port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_sighup_cleanup(slurm_profile, sig):
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli())
    try:
        out.wait_for("[INFO] Streaming logs", 60)
        _interrupt_and_check(out, prof, sig)
    finally:
        if out.proc.poll() is None:
            out.proc.kill()


def test_existing_job_offers_attach_then_attach_and_cleanup(slurm_profile):
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli("--detach"))
    assert out.finish(60) == 0, out.text
    job_id = out.wait_for("Job submitted: ").split(": ")[1]
    # a second connect finds our job and offers to attach
    out2 = Output(prof.cli())
    assert out2.finish(30) == 1
    assert f"job {job_id} of this profile is already RUNNING" in out2.text
    assert "sweepdeck alvis connect --attach" in out2.text
    assert prof.jobs() == [f"{job_id} RUNNING"]
    # attach: tunnel again, logs again, Ctrl+C cleans up
    out3 = Output(prof.cli("--attach"))
    try:
        out3.wait_for("[INFO] Attaching to run")
        out3.wait_for("✓ Connection successful!")
        assert _served_models(prof.local_port) == ["openai/gpt-oss-20b"]
        _interrupt_and_check(out3, prof)
    finally:
        if out3.proc.poll() is None:
            out3.proc.kill()


def test_sweepdeck_run_with_the_slurm_backend(slurm_profile):
    """`sweepdeck run --backend slurm --profile P`: a catalog model found in models.json by its HF id,
    workload through the tunnel."""
    import os
    import sys

    prof = slurm_profile
    models = {"llama2-7b": {"path": "/mimer/hub/models--meta-llama--Llama-2-7b-hf/snapshots/01c7f73/",
                            "max_model_len": 4096, "description": "Llama 2 7B"}}
    prof.write(models, run_workload=True,
               container=f"{sys.executable} -m backends.sim serve --startup-delay 0.1 --speed 0 --stats-interval 0")
    r = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--config", str(prof.config_path), "run", "--backend", "slurm",
         "--profile", prof.name, "--model", "meta-llama/Llama-2-7b-hf", "--workload", "chatbot",
         "--max-requests", "5", "--yes"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert "[VLLM" in text and "Progress: 5/5" in text
    assert prof.jobs_left() == [] and port_free(LOOPBACK, prof.local_port)


def test_server_ready_timeout_cancels_and_shows_stderr_tail(slurm_profile):
    import sys

    prof = slurm_profile
    prof.write(ready_timeout=5.0, container=f"{sys.executable} -m backends.sim serve --startup-delay 60")
    out = Output(prof.cli())
    rc = out.finish(40)
    assert rc == 1, out.text
    assert "[INFO] Server address:" in out.text
    assert "did not become ready within 0:00:05" in out.text and "was cancelled" in out.text
    # the simulator logs its loading to stdout; with no stderr the tail of vllm.out is shown
    assert "Last lines of vllm.out:" in out.text and "vLLM API server" in out.text.split("Last lines of vllm.out:")[1]
    assert "Connection successful" not in out.text
    assert prof.jobs_left() == [] and port_free(LOOPBACK, prof.local_port)


def test_ctrl_c_while_pending_cancels_the_job(slurm_profile):
    prof = slurm_profile
    prof.write(sbatch_args=["--hold"], start_timeout=120.0)
    out = Output(prof.cli())
    try:
        out.wait_for("is pending (JobHeldUser)", 40)
        job_id = _job_id(out)
        assert prof.jobs() == [f"{job_id} PENDING"]
        _interrupt_and_check(out, prof)
        assert "Connection successful" not in out.text
    finally:
        if out.proc.poll() is None:
            out.proc.kill()


def test_tunnel_listens_on_loopback_only(slurm_profile):
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli())
    try:
        out.wait_for("✓ Connection successful!", 60)
        # one listener, on 127.0.0.1 (0100007F) -- not 0.0.0.0, not [::]
        assert _listeners(prof.local_port) == ["0100007F"]
        assert _served_models(prof.local_port) == ["openai/gpt-oss-20b"]
        # another loopback address of this machine gets no answer: nothing listens on every interface
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", prof.local_port), timeout=3).close()
        _interrupt_and_check(out, prof)
    finally:
        if out.proc.poll() is None:
            out.proc.kill()


def test_sweepdeck_attach_a_detached_run_then_stop(slurm_profile):
    """`sweepdeck attach RUN` follows a detached slurm run (new log lines, tunnel); `--stop` cancels its job."""
    prof = slurm_profile
    prof.write()
    out = Output(prof.cli("--detach"))
    assert out.finish(60) == 0, out.text
    job_id = _job_id(out)
    run_id = out.wait_for("Reattach with: sweepdeck alvis connect --attach ").rsplit(" ", 1)[1]
    # detached: the run's supervisor holds the job and the tunnel; it serves on with no client
    assert prof.jobs() == [f"{job_id} RUNNING"] and _served_models(prof.local_port) == ["openai/gpt-oss-20b"]
    run_dir = Path(RunStore().get(run_id).meta["run_dir"])
    assert run_dir.parent == prof.cluster.base / "home" / "runs" and run_dir.name.startswith(f"{run_id}.")
    assert (run_dir / "vllm.out").exists()
    with open(run_dir / "vllm.out", "a") as fh:
        fh.write("marker line written while detached\n")

    # attach: the saved events (what was logged while no client followed too), then the live ones
    att = Output(prof.sweepdeck("attach", run_id))
    try:
        att.wait_for(f"[INFO] Run {run_id}: slurm,")
        att.wait_for(f"[INFO] Endpoint ready: http://localhost:{prof.local_port}", 60)
        att.wait_for("[VLLM OUT] marker line written while detached", 20)
        with open(run_dir / "vllm.out", "a") as fh:
            fh.write("marker line written while attached\n")
        att.wait_for("[VLLM OUT] marker line written while attached", 20)
        # Ctrl+C on attach only leaves: the job keeps running, its supervisor keeps the tunnel
        att.proc.send_signal(signal.SIGINT)
        assert att.finish(40) == 0, att.text
    finally:
        if att.proc.poll() is None:
            att.proc.kill()
    assert att.text.count("[VLLM OUT] marker line written while attached") == 1
    assert att.text.count("[VLLM OUT] marker line written while detached") == 1
    assert prof.jobs() == [f"{job_id} RUNNING"]
    assert _served_models(prof.local_port) == ["openai/gpt-oss-20b"]

    # --stop: cancels the job and cleans up
    stop = Output(prof.sweepdeck("attach", run_id, "--stop"))
    rc = stop.finish(60)
    assert rc == 0, stop.text
    assert f"Stopped with --stop: Job {job_id} cancelled" in stop.text
    # the stop was asked for: reported as done, not as an error
    assert "[ERROR]" not in stop.text
    assert f"[INFO] Stopped {run_id}: job {job_id} cancelled; its cleanup is done." in stop.text
    assert prof.jobs_left() == [], "job left in squeue after --stop"
    r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=prof.cluster.env, capture_output=True, text=True)
    assert r.stdout.strip() in ("", "CANCELLED", "COMPLETING") or "Invalid job id" in r.stderr
    assert port_free(LOOPBACK, prof.local_port), "tunnel listener left on the local port"

    assert RunStore().get(run_id).state == "cancelled"
