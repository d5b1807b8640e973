"""The diagnosis rule table on realistic log excerpts and states."""

from __future__ import annotations

import pytest

from backends import diagnosis as dg
from backends.diagnosis import alert_for, diagnose_line, diagnose_lines, diagnose_state, fixes_for, primary
from config.catalog import load_catalogs
from config.spec import build_spec

# --- realistic excerpts (wording as printed by vLLM 0.11 / torch / transformers / kubelet / slurmstepd)

OOM_TRACE = """\
(EngineCore_DP0 pid=2317) INFO 11-23 19:44:52 [gpu_model_runner.py:2602] Model loading took 13.5 GiB and 4.1 seconds
(EngineCore_DP0 pid=2317) INFO 11-23 19:44:58 [gpu_worker.py:298] Memory profiling takes 5.26 seconds
(EngineCore_DP0 pid=2317) ERROR 11-23 19:44:58 [core.py:708] EngineCore failed to start.
Traceback (most recent call last):
  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/gpu_worker.py", line 263, in determine_available_memory
    self.model_runner.profile_run()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 0.42 GiB is free. Including non-PyTorch memory, this process has 78.77 GiB memory in use.
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""

KV_CACHE_OOM = """\
(EngineCore_DP0 pid=88) INFO 11-23 10:01:02 [kv_cache_utils.py:1087] GPU KV cache size: 0 tokens
(EngineCore_DP0 pid=88) ERROR 11-23 10:01:02 [core.py:708] ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.
"""

HF_NOT_FOUND = """\
huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. (Request ID: Root=1-6742f2a1)

Repository Not Found for url: https://huggingface.co/org/nope/resolve/main/config.json.
Please make sure you specified the correct `repo_id` and `repo_type`.
OSError: org/nope is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'
"""

TRUST_TRACE = """\
(APIServer pid=51) INFO 11-23 19:44:43 [utils.py:233] non-default args: {'model': 'tiiuae/falcon-7b', 'trust_remote_code': False}
ValueError: Loading tiiuae/falcon-7b requires you to execute the configuration file in that repo on your local machine. Make sure you have read the code there to avoid malicious use, then set the option `trust_remote_code=True` to remove this error.
RuntimeError: Failed to load the model config. If the model is a custom model not yet available in the HuggingFace transformers library, consider setting `trust_remote_code=True` in LLM or using the `--trust-remote-code` flag in the CLI.
"""

KUBELET_IMAGE = """\
  Normal   Pulling    12s (x3 over 55s)  kubelet  Pulling image "ghcr.io/myorg/vllm:v1"
  Warning  Failed     11s (x3 over 54s)  kubelet  Failed to pull image "ghcr.io/myorg/vllm:v1": rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/myorg/vllm:v1": failed to resolve reference "ghcr.io/myorg/vllm:v1": ghcr.io/myorg/vllm:v1: not found
  Warning  Failed     11s (x3 over 54s)  kubelet  Error: ErrImagePull
  Normal   BackOff    1s (x4 over 53s)   kubelet  Back-off pulling image "ghcr.io/myorg/vllm:v1"
  Warning  Failed     1s (x4 over 53s)   kubelet  Error: ImagePullBackOff
"""

SCHEDULER = (
    "  Warning  FailedScheduling  2m (x3 over 4m)  default-scheduler  0/3 nodes are available: "
    "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient nvidia.com/gpu. "
    "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
)

SLURM_TIMEOUT = "slurmstepd: error: *** JOB 5382685 ON alvis4-12 CANCELLED AT 2026-11-23T20:14:03 DUE TO TIME LIMIT ***"

ENGINE_DEAD = """\
(EngineCore_DP0 pid=2317) ERROR 11-23 20:01:10 [core.py:710] EngineCore encountered a fatal error.
RuntimeError: CUDA error: an illegal memory access was encountered
vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
"""

# Ordinary lines that mention the rules' words and must NOT match.
NORMAL_LINES = [
    "(EngineCore_DP0 pid=2317) INFO 11-23 19:44:58 [gpu_worker.py:298] Memory profiling takes 5.26 seconds",
    "(EngineCore_DP0 pid=2317) INFO 11-23 19:44:58 [gpu_worker.py:299] Available KV cache memory: 58.64 GiB",
    "(EngineCore_DP0 pid=2317) INFO 11-23 19:44:58 [kv_cache_utils.py:1087] GPU KV cache size: 1,098,432 tokens",
    "(APIServer pid=51) INFO 11-23 19:44:43 [utils.py:233] non-default args: {'model': 'Qwen/Qwen2.5-Math-1.5B', 'trust_remote_code': False}",
    "(EngineCore_DP0 pid=2317) INFO 11-23 19:44:45 [core.py:77] Initializing a V1 LLM engine (v0.11.0) with config: model='Qwen/Qwen2.5-Math-1.5B', trust_remote_code=True, dtype=torch.bfloat16, max_seq_len=4096",
    "(APIServer pid=51) INFO 11-23 19:45:01 [api_server.py:1880] Starting vLLM API server 0 on http://127.0.0.1:8000",
    "INFO:     Application startup complete.",
    "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
    "  Normal   Pulled     3s    kubelet  Successfully pulled image \"vllm/vllm-openai:v0.11.0\" in 41.2s",
    "  Normal   Scheduled  60s   default-scheduler  Successfully assigned mert/pod to gpu-node-1",
    "(APIServer pid=51) INFO 11-23 19:46:00 [loggers.py:123] Engine 000: Avg prompt throughput: 512.0 tokens/s, GPU KV cache usage: 4.1%",
    "Loading safetensors checkpoint shards: 100% Completed | 4/4 [00:03<00:00,  1.02it/s]",
    "slurmstepd: info: job 5382685 completed",
]


def rules_of(text: str) -> list[str]:
    return [d.rule_id for d in diagnose_lines(text.splitlines())]


def test_cuda_oom_traceback_is_oom_with_engine_death_secondary():
    ids = rules_of(OOM_TRACE)
    assert ids[0] == dg.CUDA_OOM
    assert dg.ENGINE_DEAD in ids  # "Engine core initialization failed"
    best = primary(diagnose_lines(OOM_TRACE.splitlines()))
    assert best.rule_id == dg.CUDA_OOM
    assert "torch.OutOfMemoryError" in best.evidence


@pytest.mark.parametrize(
    "line",
    [
        "RuntimeError: CUDA error: out of memory",
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`",
    ],
)
def test_cuda_oom_wordings(line):
    assert diagnose_line(line).rule_id == dg.CUDA_OOM


def test_kv_cache_oom():
    assert rules_of(KV_CACHE_OOM) == [dg.CUDA_OOM]


def test_model_not_found():
    assert rules_of(HF_NOT_FOUND) == [dg.MODEL_NOT_FOUND]
    line = "{'object': 'error', 'message': 'The model `qwen` does not exist.', 'type': 'NotFoundError', 'code': 404}"
    assert diagnose_line(line).rule_id == dg.MODEL_NOT_FOUND


def test_trust_remote_code_but_not_the_config_dump():
    assert rules_of(TRUST_TRACE) == [dg.TRUST_REMOTE_CODE]
    # the config dump line with trust_remote_code=... is ordinary
    assert diagnose_line(TRUST_TRACE.splitlines()[0]) is None


def test_image_pull_events():
    assert rules_of(KUBELET_IMAGE) == [dg.IMAGE_PULL]
    assert diagnose_line(KUBELET_IMAGE.splitlines()[0]) is None  # "Pulling image" is normal


def test_gpu_unschedulable_event_and_state():
    assert diagnose_line(SCHEDULER).rule_id == dg.GPU_UNSCHEDULABLE
    d = diagnose_state("pod", "Pending", "Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    assert d.rule_id == dg.GPU_UNSCHEDULABLE and "Insufficient nvidia.com/gpu" in d.evidence
    # a pod that is merely pending (being scheduled) is not a failure
    assert diagnose_state("pod", "Pending", "", "") is None
    # SLURM: Resources is normal queueing, ReqNodeNotAvail is not
    assert diagnose_state("job", "PENDING", "(Resources)") is None
    assert diagnose_state("job", "PENDING", "(ReqNodeNotAvail, UnavailableNodes:alvis4-[01-04])").rule_id == dg.GPU_UNSCHEDULABLE
    sbatch = "sbatch: error: Batch job submission failed: Requested node configuration is not available"
    assert diagnose_line(sbatch).rule_id == dg.GPU_UNSCHEDULABLE


def test_image_pull_state():
    d = diagnose_state("pod", "Waiting", "ImagePullBackOff", 'Back-off pulling image "ghcr.io/x/vllm:v1"')
    assert d.rule_id == dg.IMAGE_PULL
    assert diagnose_state("pod", "Waiting", "ContainerCreating", "") is None


def test_job_time_limit_line_and_state():
    assert diagnose_line(SLURM_TIMEOUT).rule_id == dg.JOB_TIME_LIMIT
    assert diagnose_state("job", "TIMEOUT").rule_id == dg.JOB_TIME_LIMIT
    assert diagnose_state("job", "COMPLETED") is None
    assert diagnose_state("task", "Failed", "TaskRunTimeout", "TaskRun x failed to finish within 1h0m0s").rule_id == dg.JOB_TIME_LIMIT


def test_engine_dead_is_secondary():
    found = diagnose_lines(ENGINE_DEAD.splitlines())
    assert [d.rule_id for d in found] == [dg.ENGINE_DEAD]
    assert found[0].secondary


def test_server_not_ready_state():
    assert diagnose_state("server", "timeout", "", "no answer after 600 s").rule_id == dg.SERVER_NOT_READY
    assert dg.server_not_ready(30).rule_id == dg.SERVER_NOT_READY


def test_state_message_falls_back_to_line_rules():
    d = diagnose_state("task", "Failed", "Failed", "torch.OutOfMemoryError: CUDA out of memory.")
    assert d.rule_id == dg.CUDA_OOM


@pytest.mark.parametrize("line", NORMAL_LINES)
def test_ordinary_lines_do_not_match(line):
    assert diagnose_line(line) is None


def test_simulator_failure_texts_are_recognised():
    """The simulator prints vLLM's real texts; every one must be diagnosed."""
    from backends.sim import failures

    oom = failures.OOM_TEMPLATE.format(alloc=2.0, free=0.42, used=78.77, torch_alloc=77.1, reserved=0.58)
    assert primary(diagnose_lines([oom, failures.ENGINE_INIT_FAILED])).rule_id == dg.CUDA_OOM
    assert primary(diagnose_lines(failures.model_not_found_lines("org/nope"))).rule_id == dg.MODEL_NOT_FOUND
    assert diagnose_line(failures.MODEL_DOES_NOT_EXIST_TEMPLATE.format(model="Qwen/Qwen2.5-7B")).rule_id == dg.MODEL_NOT_FOUND
    assert primary(diagnose_lines(failures.trust_remote_code_lines("org/x"))).rule_id == dg.TRUST_REMOTE_CODE
    assert primary(diagnose_lines(failures.engine_crash_lines() + [failures.ENGINE_DEAD])).rule_id == dg.ENGINE_DEAD
    port = failures.PORT_IN_USE_TEMPLATE.format(host="127.0.0.1", port=8000)
    assert diagnose_line("ERROR:    " + port).rule_id == dg.PORT_IN_USE


# --------------------------------------------------------------------- fixes


@pytest.fixture(scope="module")
def catalogs():
    return load_catalogs()


def test_oom_fixes_from_the_spec(catalogs):
    spec = build_spec(catalogs, "llama2-7b", tp=2, max_model_len=4096, max_num_seqs=256)
    fixes = fixes_for(dg.CUDA_OOM, spec)
    assert [f.label for f in fixes] == ["Increase TP", "Reduce context", "Reduce batch", "Both: reduce context and batch"]
    assert fixes[0].changes == {"engine.tp": 4}
    assert fixes[0].description == "TP=2 -> TP=4 (doubles GPU memory)"
    assert fixes[1].description == "max_model_len=4096 -> 2048"
    assert fixes[2].changes == {"engine.max_num_seqs": 128}
    assert fixes[3].changes == {"engine.max_model_len": 2048, "engine.max_num_seqs": 128}
    # every fix applies cleanly to the spec
    for fix in fixes:
        new = spec
        for path, value in fix.changes.items():
            new = new.set(path, value)
        assert new != spec


def test_oom_fixes_stop_at_floors(catalogs):
    spec = build_spec(catalogs, "llama2-7b", max_model_len=256, max_num_seqs=1)
    assert [f.label for f in fixes_for(dg.CUDA_OOM, spec)] == ["Increase TP"]


def test_trust_remote_code_fix(catalogs):
    spec = build_spec(catalogs, "llama2-7b", extra_args=["--enable-prefix-caching"])
    (fix,) = fixes_for(dg.TRUST_REMOTE_CODE, spec)
    assert fix.changes == {"engine.extra_args": ("--enable-prefix-caching", "--trust-remote-code")}
    fixed = spec.set("engine.extra_args", fix.changes["engine.extra_args"])
    assert fixes_for(dg.TRUST_REMOTE_CODE, fixed) == []


def test_image_pull_fix_goes_back_to_catalog_image(catalogs):
    spec = build_spec(catalogs, "llama2-7b", image="ghcr.io/myorg/vllm:v1")
    (fix,) = fixes_for(dg.IMAGE_PULL, spec)
    assert fix.changes == {"engine.image": catalogs.models.default_image}
    plain = build_spec(catalogs, "llama2-7b")
    assert fixes_for(dg.IMAGE_PULL, plain) == []  # already the default: nothing to go back to


def test_unschedulable_lowers_tp(catalogs):
    spec = build_spec(catalogs, "llama2-7b", tp=4)
    (fix,) = fixes_for(dg.GPU_UNSCHEDULABLE, spec)
    assert fix.changes == {"engine.tp": 2}
    assert fixes_for(dg.GPU_UNSCHEDULABLE, build_spec(catalogs, "llama2-7b", tp=1)) == []


def test_model_not_found_has_no_automatic_fix(catalogs):
    spec = build_spec(catalogs, "llama2-7b")
    assert fixes_for(dg.MODEL_NOT_FOUND, spec) == []


def test_alert_for(catalogs):
    spec = build_spec(catalogs, "llama2-7b", tp=2)
    d = diagnose_line("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.")
    alert = alert_for(d, spec)
    assert alert.severity == "error"
    assert alert.diagnosis == dg.CUDA_OOM == alert.kind
    assert alert.fixes[0].changes == {"engine.tp": 4}
    assert "CUDA out of memory" in alert.evidence
    assert alert.message.startswith("CUDA out of memory:")


def _corpus() -> list[str]:
    """Every log line this module tests, failing and ordinary."""
    texts = [OOM_TRACE, KV_CACHE_OOM, HF_NOT_FOUND, TRUST_TRACE, KUBELET_IMAGE, SLURM_TIMEOUT, ENGINE_DEAD]
    lines = [line for text in texts for line in text.splitlines()]
    lines += list(SCHEDULER) if isinstance(SCHEDULER, (list, tuple)) else [SCHEDULER]
    return lines + list(NORMAL_LINES)


def test_prefilter_never_hides_a_match():
    # the keyword pre-filter is an optimisation only: any line some rule pattern
    # matches must get through it, or diagnose_line would silently miss a failure
    hits = 0
    for line in _corpus():
        if any(p.search(line) for rule in dg.RULES for p in rule.patterns):
            hits += 1
            assert dg._may_match(line), line
    assert hits >= 10


@pytest.mark.parametrize("rule", dg.RULES, ids=lambda r: r.rule_id)
def test_every_pattern_has_a_prefilter_keyword(rule):
    # build a line from each pattern's literal text and check the filter lets it in
    import re as _re

    for pattern in rule.patterns:
        literal = _re.sub(r"\\[bsdw]|[\\()?*+.\[\]|^$]", " ", pattern.pattern)
        literal = " ".join(literal.split())
        assert any(word in pattern.pattern.lower().replace("\\", "") or word in literal.lower() for word in dg._KEYWORDS), pattern.pattern
