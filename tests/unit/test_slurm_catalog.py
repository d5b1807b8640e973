"""models.json loading (Alvis format)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.slurm.catalog import ModelNotInCatalog, load_models
from config.errors import SweepdeckError

REFERENCE = Path("/work/shared/reference/alvis-vllm/models.json")


def _write(tmp_path, data) -> Path:
    p = tmp_path / "models.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_underscore_keys_are_ignored_and_fields_read(tmp_path):
    cat = load_models(_write(tmp_path, {
        "_comment": "notes", "_info": {"x": 1},
        "gpt-oss-20b": {"path": "/mimer/hub/models--openai--gpt-oss-20b/snapshots/cbf3/", "max_model_len": 10000, "description": "GPT OSS 20B model"},
        "local": {"path": "/data/my-model"},
    }))
    assert list(cat.models) == ["gpt-oss-20b", "local"]
    m = cat.get("gpt-oss-20b")
    assert (m.path, m.max_model_len, m.description) == ("/mimer/hub/models--openai--gpt-oss-20b/snapshots/cbf3/", 10000, "GPT OSS 20B model")
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
