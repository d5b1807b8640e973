"""models.json loading (Alvis format)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from backends.slurm import catalog as sc
from backends.slurm.catalog import ModelNotInCatalog, load_models
from backends.slurm.preflight import container_check, context_check, profile_checks
from config.errors import SweepdeckError
from config.settings import Profile

REFERENCE = Path("/work/shared/reference/alvis-vllm/models.json")


def _write(tmp_path, data) -> Path:
    p = tmp_path / "models.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_underscore_keys_are_ignored_and_fields_read(tmp_path):
    cat = load_models(_write(tmp_path, {
        "_comment": "notes", "_info": {"x": 1},
        "gpt-oss-20b": {"path": "/mimer/hub/models--openai--gpt-oss-20b/snapshots/cbf3/", "max_model_len": 10000,
                        "description": "GPT OSS 20B model"},
        "local": {"path": "/data/my-model"},
    }))
    assert list(cat.models) == ["gpt-oss-20b", "local"]
    m = cat.get("gpt-oss-20b")
    assert (m.path, m.max_model_len, m.description) == ("/mimer/hub/models--openai--gpt-oss-20b/snapshots/cbf3/", 10000,
                                                        "GPT OSS 20B model")
    # served name as the original job script's sed derives it
    assert m.served_name == "openai/gpt-oss-20b"
    assert cat.get("local").served_name == "local" and cat.get("local").max_model_len is None
    assert cat.listing() == ["gpt-oss-20b: GPT OSS 20B model", "local"]


def test_unknown_model_lists_available(tmp_path):
    cat = load_models(_write(tmp_path, {"a": {"path": "/a", "description": "A"}, "b": {"path": "/b"}}))
    with pytest.raises(ModelNotInCatalog) as err:
        cat.get("nonexistent-model")
    assert err.value.message == "Model 'nonexistent-model' not found in models.json"
    assert err.value.available == ["a: A", "b"]


@pytest.mark.parametrize("data, words", [
    ("{not json", "not valid JSON"),
    ([1, 2], "expected an object"),
    ({"m": {"max_model_len": 10}}, "'path' string"),
    ({"m": {"path": "/x", "max_model_len": "big"}}, "max_model_len must be a positive integer"),
    ({"m": {"path": "/x", "max_model_len": 0}}, "max_model_len must be a positive integer"),
    ({"m": {"path": "/x", "description": 5}}, "description must be a string"),
])
def test_malformed_catalogs_name_the_problem(tmp_path, data, words):
    with pytest.raises(SweepdeckError, match=words):
        load_models(_write(tmp_path, data))


def test_missing_file_and_no_catalog(tmp_path):
    with pytest.raises(SweepdeckError, match="does not exist"):
        load_models(tmp_path / "nope.json")
    assert load_models(None).models == {}


def test_reference_catalog_loads():
    if not REFERENCE.exists():
        pytest.skip("reference data not present")
    cat = load_models(REFERENCE)
    assert list(cat.models) == ["gpt-oss-20b"] and cat.get("gpt-oss-20b").max_model_len == 10000


# ------------------------------------------------------- discovery (issue 15, item 5)


@pytest.mark.parametrize("name, size, default", [
    ("gpt-oss-20b", 20, 10000),
    ("Llama-3.1-8B-Instruct", 8, 8192),
    ("Qwen2.5-7B-Instruct", 7, 4096),
    ("Qwen2.5-0.5B-Instruct", 0.5, 8192),  # below 1B: the original's table has no row, its default applies
    ("SmolLM2-135M", 0.135, 8192),
    ("Mixtral-8x7B-v0.1", 56, 32768),
    ("Llama-4-Scout-17B-16E", 17, 10000),
    ("CodeLlama-34b-Instruct-hf", 34, 16384),
    ("Llama-3.3-70B-Instruct", 70, 32768),
    ("Qwen3-14B", 14, 10000),
    ("Llama-2-13b-hf", 13, 8192),
    ("phi-4", None, 8192),
])
def test_default_max_model_len_follows_the_original_size_table(name, size, default):
    assert sc.size_in_billions(name) == size
    assert sc.default_max_model_len(name) == default


def _hub(tmp_path) -> Path:
    """A Hugging Face hub folder as the cluster has it (refs/main, several snapshots, config.json)."""
    hub = tmp_path / "hub with space"
    def model(folder, snaps, ref=None, mpe=None):
        for i, snap in enumerate(snaps):
            d = hub / folder / "snapshots" / snap
            d.mkdir(parents=True)
            if mpe is not None:
                (d / "config.json").write_text(json.dumps({"architectures": ["X"], "max_position_embeddings": mpe}))
            os.utime(d, (1_700_000_000 + i, 1_700_000_000 + i))  # later snapshots are newer
        if ref:
            (hub / folder / "refs").mkdir(parents=True)
            (hub / folder / "refs" / "main").write_text(ref + "\n")
    model("models--openai--gpt-oss-20b", ["cbf3", "d00d"], ref="cbf3", mpe=131072)
    model("models--meta-llama--Llama-3.1-8B-Instruct", ["0e9e", "1f2a"], mpe=131072)
    model("models--Qwen--Qwen2.5-0.5B-Instruct", ["aa11"], mpe=32768)
    model("models--HuggingFaceTB--SmolLM2-135M", ["bb22"], mpe=2048)
    model("models--unsloth--Llama-3.2-1B-Instruct", ["cc33"])
    (hub / "models--broken--nosnapshots").mkdir(parents=True)
    (hub / "datasets--org--data" / "snapshots" / "x").mkdir(parents=True)
    return hub


def _scan(hub) -> str:
    proc = subprocess.run(sc.hub_scan_argv(str(hub)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_hub_scan_script_finds_models_snapshots_and_limits(tmp_path):
    hub = _hub(tmp_path)
    rows = sc.parse_hub_scan(_scan(hub))
    by_dir = {r["dir"]: r for r in rows}
    assert sorted(by_dir) == sorted([
        "models--openai--gpt-oss-20b", "models--meta-llama--Llama-3.1-8B-Instruct",
        "models--Qwen--Qwen2.5-0.5B-Instruct", "models--HuggingFaceTB--SmolLM2-135M",
        "models--unsloth--Llama-3.2-1B-Instruct"])
    assert by_dir["models--openai--gpt-oss-20b"]["snapshot"] == "cbf3"  # refs/main wins over the newer one
    assert by_dir["models--meta-llama--Llama-3.1-8B-Instruct"]["snapshot"] == "1f2a"  # else the newest
    assert by_dir["models--HuggingFaceTB--SmolLM2-135M"]["max_position_embeddings"] == 2048
    assert by_dir["models--unsloth--Llama-3.2-1B-Instruct"]["max_position_embeddings"] is None
    assert sc.parse_hub_scan(_scan(tmp_path / "nope")) is None


def test_scan_output_with_odd_lines_is_parsed_safely():
    text = ("MODEL\tmodels--a--b\trev1\t4096\nMODEL\tmodels--bad name--x\trev\t1\nMODEL\tmodels--c--d\t../x\t\n"
            "garbage\nMODEL\tmodels--e--f\trev2\t\nEND\n")
    rows = sc.parse_hub_scan(text)
    assert rows == [{"dir": "models--a--b", "snapshot": "rev1", "max_position_embeddings": 4096},
                    {"dir": "models--e--f", "snapshot": "rev2", "max_position_embeddings": None}]


def _discovered(tmp_path):
    hub = _hub(tmp_path)
    return str(hub), sc.hub_models(str(hub), sc.parse_hub_scan(_scan(hub)))


def test_discovered_models_with_the_reference_overrides(tmp_path):
    hub, found = _discovered(tmp_path)
    gpt = found["openai/gpt-oss-20b"]
    assert gpt.path == f"{hub}/models--openai--gpt-oss-20b/snapshots/cbf3/"
    assert (gpt.max_model_len, gpt.context_limit, gpt.served_name) == (10000, 131072, "openai/gpt-oss-20b")
    assert found["HuggingFaceTB/SmolLM2-135M"].max_model_len == 2048  # never above the model's own limit
    if not REFERENCE.exists():
        pytest.skip("reference data not present")
    merged = sc.merge(found, load_models(REFERENCE))  # the original's models.json, as it is
    gpt = merged["openai/gpt-oss-20b"]  # its "gpt-oss-20b" entry names the discovered model by its short name
    assert (gpt.max_model_len, gpt.description, gpt.source) == (10000, "GPT OSS 20B model", "hub+models.json")
    assert gpt.path.startswith("/mimer/NOBACKUP/Datasets/LLM/huggingface/hub/models--openai--gpt-oss-20b/")
    assert len(merged) == len(found)


def test_models_json_entry_outside_the_hub_is_a_model_of_its_own(tmp_path):
    hub, found = _discovered(tmp_path)
    qwen = found["Qwen/Qwen2.5-0.5B-Instruct"]
    own = load_models(_write(tmp_path, {
        "my-ft": {"path": "/proj/ft/ckpt", "max_model_len": 2048},
        "by-path": {"path": qwen.path.rstrip("/"), "description": "small Qwen"},  # matched by its path
    }))
    merged = sc.merge(found, own)
    assert merged["my-ft"].source == "models.json" and merged["my-ft"].provider == "models.json"
    assert merged["Qwen/Qwen2.5-0.5B-Instruct"].description == "small Qwen" and "by-path" not in merged
    assert len(merged) == len(found) + 1


def test_lookup_grouping_and_numbering(tmp_path):
    _, found = _discovered(tmp_path)
    cat = sc.ClusterCatalog(None, found, hub="/h")
    assert cat.get("gpt-oss-20b").name == "openai/gpt-oss-20b"
    assert cat.get("QWEN/qwen2.5-0.5b-instruct").name == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "Llama-3.2-1B-Instruct" in cat and "nope" not in cat
    groups = cat.grouped()
    assert [g for g, _ in groups] == ["HuggingFaceTB", "meta-llama", "openai", "Qwen", "unsloth"]
    numbers = [n for _, rows in groups for n, _ in rows]
    assert numbers == list(range(1, len(found) + 1))  # continuous across groups
    assert cat.numbered()[0].name == "HuggingFaceTB/SmolLM2-135M"
    with pytest.raises(ModelNotInCatalog) as err:
        cat.get("nonexistent-model")
    assert err.value.message == "Model 'nonexistent-model' not found in the cluster's models"


def _profile(name="alvis", **options):
    base = {"backend": "slurm", "ssh_host": "alvis2", "container": "vllm serve", "models": None, "hub": None}
    base.update(options)
    return Profile(name, "slurm", base)


def test_the_scan_is_cached_per_profile_and_hub(tmp_path, private_dirs):
    hub, _ = _discovered(tmp_path)
    prof = _profile("mine", hub=hub)
    assert sc.read_cache(prof) is None and sc.load_profile_catalog(prof).models == {}
    sc.write_cache(prof, hub, sc.parse_hub_scan(_scan(hub)))
    assert sc.cache_path("mine").is_relative_to(private_dirs)
    cat = sc.load_profile_catalog(prof)
    assert cat.discovered and len(cat.models) == 5 and cat.scanned
    # another hub or host: the cached scan is not theirs
    assert sc.read_cache(_profile("mine", hub="/elsewhere")) is None
    assert sc.read_cache(_profile("mine", hub=hub, ssh_host="other")) is None
    assert sc.read_cache(_profile("other", hub=hub)) is None
    sc.cache_path("mine").write_text("{not json")
    assert sc.read_cache(prof) is None


def test_alvis_profile_defaults_to_the_alvis_hub():
    assert sc.hub_dir(_profile("alvis")) == sc.ALVIS_HUB
    assert sc.hub_dir(_profile("alvis", hub="/x")) == "/x"
    assert sc.hub_dir(_profile("other")) is None


def test_alvis_without_a_container_gets_a_warning_with_the_original_line():
    check = container_check(_profile("alvis"))
    assert check.status == "warn" and "bare `vllm serve`" in check.detail
    assert check.fix == "Add to profile alvis in your sweepdeck config: container: " + sc.ALVIS_CONTAINER
    assert sc.ALVIS_CONTAINER == "apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve"
    assert container_check(_profile("alvis", container=sc.ALVIS_CONTAINER)) is None
    assert container_check(_profile("other")) is None  # other clusters may have vLLM installed


def _spec(model: str, max_model_len: int) -> SimpleNamespace:
    return SimpleNamespace(model=model, engine=SimpleNamespace(max_model_len=max_model_len))


def test_context_check_uses_the_model_config_limit(tmp_path):
    _, found = _discovered(tmp_path)
    cat = sc.ClusterCatalog(None, found, hub="/h")
    check = context_check(cat, _spec("HuggingFaceTB/SmolLM2-135M", 4096))
    assert check.status == "fail" and "limit of 2048" in check.detail and "2048 or less" in check.fix
    assert context_check(cat, _spec("SmolLM2-135M", 2048)).status == "pass"
    # no config.json limit: nothing to say
    assert context_check(cat, _spec("unsloth/Llama-3.2-1B-Instruct", 100000)) is None
    checks = profile_checks(_profile("alvis"), cat, _spec("unsloth/Llama-3.2-1B-Instruct", 4096))
    assert [c.name for c in checks] == ["Server command"]
