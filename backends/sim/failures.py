"""The failure texts the simulator prints, copied from real vLLM / torch / transformers output.

They are constants so the diagnosis rules' tests can import them and check that
the rules recognise exactly what the simulator (and so vLLM) prints. Each
``*_LINES`` function returns the stderr lines of one failure, traceback
included; the last line is the one a human (and a rule) reads first.

Exit codes: every startup failure exits with 1 (an uncaught Python exception in
``vllm serve``); an engine crash (``crash-after``) also exits with 1.
"""

from __future__ import annotations

FAIL_MODES = ("oom", "model-not-found", "trust-remote-code", "crash-after")

EXIT_STARTUP_FAILURE = 1
EXIT_ENGINE_DEAD = 1

# --- CUDA out of memory (torch) -------------------------------------------------------
OOM_MARKER = "torch.OutOfMemoryError: CUDA out of memory."
OOM_TEMPLATE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {alloc:.2f} GiB. "
    "GPU 0 has a total capacity of 79.19 GiB of which {free:.2f} GiB is free. "
    "Including non-PyTorch memory, this process has {used:.2f} GiB memory in use. "
    "Of the allocated memory {torch_alloc:.2f} GiB is allocated by PyTorch, and {reserved:.2f} GiB "
    "is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
    "See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
ENGINE_INIT_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
)

# --- model not found (huggingface_hub / transformers) ---------------------------------
MODEL_NOT_FOUND_MARKER = "is not a valid model identifier listed on 'https://huggingface.co/models'"
REPO_NOT_FOUND_TEMPLATE = (
    "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. "
    "(Request ID: Root=1-6742f2a1-3c5e0a9b1d7f4e2a6b8c9d01;5f1e7b2c-9a0d-4c3e-8f6a-1b2c3d4e5f60)"
)
REPO_NOT_FOUND_DETAIL = (
    "Repository Not Found for url: https://huggingface.co/{model}/resolve/main/config.json.",
    "Please make sure you specified the correct `repo_id` and `repo_type`.",
    "If you are trying to access a private or gated repo, make sure you are authenticated. "
    "For more details, see https://huggingface.co/docs/huggingface_hub/authentication",
)
MODEL_NOT_FOUND_TEMPLATE = (
    "OSError: {model} is not a local folder and is not a valid model identifier listed on "
    "'https://huggingface.co/models'"
)
MODEL_NOT_FOUND_HINT = (
    "If this is a private repository, make sure to pass a token having permission to this repo "
    "either by logging in with `hf auth login` or by passing `token=<your_token>`"
)
# What vLLM's OpenAI server answers (HTTP 404) for a model name it does not serve.
MODEL_DOES_NOT_EXIST_TEMPLATE = "The model `{model}` does not exist."

# --- trust_remote_code (transformers, re-raised by vLLM) -------------------------------
TRUST_REMOTE_CODE_MARKER = "trust_remote_code=True"
TRUST_REMOTE_CODE_TEMPLATE = (
    "ValueError: Loading {model} requires you to execute the configuration file in that repo on "
    "your local machine. Make sure you have read the code there to avoid malicious use, then set "
    "the option `trust_remote_code=True` to remove this error."
)
TRUST_REMOTE_CODE_VLLM = (
    "RuntimeError: Failed to load the model config. If the model is a custom model not yet "
    "available in the HuggingFace transformers library, consider setting `trust_remote_code=True` "
    "in LLM or using the `--trust-remote-code` flag in the CLI."
)

# --- engine death (crash-after N) --------------------------------------------------------
ENGINE_FATAL = "EngineCore encountered a fatal error."
ENGINE_CRASH_CAUSE = (
    "RuntimeError: CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
    "below might be incorrect.\n"
    "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
    "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."
)
ENGINE_DEAD = (
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
    "See stack trace (above) for the root cause."
)
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
ENGINE_TERMINATING = "Engine failed, terminating server."

# --- busy port (uvicorn) ----------------------------------------------------------------
PORT_IN_USE_TEMPLATE = (
    "[Errno 98] error while attempting to bind on address ('{host}', {port}): address already in use"
)

# --- request validation (HTTP 400 bodies) --------------------------------------------------
CONTEXT_TOO_LONG_TEMPLATE = (
    "This model's maximum context length is {max_model_len} tokens. However, you requested "
    "{total} tokens ({prompt} in the messages, {max_tokens} in the completion). "
    "Please reduce the length of the messages or completion."
)


def oom_lines(over: float) -> list[str]:
    """Traceback of a CUDA OOM during the engine's memory profiling run.

    Args:
        over: how far the settings exceed the budget (load / budget); sets the
            "Tried to allocate" figure.
    """
    over = max(over, 1.0)
    alloc = min(2.0 * over, 40.0)
    free = 0.42
    used = 79.19 - free
    lines = [
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 699, in run_engine_core',
        "    engine_core = EngineCoreProc(*args, **kwargs)",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 498, in __init__',
        "    super().__init__(vllm_config, executor_class, log_stats,",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 92, in __init__',
        "    self._initialize_kv_caches(vllm_config)",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 190, in _initialize_kv_caches',
        "    self.model_executor.determine_available_memory())",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/gpu_worker.py", line 263, in determine_available_memory',  # noqa: E501 - vLLM's own line, verbatim
        "    self.model_runner.profile_run()",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/gpu_model_runner.py", line 3017, in profile_run',  # noqa: E501 - vLLM's own line, verbatim
        "    = self._dummy_sampler_run(last_hidden_states)",
        '  File "/usr/local/lib/python3.12/dist-packages/torch/utils/_contextlib.py", line 120, in decorate_context',
        "    return func(*args, **kwargs)",
        OOM_TEMPLATE.format(
            alloc=alloc, free=free, used=used, torch_alloc=used - 1.6, reserved=0.58
        ),
    ]
    return lines


def model_not_found_lines(model: str) -> list[str]:
    """Traceback of loading a config for a model that is neither a folder nor an HF repo."""
    return [
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/dist-packages/transformers/utils/hub.py", line 479, in cached_files',
        "    hf_hub_download(",
        '  File "/usr/local/lib/python3.12/dist-packages/huggingface_hub/file_download.py", line 1010, in hf_hub_download',  # noqa: E501 - vLLM's own line, verbatim
        "    return _hf_hub_download_to_cache_dir(",
        REPO_NOT_FOUND_TEMPLATE,
        "",
        *(line.format(model=model) for line in REPO_NOT_FOUND_DETAIL),
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "/usr/local/bin/vllm", line 10, in <module>',
        "    sys.exit(main())",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/transformers_utils/config.py", line 486, in get_config',
        "    config_dict, _ = PretrainedConfig.get_config_dict(",
        '  File "/usr/local/lib/python3.12/dist-packages/transformers/utils/hub.py", line 531, in cached_files',
        "    raise OSError(",
        MODEL_NOT_FOUND_TEMPLATE.format(model=model),
        MODEL_NOT_FOUND_HINT,
    ]


def trust_remote_code_lines(model: str) -> list[str]:
    """Traceback of loading a custom-code model config without --trust-remote-code."""
    return [
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/transformers_utils/config.py", line 344, in get_config',
        "    config = AutoConfig.from_pretrained(",
        '  File "/usr/local/lib/python3.12/dist-packages/transformers/models/auto/configuration_auto.py", line 1283, in from_pretrained',  # noqa: E501 - vLLM's own line, verbatim
        "    trust_remote_code = resolve_trust_remote_code(",
        TRUST_REMOTE_CODE_TEMPLATE.format(model=model),
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "/usr/local/bin/vllm", line 10, in <module>',
        "    sys.exit(main())",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/transformers_utils/config.py", line 364, in get_config',
        "    raise RuntimeError(err_msg) from e",
        TRUST_REMOTE_CODE_VLLM,
    ]


def engine_crash_lines() -> list[str]:
    """The engine core's traceback when it dies while serving."""
    return [
        ENGINE_FATAL,
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 701, in run_engine_core',
        "    engine_core.run_busy_loop()",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 728, in run_busy_loop',
        "    self._process_engine_step()",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/gpu_model_runner.py", line 2291, in execute_model',  # noqa: E501 - vLLM's own line, verbatim
        "    valid_sampled_token_ids = sampled_token_ids.tolist()",
        *ENGINE_CRASH_CAUSE.splitlines(),
    ]


# The substring a diagnosis rule can key on for each --fail mode.
MARKERS = {
    "oom": OOM_MARKER,
    "model-not-found": MODEL_NOT_FOUND_MARKER,
    "trust-remote-code": TRUST_REMOTE_CODE_MARKER,
    "crash-after": ENGINE_DEAD,
}


def failure_lines(mode: str, model: str = "meta-llama/Llama-2-7b-hf") -> list[str]:
    """The failure lines the simulator prints for ``--fail MODE`` (realistic log excerpts for tests).

    Startup failures print exactly these on stderr. For ``crash-after`` the engine-core
    traceback goes to stdout with vLLM's logger prefix on each line and the
    ``EngineDeadError`` traceback to stderr; here they are returned unprefixed.

    Raises:
        ValueError: ``mode`` is not one of :data:`FAIL_MODES`.
    """
    if mode == "oom":
        return ["Process EngineCore_DP0:", *oom_lines(2.0), *ENGINE_INIT_FAILED_TB]
    if mode == "model-not-found":
        return model_not_found_lines(model)
    if mode == "trust-remote-code":
        return trust_remote_code_lines(model)
    if mode == "crash-after":
        return [*engine_crash_lines(), *ENGINE_DEAD_TB]
    raise ValueError(f"unknown failure mode {mode!r}; choose from {', '.join(FAIL_MODES)}")


ENGINE_INIT_FAILED_TB = [
    "Traceback (most recent call last):",
    '  File "/usr/local/bin/vllm", line 10, in <module>',
    "    sys.exit(main())",
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/utils.py", line 782, in wait_for_engine_startup',
    "    raise RuntimeError(",
    ENGINE_INIT_FAILED,
]
ENGINE_DEAD_TB = [
    "Traceback (most recent call last):",
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/async_llm.py", line 439, in output_handler',
    "    outputs = await engine_core.get_output_async()",
    ENGINE_DEAD,
]
