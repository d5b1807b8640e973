"""Fixtures: a real sshd on 127.0.0.1 and a real single-node SLURM with fake A40 GPUs.

The cluster is started once per test session (about a second) and torn down
at the end; every test gets its own slurm profile (its own job name, local
port, known_hosts file and models.json) so no test sees another's jobs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.slurm.cluster import SSHD, TestCluster, free_port
from tests.support.services import require, require_binary

REPO = Path(__file__).resolve().parents[3]

MODELS = {
    "_comment": "keys starting with _ are ignored",
    "_info": {"format": "name -> path, max_model_len, description"},
    "gpt-oss-20b": {
        "path": "/mimer/NOBACKUP/Datasets/LLM/huggingface/hub/models--openai--gpt-oss-20b/snapshots/"
                "cbf31f62664d4b1360b3a78427f7b3c3ed8f0fa8/",
        "max_model_len": 10000,
        "description": "GPT OSS 20B model",
    },
    "llama-3.1-8b": {
        "path": "/mimer/NOBACKUP/Datasets/LLM/huggingface/hub/models--meta-llama--Llama-3.1-8B-Instruct/"
                "snapshots/0e9e39f/",
        "max_model_len": 8192,
        "description": "Llama 3.1 8B Instruct",
    },
}


@pytest.fixture(scope="session")
def cluster():
    require_binary(SSHD, "openssh-server")
    require_binary("slurmctld", "slurmctld")
    require_binary("slurmd", "slurmd")
    require_binary("sbatch", "slurm-client")
    require_binary("/usr/sbin/munged", "munge")
    require(os.geteuid() == 0,
            "the SLURM/sshd test cluster needs root (munged runs as user munge, sshd needs privilege separation)")
    c = TestCluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()


class ProfileFactory:
    """Writes a sweepdeck config with one slurm profile for the test cluster."""

    def __init__(self, cluster: TestCluster, tmp: Path, name: str) -> None:
        self.cluster = cluster
        self.tmp = tmp
        self.name = name
        self.models_path = tmp / "models.json"
        self.known_hosts = tmp / "known_hosts"
        self.local_port = free_port()
        self.config_path = tmp / "config.yaml"

    def options(self, **overrides) -> dict:
        c = self.cluster
        opts = {
            "backend": "slurm",
            "ssh_host": c.listen,
            "ssh_port": c.ssh_port,
            "ssh_user": c.user,
            "ssh_key": str(c.client_key),
            "known_hosts": str(self.known_hosts),
            "gpus": "A40:1",
            # The only difference from Alvis: the simulator instead of apptainer + vLLM.
            "container": f"{sys.executable} -m backends.sim serve --startup-delay 0.2 --stats-interval 0",
            "server_host": "127.0.0.1",
            "workdir": str(c.base / "home" / "runs"),
            "local_port": self.local_port,
            "models": str(self.models_path),
            "poll_interval": 0.2,
            "time": "0:10:00",
            "start_timeout": 30.0,
            "ready_timeout": 30.0,
            "connect_timeout": 10.0,
            "reconnect_backoff": [0.1, 0.2, 0.5],
        }
        opts.update(overrides)
        return {k: v for k, v in opts.items() if v is not None}

    def write(self, models: dict | None = None, **overrides) -> Path:
        self.models_path.write_text(json.dumps(MODELS if models is None else models, indent=2))
        self.config_path.write_text(yaml.safe_dump({"profiles": {self.name: self.options(**overrides)}}))
        return self.config_path

    def profile(self, models: dict | None = None, **overrides):
        from config.settings import load_settings

        settings = load_settings(self.write(models, **overrides))
        return settings, settings.profiles[self.name]

    def jobs(self) -> list[str]:
        return self.cluster.our_jobs(f"sweepdeck-{self.name}")

    def jobs_left(self, timeout: float = 10.0) -> list[str]:
        """Jobs still in squeue once a just-cancelled job had time to finish COMPLETING."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs()
            settling = all("COMPLETING" in j or "CANCELLED" in j for j in jobs)
            if not jobs or time.monotonic() > deadline or not settling:
                return jobs
            time.sleep(0.2)

    def cli(self, *args: str, **popen) -> subprocess.Popen:
        """``sweepdeck --config CFG alvis connect ARGS`` as a subprocess (stdout+stderr merged)."""
        return self.sweepdeck("alvis", "connect", *args, **popen)

    def sweepdeck(self, *args: str, **popen) -> subprocess.Popen:
        """``sweepdeck --config CFG ARGS`` as a subprocess (stdout+stderr merged)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "--config", str(self.config_path), *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
        )


@pytest.fixture
def slurm_profile(cluster, tmp_path, request):
    """A per-test profile factory; cancels whatever the test left in the queue."""
    name = "t-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.replace("test_", ""))[:30].strip("-")
    factory = ProfileFactory(cluster, tmp_path, name)
    yield factory
    subprocess.run(["scancel", "-n", f"sweepdeck-{name}"], env=cluster.env, capture_output=True, timeout=20)


@pytest.fixture
async def fresh_registry():
    """The process-wide cleanup registry, run at the end of the test whatever happened."""
    from backends.cleanup import REGISTRY

    yield REGISTRY
    await REGISTRY.run(10)
