"""``sweepdeck sim serve MODEL --gpu NAME``: vLLM v0.19's startup lines from the planner, and its failures."""

from __future__ import annotations

import subprocess
import sys

import httpx

from backends import diagnosis as dg
from config.planner import PlanRequest, load_facts, plan, resolve_gpu
from config.planner.vllm_log import parse_startup
from tests.support.processes import ROOT, UvicornProcess

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
COMMON = ["--host", "127.0.0.1", "--port", "0", "--startup-delay", "0", "--disable-log-stats"]


def sim(*args: str) -> list[str]:
    return [sys.executable, "-m", "backends.sim", "serve", *args, *COMMON]


def test_fits_prints_vllm_lines_with_the_planned_numbers_and_serves():
    server = UvicornProcess(sim(LLAMA, "--gpu", "H100-80GB", "--max-model-len", "8192", "--max-num-seqs", "1024",
                                "--max-num-batched-tokens", "8192", "--gpu-memory-utilization", "0.95",
                                "--dtype", "bfloat16"), what="simulator")
    try:
        url = server.wait_ready(60)
        assert httpx.get(url + "/health", timeout=10).status_code == 200
        text = "\n".join(server.lines)
    finally:
        server.stop()
    # the same lines (and numbers) as the real vLLM v0.19.0 startup of this model on an H100
    record = parse_startup(text)
    assert record.weights_gib == 14.99
    assert record.kv_cache_gib == 58.11
    assert record.kv_cache_tokens == 476_016
    assert record.max_concurrency == 58.11
    assert "Maximum concurrency for 8,192 tokens per request: 58.11x" in text
    assert "ignoring unsupported argument: --gpu-memory-utilization" not in text  # the plan read it
    assert "ignoring unsupported argument: --dtype" not in text
    expected = plan(PlanRequest(load_facts(LLAMA), resolve_gpu("H100"), max_model_len=8192, max_num_seqs=1024,
                                max_num_batched_tokens=8192, gpu_memory_utilization=0.95))
    assert record.kv_cache_tokens == expected.kv_cache_tokens


def test_does_not_fit_fails_with_vllm_wording():
    done = subprocess.run(sim(LLAMA, "--gpu", "A40", "--max-model-len", "131072", "--gpu-memory-utilization", "0.5"),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1
    err = done.stderr
    assert "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is " \
           "needed, which is larger than the available KV cache memory" in err
    assert "estimated maximum model length is" in err
    assert "RuntimeError: Engine core initialization failed. See root cause above." in err
    assert "EngineCore failed to start." in done.stdout and "Uvicorn running" not in done.stdout
    found = dg.primary(dg.diagnose_lines((done.stdout + err).splitlines()))
    assert found is not None and found.rule_id == dg.KV_CACHE_TOO_SMALL


def test_shape_problem_fails_before_the_engine():
    done = subprocess.run(sim("Qwen/Qwen3-14B", "--gpu", "H100", "-tp", "3"), capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 1
    heads = "ValueError: Total number of attention heads (40) must be divisible by tensor parallel size (3)."
    assert heads in done.stderr
    assert "Initializing a V1 LLM engine" not in done.stdout


def test_unknown_gpu_or_model_is_one_clear_line():
    done = subprocess.run(sim(LLAMA, "--gpu", "Z80"), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1 and "sweepdeck sim: Unknown GPU 'Z80'." in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run(sim("org/unknown", "--gpu", "H100"), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1 and "No architecture facts for 'org/unknown'" in done.stderr
