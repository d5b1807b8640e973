"""The diagnosis rule table on realistic log excerpts and states."""

from __future__ import annotations

import pytest

from backends import diagnosis as dg
from backends.diagnosis import alert_for, diagnose_line, diagnose_lines, diagnose_state, fixes_for, primary
from config.catalog import load_catalogs
from config.spec import build_spec
from tests.support.upstream_files import upstream

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
"""  # noqa: E501 - real output, verbatim

KV_CACHE_OOM = """\
(EngineCore_DP0 pid=88) INFO 11-23 10:01:02 [kv_cache_utils.py:1087] GPU KV cache size: 0 tokens
(EngineCore_DP0 pid=88) ERROR 11-23 10:01:02 [core.py:708] ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.
"""  # noqa: E501 - real output, verbatim

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
"""  # noqa: E501 - real output, verbatim

KUBELET_IMAGE = """\
  Normal   Pulling    12s (x3 over 55s)  kubelet  Pulling image "ghcr.io/myorg/vllm:v1"
  Warning  Failed     11s (x3 over 54s)  kubelet  Failed to pull image "ghcr.io/myorg/vllm:v1": rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/myorg/vllm:v1": failed to resolve reference "ghcr.io/myorg/vllm:v1": ghcr.io/myorg/vllm:v1: not found
  Warning  Failed     11s (x3 over 54s)  kubelet  Error: ErrImagePull
  Normal   BackOff    1s (x4 over 53s)   kubelet  Back-off pulling image "ghcr.io/myorg/vllm:v1"
  Warning  Failed     1s (x4 over 53s)   kubelet  Error: ImagePullBackOff
"""  # noqa: E501 - real output, verbatim

SCHEDULER = (
    "  Warning  FailedScheduling  2m (x3 over 4m)  default-scheduler  0/3 nodes are available: "
    "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient nvidia.com/gpu. "
    "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
    "2 No preemption victims found for incoming pod."
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
    "(APIServer pid=51) INFO 11-23 19:44:43 [utils.py:233] non-default args: {'model': 'Qwen/Qwen2.5-Math-1.5B', "
    "'trust_remote_code': False}",
    "(EngineCore_DP0 pid=2317) INFO 11-23 19:44:45 [core.py:77] Initializing a V1 LLM engine (v0.11.0) with config: "
    "model='Qwen/Qwen2.5-Math-1.5B', trust_remote_code=True, dtype=torch.bfloat16, max_seq_len=4096",
    "(APIServer pid=51) INFO 11-23 19:45:01 [api_server.py:1880] Starting vLLM API server 0 on http://127.0.0.1:8000",
    "INFO:     Application startup complete.",
    "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
    "  Normal   Pulled     3s    kubelet  Successfully pulled image \"vllm/vllm-openai:v0.11.0\" in 41.2s",
    "  Normal   Scheduled  60s   default-scheduler  Successfully assigned mert/pod to gpu-node-1",
    "(APIServer pid=51) INFO 11-23 19:46:00 [loggers.py:123] Engine 000: Avg prompt throughput: 512.0 tokens/s, "
    "GPU KV cache usage: 4.1%",
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
    ],
)
def test_cuda_oom_wordings(line):
    assert diagnose_line(line).rule_id == dg.CUDA_OOM


def test_kv_cache_with_nothing_left():
    (found,) = diagnose_lines(KV_CACHE_OOM.splitlines())
    assert found.rule_id == dg.KV_CACHE_TOO_SMALL and found.facts["available_gib"] == 0
    assert "nothing was left for the KV cache" in found.message


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
    assert (
        diagnose_state("job", "PENDING", "(ReqNodeNotAvail, UnavailableNodes:alvis4-[01-04])").rule_id
        == dg.GPU_UNSCHEDULABLE
    )
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
    assert (
        diagnose_state("task", "Failed", "TaskRunTimeout", "TaskRun x failed to finish within 1h0m0s").rule_id
        == dg.JOB_TIME_LIMIT
    )


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
    assert (
        diagnose_line(failures.MODEL_DOES_NOT_EXIST_TEMPLATE.format(model="Qwen/Qwen2.5-7B")).rule_id
        == dg.MODEL_NOT_FOUND
    )
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
    assert [f.label for f in fixes] == ["Increase TP", "Reduce context", "Reduce batch",
                                        "Both: reduce context and batch"]
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
    texts += [text for text, _ in REAL_FAILURES.values()]
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
        assert any(
            word in pattern.pattern.lower().replace("\\", "") or word in literal.lower() for word in dg._KEYWORDS
        ), pattern.pattern


# ------------------------------------------- real vLLM failures (issue 15, item 6)
#
# Each text is what vLLM / torch / huggingface_hub print, taken from their source
# (vllm/config/model.py, v1/core/kv_cache_utils.py, v1/worker/gpu_worker.py,
# distributed/device_communicators/pynccl_wrapper.py, model_executor/models/registry.py,
# huggingface_hub/file_download.py, transformers' auto config) and from reported logs,
# with vLLM's "(EngineCore_DP0 pid=N) ERROR ... [file.py:line]" prefixes where they print them.

P = "(EngineCore_DP0 pid=316) ERROR 10-02 11:20:31 [core.py:708] "

REAL_FAILURES = {
    "gpu-in-use": (
        P + "ValueError: Free memory on device cuda:0 (7.34/15.49 GiB) on startup is less than desired GPU memory "
        "utilization (0.8, 12.39 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.\n"
        "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {}",
        dg.GPU_MEMORY_IN_USE,
    ),
    "offline": (
        "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in the disk cache and "
        "outgoing traffic has been disabled. To enable hf.co look-ups and downloads online, set 'local_files_only' "
        "to False.",
        dg.MODEL_FILES_MISSING,
    ),
    "hub-unreachable": (
        "requests.exceptions.ConnectionError: (MaxRetryError(\"HTTPSConnectionPool(host='huggingface.co', port=443): "
        "Max retries exceeded with url: /api/models/meta-llama/Llama-3.1-8B-Instruct/revision/main (Caused by "
        "NameResolutionError(\\\"<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to resolve "
        "'huggingface.co' ([Errno -3] Temporary failure in name resolution)\\\"))\"))\n"
        "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the "
        "cached files. Check your internet connection or see how to run the library in offline mode at "
        "'https://huggingface.co/docs/transformers/installation#offline-mode'.",
        dg.MODEL_FILES_MISSING,
    ),
    "max-len": (
        "(APIServer pid=53)   Value error, User-specified max_model_len (65536) is greater than the derived "
        "max_model_len (max_position_embeddings=32768.0 or model_max_length=None in model's config.json). To allow "
        "overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must "
        "be used with extreme caution. If the model uses relative position encoding (RoPE), positions exceeding "
        "derived_max_model_len lead to nan. If the model uses absolute position encoding, positions exceeding "
        "derived_max_model_len will cause a CUDA array out-of-bounds error. [type=value_error, input_value=ArgsKwargs"
        "((), {'model': ...nderer_num_workers': 1}), input_type=ArgsKwargs]",
        dg.MAX_MODEL_LEN_TOO_LONG,
    ),
    "tp-heads": (
        "ValueError: Total number of attention heads (40) must be divisible by tensor parallel size (3).",
        dg.TP_NOT_DIVISIBLE,
    ),
    "tp-vocab": (
        "(Worker_TP4 pid=554) ERROR 12-08 15:37:59 [multiproc_executor.py:597] WorkerProc failed to start.\n"
        "(Worker_TP4 pid=554) ERROR 12-08 15:37:59 [multiproc_executor.py:597] AssertionError: 151552 is not "
        "divisible by 6",
        dg.TP_NOT_DIVISIBLE,
    ),
    "arch-transformers": (
        "ValueError: The checkpoint you are trying to load has model type `qwen3` but Transformers does not recognize "
        "this architecture. This could be because of an issue with the checkpoint, or because your version of "
        "Transformers is out of date.",
        dg.ARCH_UNSUPPORTED,
    ),
    "arch-vllm": (
        "(APIServer pid=352089) Value error, Model architectures ['DeepseekOCRForCausalLM'] are not supported for now. "
        "Supported architectures: dict_keys(['ApertusForCausalLM', 'AquilaModel', 'AquilaForCausalLM'])",
        dg.ARCH_UNSUPPORTED,
    ),
    "dp-rank": (
        "(EngineCore_DP1 pid=412) ERROR 05-02 09:14:11 [core.py:708] AssertionError: DP adjusted local rank 1 is out "
        "of bounds.",
        dg.DP_RANK_OUT_OF_RANGE,
    ),
    "dp-world": (
        "AssertionError: local_world_size (2) must be less than or equal to the number of visible devices (1).",
        dg.DP_RANK_OUT_OF_RANGE,
    ),
    "nccl": (
        '(Worker pid=2730) ERROR [pynccl_wrapper.py:417] raise RuntimeError(f"NCCL error: {error_str}")\n'
        "(Worker pid=2730) ERROR RuntimeError: NCCL error: unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
        dg.NCCL_FAILURE,
    ),
    "nccl-shm": (
        "worker-0:212:212 [0] include/shm.h:28 NCCL WARN Call to posix_fallocate failed : No space left on device\n"
        "worker-0:212:212 [0] include/shm.h:48 NCCL WARN Error while creating shared memory segment "
        "/dev/shm/nccl-vzIpS6 (size 9637888)\n"
        "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, "
        "unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5",
        dg.NCCL_FAILURE,
    ),
    "kv-small": (
        # vLLM's own message (v1/core/kv_cache_utils.py), with the numbers of a real run of Qwen3-0.6B
        P + "ValueError: To serve at least one request with the models's max seq len (40960), (4.38 GiB KV cache is "
        "needed, which is larger than the available KV cache memory (1.0 GiB). Based on the available memory, the "
        "estimated maximum model length is 9344. Try increasing `gpu_memory_utilization` or decreasing "
        "`max_model_len` when initializing the engine. See https://docs.vllm.ai/en/latest/configuration/"
        "conserving_memory/ for more details.\n"
        "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above.",
        dg.KV_CACHE_TOO_SMALL,
    ),
    "gated-no-token": (
        "huggingface_hub.errors.GatedRepoError: 401 Client Error. "
        "(Request ID: Root=1-67a2b3c4-5d6e7f8091a2b3c4d5e6f708)\n"
        "\n"
        "Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.\n"
        "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted. You must have access to it and be "
        "authenticated to access it. Please log in.",
        dg.MODEL_GATED,
    ),
}


@pytest.mark.parametrize("name", list(REAL_FAILURES))
def test_real_failure_is_recognised_and_has_a_concrete_fix(name):
    text, rule = REAL_FAILURES[name]
    best = primary(diagnose_lines(text.splitlines()))
    assert best.rule_id == rule
    assert best.message != dg.RULES_BY_ID[rule].message  # worded with the log's own numbers
    assert dg.remedies(best)  # something concrete to do, even with no spec


def test_free_memory_at_start_offers_the_utilisation_that_fits(catalogs):
    best = primary(diagnose_lines(REAL_FAILURES["gpu-in-use"][0].splitlines()))
    assert (best.facts["free_gib"], best.facts["total_gib"], best.facts["gpu_util"]) == (7.34, 15.49, 0.8)
    assert "another process holds 8.2 GiB" in best.message
    spec = build_spec(catalogs, "llama2-7b")
    (fix,) = fixes_for(best.rule_id, spec, facts=best.facts)
    # 7.34 / 15.49 = 0.474 of the GPU is free; leave two points for the driver's own use
    assert fix.changes == {"engine.extra_args": ("--gpu-memory-utilization=0.45",)}
    assert any("nvidia-smi" in r for r in dg.remedies(best))
    # the older wording without a device name
    old = dg.diagnose_line("ValueError: Free memory on device (6.92/8.0 GiB) on startup is less than desired GPU "
                           "memory utilization (0.9, 7.2 GiB)")
    assert old.rule_id == dg.GPU_MEMORY_IN_USE and old.facts["free_gib"] == 6.92


def test_model_files_missing_offline_or_unreachable():
    offline = primary(diagnose_lines(REAL_FAILURES["offline"][0].splitlines()))
    assert offline.facts["offline"] is True and "downloads are switched off" in offline.message
    assert any("HF_HUB_OFFLINE" in r for r in dg.remedies(offline))
    unreachable = primary(diagnose_lines(REAL_FAILURES["hub-unreachable"][0].splitlines()))
    assert unreachable.facts["offline"] is False and "could not be reached" in unreachable.message
    assert any("huggingface-cli download" in r for r in dg.remedies(unreachable))
    # a hub error is not a wrong model name
    assert dg.MODEL_NOT_FOUND not in rules_of(REAL_FAILURES["offline"][0])


def test_max_model_len_above_the_derived_maximum_names_and_offers_it(catalogs):
    best = dg.diagnose_line(REAL_FAILURES["max-len"][0])
    assert (best.facts["requested"], best.facts["derived_max"], best.facts["derived_key"]) == (
        65536, 32768, "max_position_embeddings")
    assert "max_position_embeddings=32768" in best.message
    spec = build_spec(catalogs, "mistral-7b", max_model_len=32768).set("engine.max_model_len", 32768)
    (fix,) = fixes_for(best.rule_id, spec, facts=best.facts)
    assert fix.changes == {"engine.max_model_len": 32768} and fix.label == "Use the model's maximum"
    assert "[--max-model-len 32768]" in dg.remedies(best)[0]
    # sliding window and model_max_length variants: the larger of the two is what vLLM allows
    sw = dg.diagnose_line("Value error, User-specified max_model_len (12288) is greater than the derived max_model_len "
                          "(sliding_window=4096.0 or model_max_length=None in model's config.json).")
    assert sw.facts["derived_max"] == 4096
    mml = dg.diagnose_line("ValueError: User-specified max_model_len (40000) is greater than the derived max_model_len "
                           "(max_position_embeddings=4096 or model_max_length=32768 in model's config.json).")
    assert mml.facts["derived_max"] == 32768


def test_tp_that_does_not_divide_offers_valid_tps(catalogs):
    heads = dg.diagnose_line(REAL_FAILURES["tp-heads"][0])
    assert (heads.facts["count"], heads.facts["tp"], heads.facts["what"]) == (40, 3, "attention heads")
    assert "2 or 4 or 8" in heads.message
    spec = build_spec(catalogs, "llama2-13b").set("engine.tp", 3)
    fixes = fixes_for(heads.rule_id, spec, facts=heads.facts)
    assert [f.changes for f in fixes] == [{"engine.tp": 2}, {"engine.tp": 4}]
    vocab = primary(diagnose_lines(REAL_FAILURES["tp-vocab"][0].splitlines()))
    assert vocab.facts["what"] == "vocabulary entries" and vocab.facts["count"] == 151552
    assert [f.label for f in fixes_for(vocab.rule_id, None, facts=vocab.facts)] == ["Use TP=4", "Use TP=8"]


def test_unknown_architecture_offers_a_newer_image(catalogs):
    best = dg.diagnose_line(REAL_FAILURES["arch-transformers"][0])
    assert best.facts["architecture"] == "qwen3"
    spec = build_spec(catalogs, "qwen3-14b")  # the catalog's default image, vLLM 0.11
    (fix,) = fixes_for(best.rule_id, spec, facts=best.facts)
    assert fix.changes == {"engine.image": dg.NEWEST_VLLM_IMAGE}
    assert fixes_for(best.rule_id, spec.set("engine.image", dg.NEWEST_VLLM_IMAGE), facts=best.facts) == []
    vllm = dg.diagnose_line(REAL_FAILURES["arch-vllm"][0])
    assert vllm.facts["architecture"] == "DeepseekOCRForCausalLM"
    # a SLURM container command is not an image to swap: the advice says what to change
    assert dg._arch_fixes(dg.Engine(image="apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve"), {}) == []
    assert any("container line" in r for r in dg.remedies(best))


def test_data_parallel_rank_out_of_range(catalogs):
    world = dg.diagnose_line(REAL_FAILURES["dp-world"][0])
    assert world.facts == {"devices": 1, "local_world_size": 2}
    spec = build_spec(catalogs, "llama2-7b", extra_args=["--data-parallel-size=2"])
    (fix,) = fixes_for(world.rule_id, spec, facts=world.facts)
    assert fix.changes == {"engine.extra_args": ()}  # one GPU: no data parallelism
    four = fixes_for(world.rule_id, spec, facts={"devices": 4})[0]
    assert four.changes == {"engine.extra_args": ("--data-parallel-size=4",)}
    none = dg.diagnose_line("AssertionError: DP adjusted local rank 0 is out of bounds for 0 devices.")
    assert none.facts["devices"] == 0 and "no GPU at all" in none.message
    assert any("CUDA_VISIBLE_DEVICES" in r for r in dg.remedies(none))


def test_nccl_failures(catalogs):
    plain = primary(diagnose_lines(REAL_FAILURES["nccl"][0].splitlines()))
    assert plain.facts["detail"] == "unhandled cuda error"
    spec = build_spec(catalogs, "llama2-70b")
    (fix,) = fixes_for(plain.rule_id, spec, facts=plain.facts)
    assert fix.changes == {"engine.extra_args": ("--disable-custom-all-reduce",)}
    shm = primary(diagnose_lines(REAL_FAILURES["nccl-shm"][0].splitlines()))
    assert shm.facts["shm"] and "/dev/shm" in shm.message
    assert "--shm-size" in dg.remedies(shm)[0]
    timeout = dg.diagnose_line(
        "[rank0]:[E ProcessGroupNCCL.cpp:563] [Rank 0] Watchdog caught collective operation timeout: "
        "WorkNCCL(SeqNum=1, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600028 milliseconds "
        "before timing out.")
    assert timeout.rule_id == dg.NCCL_FAILURE and timeout.facts["timeout"]
    # an NCCL failure is a cause of its own now, not an engine death
    assert not dg.RULES_BY_ID[dg.NCCL_FAILURE].secondary


def test_kv_cache_too_small_offers_the_length_that_fits(catalogs):
    found = diagnose_lines(REAL_FAILURES["kv-small"][0].splitlines())
    best = primary(found)
    assert [d.rule_id for d in found] == [dg.KV_CACHE_TOO_SMALL, dg.ENGINE_DEAD]
    assert (best.facts["max_model_len"], best.facts["fits"], best.facts["available_gib"]) == (40960, 9344, 1.0)
    assert "about 9344 tokens" in best.message
    spec = build_spec(catalogs, "qwen3-14b", max_model_len=40960)
    fixes = fixes_for(best.rule_id, spec, facts=best.facts)
    assert fixes[0].changes == {"engine.max_model_len": 9216}  # 9344 rounded down to a multiple of 256
    assert "vLLM estimated 9344 fits" in fixes[0].description
    assert fixes[1].changes == {"engine.extra_args": ("--gpu-memory-utilization=0.95",)}
    assert fixes[2].changes == {"engine.tp": spec.engine.tp * 2}
    # vLLM's older wording names the tokens the cache holds
    old = dg.diagnose_line("ValueError: The model's max seq len (32768) is larger than the maximum number of tokens "
                           "that can be stored in KV cache (9936). Try increasing `gpu_memory_utilization` or "
                           "decreasing `max_model_len` when initializing the engine.")
    assert old.rule_id == dg.KV_CACHE_TOO_SMALL and old.facts["fits"] == 9936


def test_gated_model_without_a_token():
    best = primary(diagnose_lines(REAL_FAILURES["gated-no-token"][0].splitlines()))
    assert best.facts["token_missing"] is True
    assert best.facts["model"] == "meta-llama/Llama-3.1-8B-Instruct"  # from a later line of the same failure
    assert "had no token" in best.message
    steps = dg.remedies(best)
    assert any("https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct" in s for s in steps)
    assert any("HF_TOKEN" in s for s in steps)
    denied = dg.diagnose_line("Access to model meta-llama/Llama-3.1-8B-Instruct is restricted and you are not in the "
                              "authorized list. Visit https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct to ask "
                              "for access.")
    assert denied.facts["token_missing"] is False and "not been granted access" in denied.message


# ------------------------------------------------------------- reading with context

CAPACITY = "vllm-capacity/logs/meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log"


def _real_log(name: str = CAPACITY) -> list[str]:
    return upstream(name).read_text().splitlines()


def test_the_real_startup_logs_show_no_failure_and_their_settings():
    logs = sorted(upstream("vllm-capacity", "logs").glob("*.log"))
    assert len(logs) == 6
    for path in logs:
        reader = dg.LogDiagnoser()
        found = [d for d in map(reader.feed, path.read_text().splitlines()) if d]
        assert found == [], (path.name, found[:1])
        assert reader.version == "0.19.0"
        assert reader.settings["max_model_len"] == 8192 and reader.settings["gpu_memory_utilization"] == 0.95
        tp = int(path.name.split("--tp")[1][0])
        assert int(reader.settings.get("tensor_parallel_size", 1)) == tp
        assert reader.phase == "serving"


def _cut_before(lines: list[str], marker: str) -> list[str]:
    return lines[: next(i for i, line in enumerate(lines) if marker in line) + 1]


GRAPH_OOM = [
    "(EngineCore pid=245) ERROR 04-22 01:36:29 [v1/engine/core.py:1108] EngineCore failed to start.",
    "(EngineCore pid=245) ERROR 04-22 01:36:29 [v1/engine/core.py:1108] Traceback (most recent call last):",
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/gpu_worker.py", line 512, '
    "in compile_or_warm_up_model",
    "    self.model_runner.capture_model()",
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/gpu_model_runner.py", line 5301, in capture_model',
    "    self._capture_cudagraphs(",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 64.00 MiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 22.88 MiB is free. Including non-PyTorch memory, this process has 79.16 GiB memory in use.",
    "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
]


def test_oom_during_cuda_graph_capture_in_a_real_log(catalogs):
    lines = _cut_before(_real_log(), "Capturing CUDA graphs (mixed prefill-decode") + GRAPH_OOM
    best = primary(diagnose_lines(lines))
    assert best.rule_id == dg.CUDA_OOM and best.facts["phase"] == "cuda-graph"
    assert best.title == "CUDA out of memory while capturing CUDA graphs"
    # with no spec, the settings come from vLLM's own "non-default args" line
    fixes = fixes_for(best.rule_id, None, facts=best.facts)
    assert [f.label for f in fixes] == ["Run without CUDA graphs", "Leave room for the CUDA graphs"]
    assert fixes[1].changes == {"engine.extra_args": ("--gpu-memory-utilization=0.9",)}  # it ran with 0.95
    assert "--enforce-eager" in dg.remedies(best)[0]


def test_oom_while_loading_only_more_gpus_help(catalogs):
    lines = _cut_before(_real_log(), "Loading safetensors checkpoint shards") + [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total capacity of "
        "79.19 GiB of which 1.12 GiB is free."]
    best = primary(diagnose_lines(lines))
    assert best.facts["phase"] == "loading" and "while loading the weights" in best.title
    spec = build_spec(catalogs, "llama-3.1-8b")
    assert [f.label for f in fixes_for(best.rule_id, spec, facts=best.facts)] == ["Increase TP"]


def test_oom_in_the_warm_up_run(catalogs):
    from backends.sim import failures

    best = primary(diagnose_lines(failures.oom_lines(2.0) + [failures.ENGINE_INIT_FAILED]))
    assert best.facts["phase"] == "warm-up"  # the traceback passes through profile_run
    spec = build_spec(catalogs, "llama2-7b", tp=2)
    labels = [f.label for f in fixes_for(best.rule_id, spec, facts=best.facts)]
    assert labels == ["Increase TP", "Reduce context", "Reduce batch", "Smaller scheduler steps"]


def test_see_root_cause_above_shows_the_root_cause():
    lines = [
        "(APIServer pid=1) INFO 04-22 00:03:35 [entrypoints/utils.py:233] non-default args: {'model': "
        "'google/gemma-2-2b-it', 'dtype': 'float16'}",
        P + "EngineCore failed to start.",
        P + "Traceback (most recent call last):",
        P + '  File "/usr/local/lib/python3.12/dist-packages/vllm/config/model.py", line 1210, in _resolve_dtype',
        P + "ValueError: The model type 'gemma2' does not support float16. Reason: Numerical instability.",
        "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {}",
    ]
    (found,) = diagnose_lines(lines)
    assert found.rule_id == dg.ENGINE_DEAD and found.title == "vLLM engine failed to start"
    assert found.evidence == ("ValueError: The model type 'gemma2' does not support float16. "
                              "Reason: Numerical instability.")
    assert found.message.startswith("Root cause (line 5): ValueError: The model type 'gemma2'")
    assert "See root cause above" in found.facts["echo"]
    # with no exception above, the echo is all there is
    (alone,) = diagnose_lines([lines[-1]])
    assert alone.evidence.startswith("(APIServer pid=1) RuntimeError: Engine core initialization failed")


def test_a_recognised_cause_above_wins_over_the_echo():
    text = REAL_FAILURES["gpu-in-use"][0]
    found = diagnose_lines(text.splitlines())
    assert [d.rule_id for d in found] == [dg.GPU_MEMORY_IN_USE, dg.ENGINE_DEAD]
    assert primary(found).rule_id == dg.GPU_MEMORY_IN_USE


def test_settings_from_the_engine_config_line():
    reader = dg.LogDiagnoser()
    reader.feed("(EngineCore_DP0 pid=2317) INFO 11-23 19:44:45 [core.py:77] Initializing a V1 LLM engine (v0.11.0) "
                "with config: model='Qwen/Qwen2.5-Math-1.5B', speculative_config=None, trust_remote_code=True, "
                "dtype=torch.bfloat16, max_seq_len=4096, tensor_parallel_size=2, pipeline_parallel_size=1")
    assert reader.version == "0.11.0"
    assert reader.settings == {"model": "Qwen/Qwen2.5-Math-1.5B", "max_model_len": 4096, "tensor_parallel_size": 2,
                               "pipeline_parallel_size": 1}
    # other "version" lines (NCCL's) are not vLLM's version
    other = dg.LogDiagnoser()
    other.feed("(Worker pid=444) INFO 04-22 01:35:54 [pynccl.py:111] vLLM is using nccl==2.27.5, NCCL version 2.27.5")
    assert other.version is None


def test_vllm_flags_for_a_post_mortem():
    flags = dg.vllm_flags({"engine.tp": 4, "engine.max_model_len": 9216})
    assert flags == "--tensor-parallel-size 4, --max-model-len 9216"
    assert dg.vllm_flags({"engine.extra_args": ("--x", "--gpu-memory-utilization=0.9")},
                         ("--x", "--gpu-memory-utilization=0.95")) == "--gpu-memory-utilization 0.9"
    assert dg.vllm_flags({"engine.extra_args": ()}, ("--data-parallel-size=2",)) == "drop --data-parallel-size=2"
