"""Model discovery over SSH in the cluster's Hugging Face hub, listing, -i selection (real sshd + SLURM)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from backends.slurm import catalog as sc
from tests.integration.slurm.conftest import ProfileFactory
from tests.integration.slurm.test_connect import Output, _interrupt_and_check, _served_models

pytestmark = pytest.mark.services


def make_hub(root, models: dict[str, int | None]) -> str:
    """A hub folder on the cluster's shared filesystem: models--ORG--NAME/{refs/main,snapshots/REV/config.json}."""
    hub = root / "hf hub"  # a space in the path: it is passed to the remote scan as one argument
    for repo, limit in models.items():
        folder = hub / ("models--" + repo.replace("/", "--"))
        snap = folder / "snapshots" / "0123abcd"
        snap.mkdir(parents=True, exist_ok=True)
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text("0123abcd")
        config = {"architectures": ["LlamaForCausalLM"]}
        if limit:
            config["max_position_embeddings"] = limit
        (snap / "config.json").write_text(json.dumps(config))
    os.chmod(root, 0o755)
    return str(hub)


HUB_MODELS = {
    "openai/gpt-oss-20b": 131072,
    "Qwen/Qwen2.5-0.5B-Instruct": 32768,
    "meta-llama/Llama-3.1-8B-Instruct": 131072,
    "HuggingFaceTB/SmolLM2-135M": 2048,
    "unsloth/Llama-3.2-1B-Instruct": None,
}


def _overrides(hub: str) -> dict:
    # models.json for overrides only, as in the original v0.2: it names a discovered model by its short name
    return {
        "_comment": "This file is used for OVERRIDES ONLY.",
        "gpt-oss-20b": {"path": f"{hub}/models--openai--gpt-oss-20b/snapshots/0123abcd/", "max_model_len": 10000,
                        "description": "GPT OSS 20B model"},
    }


def _listed(out: str) -> dict[str, tuple[int, str]]:
    """``name -> (number, max)`` from the listing lines ``  N. name (max: M)``."""
    rows = re.finditer(r"^ +(\d+)\. (\S+) \(max: (\w+)\)", out, re.M)
    return {m.group(2): (int(m.group(1)), m.group(3)) for m in rows}


def test_list_models_discovers_the_hub_groups_and_caches(slurm_profile, private_dirs):
    prof = slurm_profile
    hub = make_hub(prof.cluster.base / "home" / f"hub-{prof.name}", HUB_MODELS)
    prof.write(_overrides(hub), hub=hub)
    proc = prof.cli("--list-models")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert f"[INFO] Discovering models in {hub} on 127.0.0.1..." in out
    assert "[INFO] Found 5 models in the hub" in out
    listed = _listed(out)
    assert listed == {
        "SmolLM2-135M": (1, "2048"),  # capped at the model's own max_position_embeddings
        "Llama-3.1-8B-Instruct": (2, "8192"),  # 8B: the original's default for 8-13B
        "gpt-oss-20b": (3, "10000"),  # models.json override
        "Qwen2.5-0.5B-Instruct": (4, "8192"),
        "Llama-3.2-1B-Instruct": (5, "4096"),
    }
    groups = re.findall(r"^(\S+):$", out, re.M)
    assert groups == ["HuggingFaceTB", "meta-llama", "openai", "Qwen", "unsloth"]
    assert "3. gpt-oss-20b (max: 10000) — GPT OSS 20B model" in out
    assert sc.cache_path(prof.name).is_file()

    # a new model on the cluster is not listed until the profile's scan is refreshed
    make_hub(prof.cluster.base / "home" / f"hub-{prof.name}", {"mistralai/Mistral-7B-Instruct-v0.3": 32768})
    proc = prof.cli("--list-models")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Discovering" not in out and "Mistral-7B-Instruct-v0.3" not in out
    proc = prof.cli("--list-models", "--refresh-models")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "[INFO] Found 6 models in the hub" in out
    assert _listed(out)["Mistral-7B-Instruct-v0.3"] == (3, "4096")


def test_missing_hub_is_one_clear_error(slurm_profile):
    prof = slurm_profile
    prof.write(hub="/no/such/hub")
    proc = prof.cli("--list-models")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "[ERROR] The model hub /no/such/hub does not exist on 127.0.0.1." in out
    assert "Traceback" not in out


def test_interactive_selection_serves_the_chosen_model(slurm_profile):
    prof = slurm_profile
    hub = make_hub(prof.cluster.base / "home" / f"hub-{prof.name}", HUB_MODELS)
    prof.write(_overrides(hub), hub=hub)
    proc = prof.cli("-i", stdin=subprocess.PIPE)
    out = Output(proc)
    try:
        out.wait_for("[INFO] SSH connection successful")
        out.wait_for("[INFO] Found 5 models in the hub")
        out.wait_for("  5. Llama-3.2-1B-Instruct (max: 4096)")
        proc.stdin.write("seven\n")  # not a number from the list: asked again
        proc.stdin.write("4\n")
        proc.stdin.flush()
        out.wait_for("[WARN] 'seven' is neither a number from 1 to 5 nor a model name.")
        out.wait_for("[INFO] Loading model configuration for: Qwen/Qwen2.5-0.5B-Instruct")
        out.wait_for(f"[INFO] Model path: {hub}/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/0123abcd/")
        out.wait_for("[INFO] Max model length: 8192")
        out.wait_for(f"✓ Connection successful! Server available at http://localhost:{prof.local_port}", timeout=90)
        assert _served_models(prof.local_port) == ["Qwen/Qwen2.5-0.5B-Instruct"]
        _interrupt_and_check(out, prof)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_alvis_profile_without_container_is_warned(cluster, tmp_path):
    prof = ProfileFactory(cluster, tmp_path, "alvis")
    # no 'container' and no 'hub': the Alvis hub is the default and does not exist here
    prof.write(container=None)
    try:
        proc = prof.cli("--detach")
        out = Output(proc)
        rc = out.finish(120)
        text = out.text
        assert "[WARN] The model hub /mimer/NOBACKUP/Datasets/LLM/huggingface/hub does not exist on 127.0.0.1." in text
        assert "[WARN] profile alvis has no 'container': the job would run bare `vllm serve`" in text
        assert ("  Add to profile alvis in your sweepdeck config: container: "
                "apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve") in text
        # the warning comes before anything is submitted; the bare command then fails on the node
        assert text.index("has no 'container'") < text.index("[INFO] Submitting job")
        assert rc == 1, text
    finally:
        subprocess.run(["scancel", "-n", "sweepdeck-alvis"], env=cluster.env, capture_output=True, timeout=20)


async def test_backend_preflight_has_the_container_warning(cluster, tmp_path, fresh_registry):
    from backends.slurm import SlurmBackend
    from config.settings import load_settings

    prof = ProfileFactory(cluster, tmp_path, "alvis")
    settings = load_settings(prof.write(container=None))
    backend = SlurmBackend(settings, settings.profiles["alvis"])
    try:
        spec = backend.make_spec("gpt-oss-20b")
        checks = {c.name: c for c in await backend.preflight(spec)}
        assert checks["Server command"].status == "warn"
        assert checks["Server command"].data == {"container": sc.ALVIS_CONTAINER}
    finally:
        await backend.close()
