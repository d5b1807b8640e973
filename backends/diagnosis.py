"""The one rule table that turns log lines and pod/job states into known failures.

Every backend feeds it: the local backend its server's stdout/stderr, SLURM the
job's output file and ``squeue``/``scontrol`` states, Tekton and Argo the pod
logs and pod/TaskRun/node states; ``sweepdeck diagnose`` feeds it a saved log.
A match is a :class:`Diagnosis` that carries the numbers the log gave (the
derived maximum length, the free memory, the attention heads...);
:func:`fixes_for` turns it into concrete changes of the current spec ("Use the
model's maximum: max_model_len=65536 -> 32768"), :func:`remedies` into the
lines a person reads after a run sweepdeck did not launch, and
:func:`alert_for` into the :class:`~backends.events.Alert` the TUI shows as a
recovery dialog and the headless CLI prints with numbered fixes.

Rules are matched in table order; the first match wins. Patterns are written
against the real wording of vLLM (``vllm/config``, ``v1/core/kv_cache_utils.py``,
``v1/worker/gpu_worker.py``, ``distributed/device_communicators/pynccl_wrapper.py``,
the model registry), torch, transformers/huggingface_hub, kubelet/scheduler and
slurmstepd, and are anchored on phrases that only appear in the failure (an
``INFO`` line about "memory profiling" or a config dump with
``trust_remote_code=False`` must not match).

:class:`LogDiagnoser` reads a log the way a person does: it remembers the
run's settings from vLLM's startup lines, the start-up phase (loading,
warm-up, CUDA-graph capture) and the last exception, so a CUDA OOM says when
it happened and "Engine core initialization failed. See root cause above"
shows the root cause above it instead of itself.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from backends.events import Alert, Fix

if TYPE_CHECKING:
    from config.spec import ExperimentSpec

# Rule ids (stable: they are saved in event logs and named in Alert.diagnosis).
GPU_MEMORY_IN_USE = "gpu-memory-in-use"
KV_CACHE_TOO_SMALL = "kv-cache-too-small"
CUDA_OOM = "cuda-oom"
MAX_MODEL_LEN_TOO_LONG = "max-model-len-too-long"
TP_NOT_DIVISIBLE = "tp-not-divisible"
DP_RANK_OUT_OF_RANGE = "dp-rank-out-of-range"
NCCL_FAILURE = "nccl-failure"
ARCH_UNSUPPORTED = "architecture-unsupported"
IMAGE_PULL = "image-pull"
MODEL_GATED = "model-gated"
MODEL_FILES_MISSING = "model-files-missing"
MODEL_NOT_FOUND = "model-not-found"
TRUST_REMOTE_CODE = "trust-remote-code"
GPU_UNSCHEDULABLE = "gpu-unschedulable"
SERVER_NOT_READY = "server-not-ready"
JOB_TIME_LIMIT = "job-time-limit"
PORT_IN_USE = "port-in-use"
OOM_KILLED = "oom-killed"
ENGINE_DEAD = "engine-dead"

#: vLLM's default --gpu-memory-utilization.
DEFAULT_GPU_UTIL = 0.9
#: The vLLM image offered when the image in use is too old for a model.
NEWEST_VLLM_IMAGE = "vllm/vllm-openai:latest"

Facts = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A recognised failure.

    Args:
        rule_id: Stable id of the rule (``cuda-oom``...).
        title: Short name for a dialog title or a log prefix.
        message: What it means and what to do, in a sentence or two, with the
            numbers the log gave.
        evidence: The log line or state text that matched (for an engine that
            died "see root cause above": the root cause line).
        secondary: The failure is usually the echo of an earlier, more
            specific one (an engine that died *because* of an OOM); the driver
            only reports it when nothing more specific was seen.
        facts: What the log said that a fix needs (``derived_max``,
            ``free_gib``, ``heads``, ``phase``, ``settings``...).
    """

    rule_id: str
    title: str
    message: str
    evidence: str = ""
    secondary: bool = False
    facts: Facts = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    title: str
    message: str
    patterns: tuple[re.Pattern[str], ...]
    secondary: bool = False
    #: (kind or "*", state regex, reason regex) triples matched by diagnose_state.
    states: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = field(default=())
    #: Reads the numbers a fix needs out of the matching line.
    extract: Callable[[str], Facts] | None = None
    #: The message with those numbers (None: the static ``message``).
    describe: Callable[[Facts], str | None] | None = None

    def match_line(self, text: str) -> bool:
        return any(p.search(text) for p in self.patterns)


def _re(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def _st(kind: str, state: str, reason: str = ".*") -> tuple[str, re.Pattern[str], re.Pattern[str]]:
    return (kind, re.compile(state, re.IGNORECASE), re.compile(reason, re.IGNORECASE))


def _num(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    value = _num(text)
    return int(value) if value is not None else None


# ------------------------------------------------------------- fact readers


_FREE_MEM = re.compile(
    r"Free memory on device(?: (?P<device>[\w:]+))? \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup "
    r"is less than desired GPU memory utilization \((?P<util>[\d.]+), (?P<requested>[\d.]+) GiB\)",
    re.IGNORECASE,
)


def _free_memory_facts(text: str) -> Facts:
    m = _FREE_MEM.search(text)
    if not m:
        return {}
    return {"device": m["device"] or "", "free_gib": _num(m["free"]), "total_gib": _num(m["total"]),
            "gpu_util": _num(m["util"]), "requested_gib": _num(m["requested"])}


def _kv_cache_facts(text: str) -> Facts:
    facts: Facts = {}
    for key, pattern in (
        ("max_model_len", r"max seq len \((\d+)\)"),
        ("needed_gib", r"\(?([\d.]+) GiB KV cache is needed"),
        ("available_gib", r"available KV cache memory \(([\d.]+) GiB\)"),
        ("fits", r"estimated maximum model length is (\d+)"),
        # older vLLM: "... is larger than the maximum number of tokens that can be stored in KV cache (N)"
        ("fits", r"can be stored in KV cache \((\d+)\)"),
    ):
        m = re.search(pattern, text, re.IGNORECASE)
        if m and key not in facts:
            facts[key] = _num(m.group(1)) if key.endswith("_gib") else _int(m.group(1))
    if re.search(r"No available memory for the cache blocks", text, re.IGNORECASE):
        facts["available_gib"] = 0.0
    return facts


_DERIVED = re.compile(
    r"User-specified max_model_len \((?P<req>\d+)\) is greater than the derived max_model_len "
    r"\((?P<key>\w+)=(?P<derived>[\d.]+|None)(?: or model_max_length=(?P<mml>[\d.]+|None))?",
    re.IGNORECASE,
)


def _max_len_facts(text: str) -> Facts:
    m = _DERIVED.search(text)
    if not m:
        return {}
    derived = _num(m["derived"])
    mml = _num(m["mml"])
    # vLLM accepts up to model_max_length when the config sets a larger one.
    limits = [v for v in (derived, mml) if v is not None and math.isfinite(v)]
    return {"requested": int(m["req"]), "derived_key": m["key"], "derived_max": int(max(limits)) if limits else None}


def _tp_facts(text: str) -> Facts:
    m = re.search(r"Total number of attention heads \((\d+)\) must be divisible by tensor parallel size \((\d+)\)",
                  text, re.IGNORECASE)
    if m:
        return {"count": int(m.group(1)), "tp": int(m.group(2)), "what": "attention heads"}
    m = re.search(r"(\d+) is not divisible by (\d+)", text)
    if m:
        count = int(m.group(1))
        # Vocabulary sizes are tens of thousands; head counts and such are small.
        what = "vocabulary entries" if count >= 1000 else "units of a weight dimension"
        return {"count": count, "tp": int(m.group(2)), "what": what}
    return {}


def _dp_facts(text: str) -> Facts:
    facts: Facts = {}
    m = re.search(r"DP adjusted local rank (\d+) is out of bounds", text, re.IGNORECASE)
    if m:
        facts["rank"] = int(m.group(1))
    for pattern in (r"for (\d+) devices", r"Device count: (\d+)", r"number of visible devices \((\d+)\)"):
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            facts["devices"] = int(m.group(1))
            break
    m = re.search(r"local_world_size \((\d+)\)", text)
    if m:
        facts["local_world_size"] = int(m.group(1))
    return facts


def _nccl_facts(text: str) -> Facts:
    facts: Facts = {
        "shm": bool(re.search(r"/dev/shm|shared memory", text, re.IGNORECASE)),
        "timeout": "Watchdog caught collective operation timeout" in text,
    }
    m = re.search(r"NCCL error(?: in: \S+)?:? ([^(\n]+)", text, re.IGNORECASE)
    detail = m.group(1).strip().rstrip(",.") if m else ""
    if detail and "{" not in detail:  # not the raise line of a traceback's source
        facts["detail"] = detail
    return facts


def _arch_facts(text: str) -> Facts:
    m = re.search(r"model type [`'\"]?([\w.-]+)[`'\"]?", text) or re.search(r"architectures? \[[\s'\"]*([\w.-]+)", text)
    return {"architecture": m.group(1)} if m else {}


def _gated_facts(text: str) -> Facts:
    facts: Facts = {}
    m = (re.search(r"Access to model (\S+?) is restricted", text)
         or re.search(r"huggingface\.co/([\w.-]+/[\w.-]+?)(?:/resolve|\.?$|\s)", text))
    if m:
        facts["model"] = m.group(1)
    if re.search(r"not in the authorized list", text, re.IGNORECASE):
        facts["token_missing"] = False
    elif re.search(r"Please log in|be authenticated|401 Client Error", text, re.IGNORECASE):
        facts["token_missing"] = True
    return facts


def _files_missing_facts(text: str) -> Facts:
    offline = bool(re.search(r"outgoing traffic has been disabled|offline mode", text, re.IGNORECASE))
    return {"offline": offline}


# ------------------------------------------------------------- messages


def _free_memory_message(f: Facts) -> str | None:
    if f.get("free_gib") is None or f.get("total_gib") is None:
        return None
    used = f["total_gib"] - f["free_gib"]
    return (f"Only {f['free_gib']:g} of the GPU's {f['total_gib']:g} GiB were free when vLLM started, less than the "
            f"{f['requested_gib']:g} GiB that gpu_memory_utilization {f['gpu_util']:g} asks for: another process "
            f"holds {used:.1f} GiB of this GPU. Stop it, or let vLLM take less of the GPU.")


def _kv_message(f: Facts) -> str | None:
    if f.get("available_gib") == 0:
        return ("After loading the weights nothing was left for the KV cache. Spread the model over more GPUs "
                "(higher TP) or let vLLM use more of each GPU (gpu_memory_utilization).")
    if not f.get("max_model_len"):
        return None
    fits = f" The longest that fits is about {f['fits']} tokens." if f.get("fits") else ""
    need = (f" ({f['needed_gib']:g} GiB of KV cache needed, {f['available_gib']:g} GiB available)"
            if f.get("needed_gib") is not None and f.get("available_gib") is not None else "")
    return (f"One request of max_model_len {f['max_model_len']} tokens does not fit in the KV cache{need}.{fits} "
            "Lower max_model_len, raise gpu_memory_utilization, or spread the model over more GPUs.")


_PHASES = {
    "loading": "while loading the weights",
    "warm-up": "during the warm-up (memory profiling) run",
    "cuda-graph": "while capturing CUDA graphs",
}


def _oom_message(f: Facts) -> str | None:
    when = _PHASES.get(f.get("phase", ""))
    if not when:
        return None
    advice = {
        "loading": "The weights alone do not fit: spread the model over more GPUs (higher TP).",
        "warm-up": "The profiling run's activations did not fit: spread the model over more GPUs, or lower "
                   "max_model_len, max_num_seqs or max_num_batched_tokens.",
        "cuda-graph": "The KV cache took the memory the CUDA graphs need: run without CUDA graphs (--enforce-eager), "
                      "lower gpu_memory_utilization a little, or lower max_num_seqs (fewer graphs).",
    }[f["phase"]]
    return f"The GPU ran out of memory {when}. {advice}"


def _max_len_message(f: Facts) -> str | None:
    if not f.get("derived_max"):
        return None
    return (f"max_model_len {f['requested']} is longer than the model supports: its config.json gives "
            f"{f['derived_key']}={f['derived_max']}. Use max_model_len {f['derived_max']} or less.")


def _tp_message(f: Facts) -> str | None:
    if not f.get("count"):
        return None
    valid = _valid_tps(f["count"], f["tp"])
    options = " or ".join(str(t) for t in valid) if valid else "1"
    return (f"The model's {f['count']} {f['what']} cannot be split evenly over TP={f['tp']} GPUs. "
            f"Use a TP that divides {f['count']}: {options}.")


def _dp_message(f: Facts) -> str | None:
    devices = f.get("devices")
    if devices == 0:
        return ("vLLM sees no GPU at all: the GPUs are not visible to the server "
                "(CUDA_VISIBLE_DEVICES, container GPU access).")
    if devices is None and f.get("rank") is not None:
        return (f"Data-parallel rank {f['rank']} has no GPU of its own: data_parallel_size × tensor_parallel_size is "
                "more than the GPUs visible on this node. Lower --data-parallel-size (or TP), or ask for more GPUs.")
    if devices:
        return (f"Data parallelism needs data_parallel_size × tensor_parallel_size GPUs on this node, but only "
                f"{devices} are visible. Lower --data-parallel-size (or TP), or ask for more GPUs.")
    return None


def _nccl_message(f: Facts) -> str | None:
    if f.get("shm"):
        return ("NCCL could not create its shared-memory segment: /dev/shm is too small in this container. "
                "Mount a larger /dev/shm (docker --ipc=host or --shm-size; Kubernetes: an emptyDir with "
                "medium Memory).")
    if f.get("timeout"):
        return ("A collective operation between the GPUs timed out: one rank stopped answering. An earlier error on "
                "another GPU is usually the cause.")
    if f.get("detail"):
        return (f"The GPUs could not talk to each other (NCCL: {f['detail']}). Re-run with NCCL_DEBUG=INFO to see the "
                "transport that fails; try --disable-custom-all-reduce, or NCCL_P2P_DISABLE=1 without NVLink.")
    return None


def _arch_message(f: Facts) -> str | None:
    arch = f.get("architecture")
    if not arch:
        return None
    version = f.get("vllm_version")
    image = f"vLLM {version}" if version else "this vLLM image"
    return (f"{image} (and the transformers inside it) does not know the model architecture {arch!r}. "
            f"Use a newer vLLM image, such as {NEWEST_VLLM_IMAGE}.")


def _gated_message(f: Facts) -> str | None:
    model = f.get("model") or "the model"
    if f.get("token_missing") is True:
        return (f"{model} is gated on Hugging Face and the server had no token. Accept its licence on huggingface.co, "
                "then give the server a read token (HF_TOKEN).")
    if f.get("token_missing") is False:
        return (f"The token's account has not been granted access to {model} yet: ask for access on its Hugging Face "
                "page and wait for approval.")
    return None


def _files_missing_message(f: Facts) -> str | None:
    model = f.get("model") or "the model"
    if f.get("offline"):
        return (f"The files of {model} are not in the server's Hugging Face cache, and downloads are switched off "
                "(HF_HUB_OFFLINE / local_files_only). Download the model into the cache first, or allow downloads.")
    return (f"The files of {model} are not in the server's Hugging Face cache and huggingface.co could not be "
            "reached. Download the model where there is network, or let the server reach huggingface.co.")


# ------------------------------------------------------------------- rules


RULES: tuple[Rule, ...] = (
    Rule(
        GPU_MEMORY_IN_USE,
        "GPU memory already in use",
        "Less GPU memory was free at start than gpu_memory_utilization asks for: another process is using the GPU.",
        _re(r"Free memory on device\b.* on startup is less than desired GPU memory utilization"),
        extract=_free_memory_facts,
        describe=_free_memory_message,
    ),
    Rule(
        KV_CACHE_TOO_SMALL,
        "KV cache too small for max_model_len",
        "The memory left for the KV cache cannot hold one request of max_model_len tokens. Lower max_model_len, "
        "raise gpu_memory_utilization, or spread the model over more GPUs.",
        _re(
            r"is larger than the available KV cache memory",
            r"No available memory for the cache blocks",
            # older vLLM: "The model's max seq len (N) is larger than the maximum number of tokens that
            # can be stored in KV cache (M)"
            r"is larger than the maximum number of tokens that can be stored in KV cache",
            r"not enough KV cache space",
        ),
        extract=_kv_cache_facts,
        describe=_kv_message,
    ),
    Rule(
        CUDA_OOM,
        "CUDA out of memory",
        "The vLLM engine ran out of GPU memory. Spread the model over more GPUs (higher TP), "
        "or lower max_model_len or max_num_seqs so the KV cache fits.",
        _re(
            r"\b(torch\.(cuda\.)?)?OutOfMemoryError\b",
            r"\bCUDA out of memory\b",
            r"\bCUDA error: out of memory\b",
            r"\bCUBLAS_STATUS_ALLOC_FAILED\b",
        ),
        describe=_oom_message,
    ),
    Rule(
        MAX_MODEL_LEN_TOO_LONG,
        "max_model_len above the model's maximum",
        "max_model_len is longer than the model's own maximum (from its config.json). Lower it.",
        _re(r"User-specified max_model_len \(\d+\) is greater than the derived max_model_len"),
        extract=_max_len_facts,
        describe=_max_len_message,
    ),
    Rule(
        TP_NOT_DIVISIBLE,
        "TP does not divide the model",
        "The tensor parallel size does not divide the model's attention heads (or vocabulary). Pick a TP that does.",
        _re(
            r"Total number of attention heads \(\d+\) must be divisible by tensor parallel size \(\d+\)",
            r"AssertionError: \d+ is not divisible by \d+",
        ),
        extract=_tp_facts,
        describe=_tp_message,
    ),
    Rule(
        DP_RANK_OUT_OF_RANGE,
        "Not enough GPUs for data parallelism",
        "A data-parallel rank has no GPU: data_parallel_size × tensor_parallel_size is more than the GPUs vLLM sees.",
        _re(
            r"DP adjusted local rank \d+ is out of bounds",
            r"local_world_size \(\d+\) must be less than or equal to the number of visible devices",
        ),
        extract=_dp_facts,
        describe=_dp_message,
    ),
    Rule(
        NCCL_FAILURE,
        "GPU communication (NCCL) failed",
        "The GPUs of the server could not talk to each other through NCCL. Re-run with NCCL_DEBUG=INFO for the "
        "cause; check /dev/shm and peer-to-peer access, or try --disable-custom-all-reduce.",
        _re(
            r"\bNCCL error\b",
            r"\bncclSystemError\b",
            r"\bncclInternalError\b",
            r"\bncclUnhandledCudaError\b",
            r"\bncclRemoteError\b",
            r"\bncclInvalidUsage\b",
            r"\bDistBackendError\b",
            r"Watchdog caught collective operation timeout",
            r"NCCL WARN .*(shared memory|/dev/shm)",
        ),
        extract=_nccl_facts,
        describe=_nccl_message,
    ),
    Rule(
        ARCH_UNSUPPORTED,
        "Model architecture unknown to this vLLM",
        "The vLLM image (or the transformers inside it) is older than the model's architecture. Use a newer image.",
        _re(
            r"Transformers does not recognize this architecture",
            r"Model architectures? \[[^\]]*\] (are|is) not supported for now",
            r"Model architectures? \[[^\]]*\] failed to be inspected",
        ),
        extract=_arch_facts,
        describe=_arch_message,
    ),
    Rule(
        IMAGE_PULL,
        "Image pull failed",
        "The container image could not be pulled: check its name and tag, and that the cluster "
        "may pull from that registry (pull secret).",
        _re(
            r"\bImagePullBackOff\b",
            r"\bErrImagePull\b",
            r"\bInvalidImageName\b",
            r"Failed to pull image",
            r"Back-off pulling image",
            r"\bmanifest unknown\b",
            r"FATAL:\s+(Unable to handle|While making image from oci registry)",
        ),
        states=(_st("*", r".*", r"^(ImagePullBackOff|ErrImagePull|InvalidImageName|ErrImageNeverPull)$"),),
    ),
    Rule(
        MODEL_GATED,
        "Model access denied",
        "The model is gated or private on Hugging Face: accept its licence on huggingface.co and "
        "make a token with access available to the server (HF_TOKEN).",
        _re(
            r"\bGatedRepoError\b",
            r"Cannot access gated repo",
            r"You are trying to access a gated repo",
            r"Access to model .* is restricted",
            r"401 Client Error.*huggingface\.co",
        ),
        extract=_gated_facts,
        describe=_gated_message,
    ),
    Rule(
        MODEL_FILES_MISSING,
        "Model files missing and the hub unreachable",
        "The model's files are not in the server's Hugging Face cache and could not be downloaded "
        "(offline mode, or no network to huggingface.co).",
        _re(
            r"outgoing traffic has been disabled",
            r"offline mode is enabled",
            r"\bLocalEntryNotFoundError\b",
            r"cannot find the requested files in the (local|disk) cache",
            r"We couldn't connect to '?https://huggingface\.co",
            r"HTTPSConnectionPool\(host='huggingface\.co'.*Max retries exceeded",
        ),
        extract=_files_missing_facts,
        describe=_files_missing_message,
    ),
    Rule(
        MODEL_NOT_FOUND,
        "Model not found",
        "The model name is neither a local folder nor a Hugging Face repository. Check the model "
        "id (and your Hugging Face token for private models), or pick another model.",
        _re(
            r"is not a local folder and is not a valid model identifier",
            r"\bRepositoryNotFoundError\b",
            r"Repository Not Found for url",
            r"\bThe model `[^`]*` does not exist\b",
            r"\bmodel\s+['\"`]?[\w./-]+['\"`]?\s+does not exist\b",
            r"Invalid repository ID or local directory specified",
            r"does not appear to have a file named config\.json",
            r"Can't load the configuration of '",
        ),
    ),
    Rule(
        TRUST_REMOTE_CODE,
        "trust_remote_code required",
        "This model ships its own code; vLLM loads it only with --trust-remote-code.",
        _re(
            r"requires you to execute the (configuration|modeling|tokenizer)? ?file",
            r"set the option `?trust_remote_code=True`? to remove this error",
            r"consider setting `?trust_remote_code=True`?",
            r"pass the argument `?trust_remote_code=True`?",
        ),
    ),
    Rule(
        GPU_UNSCHEDULABLE,
        "GPUs not available",
        "No node has enough free GPUs for this request. Ask for fewer GPUs (lower TP) or wait "
        "for GPUs to free up.",
        _re(
            r"Insufficient nvidia\.com/gpu",
            r"\d+/\d+ nodes are available:.*\bgpu\b",
            r"Requested node configuration is not available",
            r"Invalid generic resource \(gres\) specification",
        ),
        states=(
            _st("*", r"^(Pending|PodScheduled)$", r"^Unschedulable$"),
            _st("job", r"^PENDING$", r"^(ReqNodeNotAvail|PartitionConfig|BadConstraints|Resources_Unavailable)"),
        ),
    ),
    Rule(
        JOB_TIME_LIMIT,
        "Job time limit reached",
        "The job was stopped at its time limit before the experiment finished. Raise the profile's "
        "time limit or run fewer requests.",
        _re(r"DUE TO TIME LIMIT", r"\bDeadlineExceeded\b", r"\bTaskRunTimeout\b", r"\bPipelineRunTimeout\b"),
        states=(
            _st("job", r"^TIMEOUT$"),
            _st("*", r".*", r"^(DeadlineExceeded|TaskRunTimeout|PipelineRunTimeout)$"),
        ),
    ),
    Rule(
        SERVER_NOT_READY,
        "Server never became ready",
        "The vLLM server did not answer before the ready timeout. Large models take long to "
        "download and load: raise ready_timeout, or check the server log for the cause.",
        _re(r"server never became ready", r"timed out waiting for (the )?(vllm )?server"),
        states=(_st("server", r"^(timeout|not-ready|never-ready)$"),),
    ),
    Rule(
        PORT_IN_USE,
        "Port already in use",
        "Another process already listens on the server's port. Stop it or use another port.",
        _re(r"\[Errno 98\].*address already in use", r"\bOSError: \[Errno 98\]"),
    ),
    Rule(
        OOM_KILLED,
        "Killed for using too much host memory",
        "The container or job used more host (CPU) memory than it was given. Ask for more memory "
        "or lower max_num_seqs.",
        _re(r"\bOOMKilled\b", r"oom-kill", r"Detected \d+ oom[_-]kill event", r"\bOUT_OF_MEMORY\b"),
        states=(
            _st("*", r".*", r"^OOMKilled$"),
            _st("job", r"^OUT_OF_MEMORY$"),
        ),
    ),
    Rule(
        ENGINE_DEAD,
        "vLLM engine died",
        "The vLLM engine process stopped. The log lines above it name the cause.",
        _re(
            r"\bEngineDeadError\b",
            r"EngineCore encountered a fatal error",
            r"Engine core initialization failed",
            r"Engine failed, terminating server",
            r"CUDA error: an illegal memory access",
            r"See root cause above",
        ),
        secondary=True,
    ),
)

RULES_BY_ID = {r.rule_id: r for r in RULES}

# Cheap pre-filter: every rule pattern contains one of these literals (lower case),
# so a line without any of them cannot match and costs one lower() plus plain
# substring tests (~5 µs) instead of ~60 case-insensitive regex searches (~60 µs).
# Keep it specific: words such as "engine" or "model" occur in most vLLM lines.
# tests/unit/test_diagnosis.py checks that each pattern's examples pass this filter.
_KEYWORDS = (
    "outofmemory", "out of memory", "out_of_memory", "memory for the cache", "cublas_status_alloc",
    "kv cache", "free memory on device", "derived max_model_len", "must be divisible by", "is not divisible by",
    "dp adjusted local rank", "local_world_size", "nccl", "distbackenderror",
    "watchdog caught collective", "does not recognize this architecture", "not supported for now",
    "failed to be inspected", "imagepull", "invalidimagename", "pull image", "pulling image", "manifest unknown",
    "fatal:", "gated", "access to model", "401 client error", "outgoing traffic", "offline mode",
    "localentrynotfounderror", "requested files in the", "couldn't connect to", "max retries exceeded",
    "valid model identifier", "repositorynotfound", "repository not found", "does not exist", "invalid repository id",
    "config.json", "load the configuration", "requires you to execute", "trust_remote_code",
    "nvidia.com/gpu", "nodes are available", "node configuration", "generic resource",
    "time limit", "deadlineexceeded", "runtimeout", "never became ready", "timed out waiting",
    "errno 98", "oomkilled", "oom-kill", "oom_kill", "kill event", "enginedeaderror", "encountered a fatal error",
    "engine core initialization failed", "engine failed", "illegal memory access", "root cause above",
)


def _may_match(text: str, low: str | None = None) -> bool:
    low = text.lower() if low is None else low
    try:
        return bool(_keywords().find_matches_as_indexes(low))
    except UnicodeEncodeError:
        # undecodable bytes kept as surrogates (stdin, a file read with surrogateescape): the matcher
        # wants encodable text; the same text with them replaced matches the same keywords
        return bool(_keywords().find_matches_as_indexes(low.encode("utf-8", "replace").decode("utf-8")))


@functools.cache
def _keywords() -> Any:
    """The rules' keywords as one Aho-Corasick automaton: one pass over a line finds any of them."""
    import ahocorasick_rs

    return ahocorasick_rs.AhoCorasick(list(_KEYWORDS))


#: Patterns per automaton of the batch prefilter: the Aho-Corasick crate's SIMD prefilter (Teddy)
#: takes at most 64, and only for leftmost matching; without it the scan is ~2x slower.
_PREFILTER_GROUP = 48


@functools.cache
def _attention_bytes() -> tuple[Any, ...]:
    """:data:`_ATTENTION` as automata over UTF-8 bytes, each small enough for the SIMD prefilter
    (see :meth:`LogDiagnoser.feed_many`; leftmost-first: any match will do). On ordinary vLLM
    lines two automata of 43 words scan in ~0.1 µs a line where one of 86 takes ~0.25 µs."""
    import ahocorasick_rs

    words = sorted(word.encode() for word in _ATTENTION)
    groups = -(-len(words) // _PREFILTER_GROUP)
    return tuple(ahocorasick_rs.BytesAhoCorasick(words[i::groups], matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_FIRST)
                 for i in range(groups))


def _needs_attention(texts: list[str]) -> bool:
    """Whether any of ``texts`` holds a word of :data:`_ATTENTION` (one pass over the batch per automaton)."""
    data = "\n".join(texts).lower().encode("utf-8", "replace")  # a lone surrogate becomes "?"
    return any(automaton.find_matches_as_indexes(data) for automaton in _attention_bytes())


def _make(rule: Rule, evidence: str, facts: Facts | None = None) -> Diagnosis:
    facts = dict(facts or {})
    if rule.extract is not None:
        facts.update({k: v for k, v in rule.extract(evidence).items() if v is not None})
    message = (rule.describe(facts) if rule.describe is not None else None) or rule.message
    title = rule.title
    if rule.rule_id == CUDA_OOM and facts.get("phase") in _PHASES:
        title = f"CUDA out of memory {_PHASES[facts['phase']]}"
    return Diagnosis(rule.rule_id, title, message, evidence.strip()[:500], rule.secondary, facts)


def _match(text: str, low: str | None = None) -> Rule | None:
    if not text or not _may_match(text, low):
        return None
    for rule in RULES:
        if rule.match_line(text):
            return rule
    return None


def diagnose_line(text: str) -> Diagnosis | None:
    """The failure one log line shows, or None for an ordinary line (no context: see :class:`LogDiagnoser`)."""
    rule = _match(text)
    return _make(rule, text) if rule is not None else None


# -------------------------------------------------------- reading a whole log


# The engine's settings as vLLM prints them at start: the API server's
# "non-default args: {...}" and the engine core's "with config: key=value, ...".
_NON_DEFAULT = re.compile(r"non-default args: (\{.*\})\s*$")
_ENGINE_CONFIG = re.compile(r"Initializing a V\d LLM engine \(v(?P<version>[\w.+-]+)\) with config: (?P<config>.*)")
# "vLLM API server version 0.11.0", or the start-up banner's "█ ... version 0.19.0".
_VERSION = re.compile(r"vLLM API server version (?P<version>[\w.+-]+)|█.*\bversion (?P<banner>\d+\.\d+\.\d+\S*)\s*$")
_SETTING_KEYS = (
    "model", "max_model_len", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
    "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "enforce_eager", "kv_cache_dtype",
)

# Start-up phases, from progress lines and traceback frames (the last one seen wins);
# lower-case substrings, not regexes: every line of a run passes through here.
_PHASE_MARKERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("capturing cuda graph", "profiling cuda graph memory", "in capture_model", "_capture_cudagraphs",
      "cuda_graph.py"), "cuda-graph"),
    (("in profile_run", "in _dummy_run", "in _dummy_sampler_run", "in determine_available_memory",
      "memory profiling takes"), "warm-up"),
    (("starting to load model", "loading safetensors checkpoint shards", "in load_model", "in load_weights"),
     "loading"),
    (("model loading took",), "warm-up"),
    (("graph capturing finished", "init engine (profile, create kv cache, warmup model) took",
      "application startup complete"), "serving"),
)

_PHASE_PAIRS = tuple((marker, phase) for markers, phase in _PHASE_MARKERS for marker in markers)

#: What makes a line worth reading closely: a rule's keyword, a start-up marker, vLLM's settings or
#: version lines, or something that may be an exception (lower case; see :meth:`LogDiagnoser.feed_many`).
_ATTENTION = tuple(dict.fromkeys((*_KEYWORDS, *(m for m, _ in _PHASE_PAIRS), "non-default args", "llm engine (v",
                                  "version", "error: ", "exception: ", "exit: ")))

# A Python exception line ("ValueError: ...", "torch.OutOfMemoryError: ..."), behind vLLM's
# "(EngineCore_DP0 pid=1) ERROR 11-23 ... [core.py:708] " prefix if any.
_EXCEPTION = re.compile(
    r"^(?:\([\w ]+?(?: pid=\d+)?\)\s+)?(?:(?:ERROR|CRITICAL)\s[^\]]*\]\s+)?"
    r"(?P<exc>(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit)(?:\[\w+\])?: \S.*)$"
)
_ECHOES = re.compile(r"EngineDeadError|Engine core initialization failed|EngineCore encountered|root cause above",
                     re.IGNORECASE)


class LogDiagnoser:
    """Diagnoses a log line by line, keeping the context a person would.

    It remembers vLLM's start-up settings (``facts["settings"]``), its version,
    the start-up phase a CUDA OOM happened in, and the last exception line, so
    that "Engine core initialization failed. See root cause above" is reported
    with the root cause as its evidence.

    Use one per log (a run, a file); :meth:`feed` every line in order.
    """

    def __init__(self) -> None:
        self.settings: Facts = {}
        self.settings_known = False
        self.version: str | None = None
        self.phase: str | None = None
        self.line_no = 0
        self._exceptions: deque[tuple[int, str]] = deque(maxlen=16)

    def feed(self, text: str) -> Diagnosis | None:
        """Read one line; the failure it shows (with the context's facts), or None."""
        self.line_no += 1
        low = text.lower()
        self._observe(text, low)
        rule = _match(text, low)
        if rule is None:
            if ("error" in low or "exception" in low or "exit" in low) and ": " in text:
                m = _EXCEPTION.match(text.strip())
                if m and not _ECHOES.search(text):
                    self._exceptions.append((self.line_no, m["exc"]))
            return None
        facts: Facts = {"line": self.line_no}
        if self.settings_known:
            facts.setdefault("settings", dict(self.settings))
        if self.version:
            facts.setdefault("vllm_version", self.version)
        if self.phase and self.phase != "serving":
            facts.setdefault("phase", self.phase)
        if "model" in self.settings:
            facts.setdefault("model", self.settings["model"])
        found = _make(rule, text, facts)
        if found.rule_id == ENGINE_DEAD:
            found = self._with_root_cause(found, text)
        return found

    def feed_many(self, texts: list[str]) -> list[Diagnosis]:
        """Read many lines at once; the failures they show, in order.

        The same as :meth:`feed` line by line, but a batch in which no line can
        matter — no keyword of any rule, no start-up marker, no exception — is
        let through after one pass over the joined text (~0.2 µs a line instead
        of ~5 µs): the live path of a run reads its log in batches.
        """
        if not texts:
            return []
        if not _needs_attention(texts):
            self.line_no += len(texts)
            return []
        out = []
        for text in texts:
            found = self.feed(text)
            if found is not None:
                out.append(found)
        return out

    def read(self, lines: Iterable[str]) -> list[Diagnosis]:
        """Feed every line; the distinct failures in order of first appearance, each completed by its later lines."""
        seen: dict[str, Diagnosis] = {}
        for line in lines:
            found = self.feed(line)
            if found is None:
                continue
            first = seen.get(found.rule_id)
            seen[found.rule_id] = found if first is None else _merged(first, found)
        return list(seen.values())

    @property
    def last_exception(self) -> tuple[int, str] | None:
        """(line number, text) of the last exception line no rule recognised."""
        return self._exceptions[-1] if self._exceptions else None

    def _with_root_cause(self, found: Diagnosis, text: str) -> Diagnosis:
        """An engine death that points "above": show what is above."""
        if not self._exceptions:
            return found
        line_no, cause = self._exceptions[-1]
        starting = bool(re.search(r"initialization failed|failed to start", text, re.IGNORECASE))
        title = "vLLM engine failed to start" if starting else found.title
        message = f"Root cause (line {line_no}): {cause}"
        facts = {**found.facts, "root_cause": cause, "root_cause_line": line_no, "echo": text.strip()[:500]}
        return replace(found, title=title, message=message, evidence=cause[:500], facts=facts)

    def _observe(self, text: str, low: str) -> None:
        for marker, phase in _PHASE_PAIRS:
            if marker in low:
                self.phase = phase
                break
        if "non-default args" in text:
            self._read_non_default(text)
        elif "LLM engine (v" in text:
            m = _ENGINE_CONFIG.search(text)
            if m:
                self.version = self.version or m["version"]
                self._read_engine_config(m["config"])
        elif "version" in text and not self.version:
            m = _VERSION.search(text)
            if m:
                self.version = m["version"] or m["banner"]

    def _read_non_default(self, text: str) -> None:
        m = _NON_DEFAULT.search(text)
        if not m:
            return
        try:
            args = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return
        if isinstance(args, dict):
            self.settings.update({k: args[k] for k in _SETTING_KEYS if k in args})
            self.settings_known = True

    def _read_engine_config(self, config: str) -> None:
        pairs = dict(re.findall(r"(\w+)=('[^']*'|[^,]+)", config))
        renames = {"max_seq_len": "max_model_len"}
        for key, raw in pairs.items():
            key = renames.get(key, key)
            if key not in _SETTING_KEYS or key in self.settings:
                continue
            value: Any = raw.strip("'")
            if re.fullmatch(r"\d+", value):
                value = int(value)
            self.settings[key] = value
        self.settings_known = True


def diagnose_lines(lines: Iterable[str]) -> list[Diagnosis]:
    """Every distinct failure in ``lines``, in order of first appearance (read with context).

    A failure's later lines add what its first line did not say (a gated
    repo's model id comes a line after "GatedRepoError: 401 Client Error").
    """
    return LogDiagnoser().read(lines)


def _merged(first: Diagnosis, later: Diagnosis) -> Diagnosis:
    """``first`` with the facts only ``later`` gives (its message redone with them)."""
    new = {k: v for k, v in later.facts.items() if k not in first.facts}
    if not new or first.rule_id == ENGINE_DEAD:
        return first
    facts = {**first.facts, **new}
    rule = RULES_BY_ID[first.rule_id]
    message = (rule.describe(facts) if rule.describe is not None else None) or first.message
    return replace(first, message=message, facts=facts)


def primary(diagnoses: list[Diagnosis]) -> Diagnosis | None:
    """The most specific diagnosis: the first non-secondary one, else the first."""
    for d in diagnoses:
        if not d.secondary:
            return d
    return diagnoses[0] if diagnoses else None


def diagnose_state(kind: str, state: str, reason: str = "", message: str = "") -> Diagnosis | None:
    """The failure a pod/job/task/server state shows.

    Args:
        kind: ``pod``, ``job`` (SLURM), ``task``, ``node``, ``server``...
        state: The unit's own state word (``Pending``, ``Waiting``, ``TIMEOUT``).
        reason: The machine reason (``ImagePullBackOff``, ``Unschedulable``,
            SLURM's pending reason ``ReqNodeNotAvail, ...``).
        message: The human message (``0/3 nodes are available: 3 Insufficient
            nvidia.com/gpu.``); it is also matched like a log line.
    """
    state = (state or "").strip()
    reason = (reason or "").strip().strip("()")
    evidence = " ".join(p for p in (f"{kind} {state}".strip(), reason and f"({reason})", message) if p)
    for rule in RULES:
        for want_kind, state_re, reason_re in rule.states:
            if want_kind not in ("*", kind):
                continue
            if state_re.search(state) and reason_re.search(reason):
                return _make(rule, evidence)
    for text in (message, reason):
        found = diagnose_line(text)
        if found:
            return replace(found, evidence=evidence.strip()[:500])
    return None


def server_not_ready(seconds: float, detail: str = "") -> Diagnosis:
    """The diagnosis for a server that did not become ready in ``seconds``."""
    rule = RULES_BY_ID[SERVER_NOT_READY]
    evidence = f"no ready answer after {seconds:g} s" + (f" ({detail})" if detail else "")
    return Diagnosis(rule.rule_id, rule.title, rule.message, evidence)


# ------------------------------------------------------------------- fixes


@dataclass(frozen=True, slots=True)
class Engine:
    """The engine settings a fix starts from: the spec's, or what the log said (None: unknown)."""

    tp: int | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_util: float | None = None
    extra_args: tuple[str, ...] = ()
    image: str | None = None

    @classmethod
    def from_spec(cls, spec: ExperimentSpec) -> Engine:
        e = spec.engine
        util = _flag_value(e.extra_args, "--gpu-memory-utilization")
        return cls(e.tp, e.max_model_len, e.max_num_seqs, e.max_num_batched_tokens,
                   _num(util) if util is not None else DEFAULT_GPU_UTIL, tuple(e.extra_args), e.image)

    @classmethod
    def from_facts(cls, facts: Facts) -> Engine:
        """From the "non-default args" vLLM logged; an absent key is vLLM's default when that line was seen."""
        s = facts.get("settings")
        if not isinstance(s, dict):
            return cls()
        return cls(
            tp=_int(str(s.get("tensor_parallel_size", 1))),
            max_model_len=_int(str(s["max_model_len"])) if "max_model_len" in s else None,
            max_num_seqs=_int(str(s["max_num_seqs"])) if "max_num_seqs" in s else None,
            max_num_batched_tokens=_int(str(s["max_num_batched_tokens"])) if "max_num_batched_tokens" in s else None,
            gpu_util=_num(str(s.get("gpu_memory_utilization", DEFAULT_GPU_UTIL))),
        )


def _flag_value(args: Iterable[str], flag: str) -> str | None:
    """The value of ``--flag=V`` or ``--flag V`` in ``args`` (None: not given)."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def _set_flag(args: Iterable[str], flag: str, value: Any | None, aliases: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``args`` without ``flag`` (or its aliases) in either form, plus ``flag=value`` unless ``value`` is None."""
    names = (flag, *aliases)
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(n + "=") for n in names):
            continue
        out.append(arg)
    if value is not None:
        out.append(f"{flag}={value}")
    return tuple(out)


def _halve(value: int | None, floor: int) -> int | None:
    """``value // 2`` when that is still at least ``floor``, else None."""
    if value is None:
        return None
    half = value // 2
    return half if floor <= half < value else None


def _valid_tps(count: int, current: int | None) -> list[int]:
    """TP sizes (GPUs one node usually has) that divide ``count``, other than ``current``."""
    return [t for t in (1, 2, 4, 8, 16) if count % t == 0 and t != current]


def _round_down(tokens: int) -> int:
    """A tidy max_model_len at most ``tokens`` (a multiple of 256 above 1024; vLLM's estimate is exact)."""
    return tokens - tokens % 256 if tokens >= 1024 else tokens


def _replaced_value(spec: ExperimentSpec, path: str) -> Any:
    origin = spec.origins.get(path)
    return origin.base if origin is not None else None


def _util_fix(current: float | None, target: float, label: str, why: str) -> Fix | None:
    if current is not None and abs(current - target) < 0.005:
        return None
    return Fix(label, {"engine.extra_args": ("--gpu-memory-utilization", target)},
               f"gpu_memory_utilization={current if current is not None else DEFAULT_GPU_UTIL:g} -> {target:g} ({why})")


def _graph_oom_fixes(cur: Engine) -> list[Fix]:
    """OOM while capturing CUDA graphs: the graphs need memory the KV cache took."""
    fixes: list[Fix] = []
    if "--enforce-eager" not in cur.extra_args:
        fixes.append(Fix("Run without CUDA graphs", {"engine.extra_args": ("--enforce-eager", None)},
                         "add --enforce-eager (no graph memory; decoding gets slower)"))
    util = cur.gpu_util if cur.gpu_util is not None else DEFAULT_GPU_UTIL
    fix = _util_fix(cur.gpu_util, round(util - 0.05, 2), "Leave room for the CUDA graphs", "less for the KV cache")
    fixes += [fix] if fix else []
    seqs = _halve(cur.max_num_seqs, 1)
    if seqs is not None:
        fixes.append(Fix("Reduce batch", {"engine.max_num_seqs": seqs},
                         f"max_num_seqs={cur.max_num_seqs} -> {seqs} (fewer graphs to capture)"))
    return fixes


def _cuda_oom_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    """Fixes for a CUDA OOM, by start-up phase. Kept apart: the planner will compute these from model facts.

    Loading: only more GPUs help. Warm-up (vLLM's profiling run, sized by
    max_num_batched_tokens and max_num_seqs): more GPUs, less context, fewer
    sequences, smaller steps. CUDA-graph capture: see :func:`_graph_oom_fixes`. Unknown
    phase (a plain OOM line): more GPUs, less context, fewer sequences.
    """
    phase = facts.get("phase")
    if phase == "cuda-graph":
        return _graph_oom_fixes(cur)
    fixes: list[Fix] = []
    if cur.tp is not None:
        tp2 = cur.tp * 2
        fixes.append(Fix("Increase TP", {"engine.tp": tp2}, f"TP={cur.tp} -> TP={tp2} (doubles GPU memory)"))
    if phase == "loading":
        return fixes
    mml = _halve(cur.max_model_len, 256)
    seqs = _halve(cur.max_num_seqs, 1)
    if mml is not None:
        fixes.append(Fix("Reduce context", {"engine.max_model_len": mml},
                         f"max_model_len={cur.max_model_len} -> {mml}"))
    if seqs is not None:
        fixes.append(Fix("Reduce batch", {"engine.max_num_seqs": seqs}, f"max_num_seqs={cur.max_num_seqs} -> {seqs}"))
    mbt = _halve(cur.max_num_batched_tokens, 256) if phase == "warm-up" else None
    if mbt is not None:
        fixes.append(Fix("Smaller scheduler steps", {"engine.max_num_batched_tokens": mbt},
                         f"max_num_batched_tokens={cur.max_num_batched_tokens} -> {mbt} (smaller activations)"))
    if mml is not None and seqs is not None and phase is None:
        fixes.append(Fix(
            "Both: reduce context and batch",
            {"engine.max_model_len": mml, "engine.max_num_seqs": seqs},
            f"max_model_len={cur.max_model_len} -> {mml}, max_num_seqs={cur.max_num_seqs} -> {seqs}",
        ))
    return fixes


def _kv_cache_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    """Fixes for a KV cache too small for one request. Kept apart: the planner will compute these from model facts."""
    fixes: list[Fix] = []
    current = cur.max_model_len or facts.get("max_model_len")
    fits = facts.get("fits")
    if fits and (current is None or fits < current):
        target = _round_down(fits)
        was = f"max_model_len={current} -> " if current else "max_model_len "
        fixes.append(Fix("Use the longest context that fits", {"engine.max_model_len": target},
                         f"{was}{target} (vLLM estimated {fits} fits)"))
    util = cur.gpu_util if cur.gpu_util is not None else DEFAULT_GPU_UTIL
    if util < 0.95:
        fix = _util_fix(cur.gpu_util, 0.95, "Give vLLM more of the GPU", "more memory for the KV cache")
        fixes += [fix] if fix else []
    if cur.tp is not None:
        tp2 = cur.tp * 2
        fixes.append(Fix("Increase TP", {"engine.tp": tp2},
                         f"TP={cur.tp} -> TP={tp2} (each GPU holds half the weights)"))
    if facts.get("available_gib") == 0:
        fixes.sort(key=lambda f: f.label != "Increase TP")
    return fixes


def _free_memory_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    free, total = facts.get("free_gib"), facts.get("total_gib")
    if not free or not total:
        return []
    target = math.floor((free / total - 0.02) * 100) / 100
    if target < 0.1:
        return []
    current = cur.gpu_util if cur.gpu_util is not None else facts.get("gpu_util")
    fix = _util_fix(current, target, "Use only the free GPU memory", f"{free:g} of {total:g} GiB were free")
    return [fix] if fix else []


def _max_len_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    limit = facts.get("derived_max")
    if not limit:
        return []
    was = cur.max_model_len or facts.get("requested")
    return [Fix("Use the model's maximum", {"engine.max_model_len": limit},
                f"max_model_len={was} -> {limit} ({facts.get('derived_key', 'the model')} in config.json)")]


def _tp_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    count, tp = facts.get("count"), facts.get("tp") or cur.tp
    if not count:
        return []
    valid = _valid_tps(count, tp)
    below = [t for t in valid if tp is None or t < tp]
    above = [t for t in valid if tp is not None and t > tp]
    picks = ([below[-1]] if below else []) + ([above[0]] if above else [])
    return [Fix(f"Use TP={t}", {"engine.tp": t}, f"TP={tp} -> TP={t} ({count} {facts.get('what', '')} divide by {t})")
            for t in picks]


def _dp_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    devices = facts.get("devices")
    if not devices:
        return []
    tp = cur.tp or 1
    dp = devices // tp
    if dp < 1:
        return []
    value = dp if dp > 1 else None
    what = f"--data-parallel-size={dp}" if value else "no --data-parallel-size"
    return [Fix("Fit data parallelism to the GPUs", {"engine.extra_args": ("--data-parallel-size", value)},
                f"{what} ({devices} GPU(s) at TP={tp})")]


def _nccl_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    if "--disable-custom-all-reduce" in cur.extra_args or facts.get("shm"):
        return []
    return [Fix("Use NCCL's own all-reduce", {"engine.extra_args": ("--disable-custom-all-reduce", None)},
                "add --disable-custom-all-reduce (avoids vLLM's peer-to-peer kernel)")]


def _arch_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    image = cur.image
    if image is not None and (image == NEWEST_VLLM_IMAGE or " " in image or "vllm" not in image.lower()):
        return []  # already the newest, or a SLURM container command: the advice says what to do
    was = image or (f"vLLM {facts['vllm_version']}" if facts.get("vllm_version") else "the image in use")
    return [Fix("Use a newer vLLM image", {"engine.image": NEWEST_VLLM_IMAGE}, f"{was} -> {NEWEST_VLLM_IMAGE}")]


def _trust_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    if "--trust-remote-code" in cur.extra_args:
        return []
    return [Fix("Add --trust-remote-code", {"engine.extra_args": ("--trust-remote-code", None)},
                "let vLLM run the model's own code from its repository")]


def _unschedulable_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    if not cur.tp or cur.tp <= 1:
        return []
    tp = cur.tp // 2
    return [Fix("Lower TP", {"engine.tp": tp}, f"TP={cur.tp} -> TP={tp} (asks for half the GPUs)")]


def _host_oom_fixes(cur: Engine, facts: Facts) -> list[Fix]:
    seqs = _halve(cur.max_num_seqs, 1)
    if seqs is None:
        return []
    return [Fix("Reduce batch", {"engine.max_num_seqs": seqs}, f"max_num_seqs={cur.max_num_seqs} -> {seqs}")]


_FIXERS: dict[str, Callable[[Engine, Facts], list[Fix]]] = {
    CUDA_OOM: _cuda_oom_fixes,
    KV_CACHE_TOO_SMALL: _kv_cache_fixes,
    GPU_MEMORY_IN_USE: _free_memory_fixes,
    MAX_MODEL_LEN_TOO_LONG: _max_len_fixes,
    TP_NOT_DIVISIBLE: _tp_fixes,
    DP_RANK_OUT_OF_RANGE: _dp_fixes,
    NCCL_FAILURE: _nccl_fixes,
    ARCH_UNSUPPORTED: _arch_fixes,
    TRUST_REMOTE_CODE: _trust_fixes,
    GPU_UNSCHEDULABLE: _unschedulable_fixes,
    OOM_KILLED: _host_oom_fixes,
}

# Flags a fix adds or replaces in extra_args, with their other spellings.
_FLAG_ALIASES = {"--data-parallel-size": ("-dp",)}


def _resolve_args(fix: Fix, extra: tuple[str, ...]) -> Fix:
    """Turn a fix's ``("--flag", value)`` extra-args marker into the whole new extra_args tuple."""
    marker = fix.changes.get("engine.extra_args")
    is_marker = (isinstance(marker, tuple) and len(marker) == 2 and isinstance(marker[0], str)
                 and marker[0].startswith("-") and not isinstance(marker[1], str))
    if not is_marker:
        return fix
    flag, value = cast(tuple[str, Any], marker)  # is_marker checked its shape
    if flag in ("--enforce-eager", "--trust-remote-code", "--disable-custom-all-reduce"):
        new = extra if flag in extra else (*extra, flag)
    else:
        new = _set_flag(extra, flag, value, _FLAG_ALIASES.get(flag, ()))
    return Fix(fix.label, {**fix.changes, "engine.extra_args": new}, fix.description)


def fixes_for(
    rule_id: str,
    spec: ExperimentSpec | None,
    *,
    default_image: str | None = None,
    facts: Facts | None = None,
) -> list[Fix]:
    """Concrete changes of ``spec`` that may cure the failure ``rule_id``.

    The values are computed from the current spec and what the log said
    (``facts``), so the user sees exactly what will change (``TP=2 -> TP=4``,
    ``max_model_len=65536 -> 32768``). A failure with no automatic cure (model
    not found, gated model, files missing) gets no fixes; its message and
    :func:`remedies` say what to do.

    Args:
        rule_id: A rule id from :data:`RULES`.
        spec: The spec that failed (None: the settings the log gave, if any).
        default_image: The catalog's default vLLM image (for image-pull);
            defaults to the value the spec's image replaced, if any.
        facts: The diagnosis's facts (numbers from the log).
    """
    facts = facts or {}
    if spec is not None:
        from backends.planning import planner_fixes

        planned = planner_fixes(rule_id, spec)  # the nearest configurations that fit, when the planner knows
        if planned:
            return planned
    cur = Engine.from_spec(spec) if spec is not None else Engine.from_facts(facts)
    if rule_id == IMAGE_PULL:
        if spec is None:
            return []
        # The image the user's choice replaced; an image that is still the
        # catalog's own has nothing to go back to.
        target = default_image or _replaced_value(spec, "engine.image") or spec.engine.image
        if target == spec.engine.image:
            return []
        return [Fix("Use the catalog default image", {"engine.image": target},
                    f"image {spec.engine.image} -> {target}")]
    if rule_id == JOB_TIME_LIMIT and spec is not None:
        n = spec.workload.max_requests
        if n > 1:
            fewer = max(1, n // 2)
            return [Fix("Run fewer requests", {"workload.max_requests": fewer}, f"max_requests={n} -> {fewer}")]
        return []
    fixer = _FIXERS.get(rule_id)
    if fixer is None:
        return []
    return [_resolve_args(fix, cur.extra_args) for fix in fixer(cur, facts)]


# ------------------------------------------------------------ remedies (text)


# vLLM's own flags for spec fields, for a post-mortem of a run sweepdeck did not launch.
_VLLM_FLAGS = {
    "engine.tp": "--tensor-parallel-size",
    "engine.max_model_len": "--max-model-len",
    "engine.max_num_seqs": "--max-num-seqs",
    "engine.max_num_batched_tokens": "--max-num-batched-tokens",
}


def vllm_flags(changes: dict[str, Any], current_extra: tuple[str, ...] = ()) -> str:
    """The ``vllm serve`` flags (or image) that apply a fix's changes."""
    parts: list[str] = []
    for path, value in changes.items():
        if path in _VLLM_FLAGS:
            parts.append(f"{_VLLM_FLAGS[path]} {value}")
        elif path == "engine.extra_args":
            added = [a for a in value if a not in current_extra]
            removed = [a for a in current_extra if a not in value]
            parts += [a.replace("=", " ", 1) for a in added]
            parts += [f"drop {a}" for a in removed if not any(a.split("=")[0] == b.split("=")[0] for b in added)]
        elif path == "engine.image":
            parts.append(f"image {value}")
        elif path == "workload.max_requests":
            parts.append(f"{value} requests")
    return ", ".join(parts)


def _model_of(f: Facts) -> str:
    return f.get("model") or (f.get("settings") or {}).get("model") or "MODEL"


def _gated_advice(f: Facts) -> list[str]:
    model = _model_of(f)
    if f.get("token_missing") is False:
        return [f"Ask for access on https://huggingface.co/{model} with the token's account, and wait for approval."]
    return [
        f"Accept the model's licence at https://huggingface.co/{model} (logged in to huggingface.co).",
        "Give the server a read token from https://huggingface.co/settings/tokens: export HF_TOKEN=hf_... (local), "
        "the job's environment (SLURM), or the hf-secret Secret with key HF_TOKEN (Kubernetes).",
    ]


def _files_missing_advice(f: Facts) -> list[str]:
    tips = [f"Download the model where there is network, into the cache the server reads (HF_HOME): "
            f"huggingface-cli download {_model_of(f)}; or start the server with a local model directory."]
    if f.get("offline"):
        tips.append("If this machine may download, unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE.")
    else:
        tips.append("Or let the server reach huggingface.co (a proxy: HTTPS_PROXY).")
    return tips


def _nccl_advice(f: Facts) -> list[str]:
    tips = ["Re-run with NCCL_DEBUG=INFO to see which transport fails."]
    if f.get("shm"):
        tips.insert(0, "Give the container a larger /dev/shm: docker --ipc=host or --shm-size=16g; Kubernetes: an "
                       "emptyDir volume with medium: Memory mounted at /dev/shm.")
    else:
        tips.append("Without NVLink or peer-to-peer access between the GPUs, try NCCL_P2P_DISABLE=1.")
    return tips


def _dp_advice(f: Facts) -> list[str]:
    if f.get("devices") != 0:
        return ["Ask for data_parallel_size × tensor_parallel_size GPUs on the node, or lower --data-parallel-size "
                "to the GPUs you have divided by TP."]
    return ["Make the GPUs visible to the server: CUDA_VISIBLE_DEVICES, docker --gpus all, apptainer --nv, "
            "or the pod's nvidia.com/gpu limit."]


_ADVICE: dict[str, Callable[[Facts], list[str]]] = {
    GPU_MEMORY_IN_USE: lambda f: ["See what holds the GPU with nvidia-smi and stop it "
                                  "(or ask the scheduler for a GPU of your own)."],
    MODEL_GATED: _gated_advice,
    MODEL_FILES_MISSING: _files_missing_advice,
    MODEL_NOT_FOUND: lambda f: ["Check the model id on https://huggingface.co (organisation/name, exact case), "
                                "or the local path."],
    DP_RANK_OUT_OF_RANGE: _dp_advice,
    NCCL_FAILURE: _nccl_advice,
    ARCH_UNSUPPORTED: lambda f: ["On SLURM, point the profile's container line at a newer vLLM image "
                                 "(an apptainer .sif)."],
    MAX_MODEL_LEN_TOO_LONG: lambda f: ["VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 lifts the check; only do that with rope "
                                       "scaling set up for the longer length."],
    ENGINE_DEAD: lambda f: ["Read the log lines just above the root cause: the traceback names where it failed."],
}


def _advice(d: Diagnosis) -> list[str]:
    """What to do that is not a change of the engine settings (tokens, processes, mounts)."""
    advise = _ADVICE.get(d.rule_id)
    return advise(d.facts) if advise is not None else []


def remedies(d: Diagnosis, spec: ExperimentSpec | None = None, *, default_image: str | None = None) -> list[str]:
    """The concrete fixes for ``d`` as lines to read: setting changes with their flags, then other steps.

    With no spec (a log from a run sweepdeck did not launch) the settings come
    from vLLM's own start-up lines in the log.
    """
    extra = tuple(spec.engine.extra_args) if spec is not None else ()
    out = []
    for fix in fixes_for(d.rule_id, spec, default_image=default_image, facts=d.facts):
        flags = vllm_flags(fix.changes, extra)
        out.append(f"{fix.label}: {fix.description}" + (f" [{flags}]" if flags else ""))
    return out + _advice(d)


def alert_for(diagnosis: Diagnosis, spec: ExperimentSpec | None = None, **kwargs: Any) -> Alert:
    """The error Alert for ``diagnosis`` with fixes computed from ``spec`` and the log's facts."""
    fixes = fixes_for(diagnosis.rule_id, spec, facts=diagnosis.facts, **kwargs) if spec is not None else []
    return Alert(
        kind=diagnosis.rule_id,
        message=f"{diagnosis.title}: {diagnosis.message}",
        severity="error",
        diagnosis=diagnosis.rule_id,
        fixes=fixes,
        evidence=diagnosis.evidence,
    )


__all__ = [
    "Diagnosis", "Engine", "LogDiagnoser", "RULES", "alert_for", "diagnose_line", "diagnose_lines", "diagnose_state",
    "fixes_for", "primary", "remedies", "server_not_ready", "vllm_flags",
]
