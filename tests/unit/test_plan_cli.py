"""``sweepdeck plan``: output, JSON keys, exit codes and bad input (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tui.cli", "plan", *args], capture_output=True, text=True,
                          timeout=120, env=full, cwd=ROOT)


def test_plan_prints_every_term_and_the_verdict():
    out = run("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100-80GB", "--max-model-len", "8192",
              "--gpu-memory-utilization", "0.95")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for label, value in (("physical memory", "79.19 GiB"), ("requested budget", "75.23 GiB"), ("weights", "14.99 GiB"),
                         ("activation peak", "1.89 GiB"), ("non-torch", "0.24 GiB"), ("KV cache", "58.11 GiB"),
                         ("KV cache tokens", "476,016"), ("max concurrency", "58.11×")):
        line = next(x for x in text.splitlines() if x.strip().startswith(label))
        assert value in line, line
    assert "29,751 blocks of 16" in text
    assert "fits: weights 15.0 GiB · KV 58.1 GiB → 476k tokens → 58× at 8192" in text
    assert out.stderr == ""


def test_plan_json_keys_and_does_not_fit_exit_code(tmp_path):
    out = run("llama3-70b", "--gpu", "A100-80GB", "--tp", "2", "--json")  # an alias of the catalog
    assert out.returncode == 1
    data = json.loads(out.stdout)
    for key in ("weights_gib", "activation_gib", "non_torch_gib", "kv_cache_gib", "kv_cache_tokens", "max_concurrency",
                "fits", "problems"):
        assert key in data
    assert data["model"] == "meta-llama/Llama-3.3-70B-Instruct" and data["fits"] is False
    assert data["problems"][0]["code"] == "kv-too-small"
    vllm = data["problems"][0]["vllm_message"]
    assert "KV cache is needed, which is larger than the available KV cache memory" in vllm
    assert {"tp": 4} in [s["changes"] for s in data["suggestions"]]


def test_plan_text_lists_the_nearest_fits():
    out = run("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "A40", "--gpu-memory-utilization", "0.5")
    assert out.returncode == 1
    assert "does not fit: one request of 131072 tokens needs 16.00 GiB of KV cache" in out.stdout
    assert "vLLM would say: ValueError: To serve at least one request" in out.stdout
    assert "nearest configurations that fit:" in out.stdout
    assert "  1. TP=1 -> TP=2" in out.stdout and "max_model_len=131072 ->" in out.stdout


def test_plan_with_model_config_and_gpu_memory(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
           "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
           "max_position_embeddings": 131072, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = run("my/llama-1b", "--model-config", str(tmp_path), "--gpu-memory", "22", "--max-model-len", "4096", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["physical_gib"] == 22 and data["fits"] and data["kv_cache_tokens"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "Z80"), "Unknown GPU 'Z80'."),
        (("org/unknown-model",), "No architecture facts for 'org/unknown-model'"),
        (("meta-llama/Llama-3.1-8B-Instruct", "--tp", "2", "--gpus", "1"),
         "TP 2 x PP 1 x DP 1 = 2 GPUs, but the request has 1."),
        (("meta-llama/Llama-3.1-8B-Instruct", "--gpu-memory-utilization", "lots"),
         "--gpu-memory-utilization must be a positive number"),
        (("meta-llama/Llama-3.1-8B-Instruct", "--tp", "two"), "--tp must be a positive integer"),
        (("meta-llama/Llama-3.1-8B-Instruct", "--model-config", "/nonexistent/config.json"), "does not exist"),
        (("llama;rm -rf",), "contains characters that are not allowed"),
    ],
)
def test_bad_input_is_one_line_no_traceback(args, message, tmp_path):
    out = run(*args, env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert out.stderr.startswith("[ERROR] ") and len(out.stderr.strip().splitlines()) <= 2


def test_config_without_the_needed_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    out = run("my/model", "--model-config", str(tmp_path / "config.json"))
    assert out.returncode == 2
    assert "lacks the fields the planner needs: num_hidden_layers, num_attention_heads, vocab_size" in out.stderr
