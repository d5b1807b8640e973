"""The rendered job script: SBATCH lines from the profile, every value quoted, run for real with bash."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from backends.slurm import SlurmBackend
from config.settings import Profile, Settings, validate_profile


def _backend(tmp_path, models: dict, **opts) -> SlurmBackend:
    (tmp_path / "models.json").write_text(json.dumps(models))
    data = {"backend": "slurm", "ssh_host": "alvis2", "models": str(tmp_path / "models.json"), **opts}
    return SlurmBackend(Settings(), Profile("alvis", "slurm", validate_profile("slurm", data, "cfg", "profiles.alvis")))


MODELS = {"gpt-oss-20b": {"path": "/mimer/hub/models--openai--gpt-oss-20b/snapshots/cbf3/", "max_model_len": 10000,
                          "description": "GPT"}}


def test_alvis_profile_lines(tmp_path):
    b = _backend(tmp_path, MODELS, account="NAISS2025-22-1522", gpus="A40:1", time="2:00:00",
                 container="apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve", modules=["module purge"])
    spec = b.make_spec("gpt-oss-20b")
    text = b.render_jobscript(spec, b.resolve_model("gpt-oss-20b"), "/cephyr/users/me/.sweepdeck/runs/x")
    assert "#SBATCH --account NAISS2025-22-1522" in text
    assert "#SBATCH --time 2:00:00" in text
    assert "#SBATCH --gpus-per-node=A40:1" in text
    assert "#SBATCH --job-name=sweepdeck-alvis" in text
    assert "#SBATCH --partition" not in text
    assert "apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve \"$HF_MODEL\"" in text
    assert "--max-model-len=10000" in text and "MODEL_NAME=openai/gpt-oss-20b" in text
    assert "\nmodule purge\n" in text
    assert "server_address.txt" in text and "$TMPDIR/server_address" not in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_profile_without_gpu_or_account(tmp_path):
    b = _backend(tmp_path, MODELS)
    text = b.render_jobscript(b.make_spec("gpt-oss-20b"), b.resolve_model("gpt-oss-20b"), "/runs/x")
    assert "--gpus-per-node" not in text and "--account" not in text and "#SBATCH --time 1:00:00" in text


@pytest.mark.parametrize("name, path", [
    ("plain", "/models/plain/"),
    ("sp ace; $(touch {d}/a) `touch {d}/b` 'q' \"dq\" && x || y > {d}/c",
     "/m/it's; $(touch {d}/d)/`touch {d}/e`/ \"x\" $HOME *"),
])
def test_rendered_script_passes_values_literally(tmp_path, name, path):
    """Run the script with bash and a fake server that prints its argv: nothing is executed, nothing split."""
    d = tmp_path / "markers"
    d.mkdir()
    name, path = name.format(d=d), path.format(d=d)
    run_dir = tmp_path / "run dir with 'quote'"
    run_dir.mkdir()
    fake = f"{sys.executable} -c 'import sys, json; print(json.dumps(sys.argv[1:]))'"
    b = _backend(tmp_path, {name: {"path": path, "max_model_len": 64}}, container=fake, server_host="127.0.0.1")
    text = b.render_jobscript(b.make_spec(name), b.resolve_model(name), str(run_dir))
    script = tmp_path / "job.sh"
    script.write_text(text)
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    argv = json.loads((run_dir / "vllm.out").read_text())
    assert argv[0] == path
    assert argv[argv.index("--served-model-name") + 1] == name
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--max-model-len=64" in argv and "--tensor-parallel-size=1" in argv
    host, _, port = (run_dir / "server_address.txt").read_text().strip().rpartition(":")
    assert host and port.isdigit()
    assert (run_dir / "server.exit").read_text().strip() == "0"
    assert list(d.iterdir()) == [], "a metacharacter was executed"


def test_port_is_found_without_python_on_the_node(tmp_path):
    """No find_ports and no python3 on PATH: the bash fallback still publishes a free port."""
    b = _backend(tmp_path, MODELS, container="/bin/true")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    text = b.render_jobscript(b.make_spec("gpt-oss-20b"), b.resolve_model("gpt-oss-20b"), str(run_dir))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("mv", "hostname", "seq", "cat"):
        (bindir / tool).symlink_to(
            subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        )
    r = subprocess.run(["/bin/bash", "-c", text], capture_output=True, text=True, timeout=30, env={"PATH": str(bindir)})
    assert r.returncode == 0, r.stderr
    port = int((run_dir / "server_address.txt").read_text().strip().rpartition(":")[2])
    assert 30000 <= port < 60000
