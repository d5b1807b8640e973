"""The one rule table that turns log lines and pod/job states into known failures.

Every backend feeds it: the local backend its server's stdout/stderr, SLURM the
job's output file and ``squeue``/``scontrol`` states, Tekton and Argo the pod
logs and pod/TaskRun/node states. A match is a :class:`Diagnosis`;
:func:`fixes_for` turns it into concrete changes of the current spec (the BLIS
skill's recovery dialog: for a CUDA OOM, "Increase TP: TP=2 -> TP=4", "Reduce
context: max_model_len=8192 -> 4096", ...), and :func:`alert_for` into the
:class:`~backends.events.Alert` the TUI shows as a recovery dialog and the
headless CLI prints with numbered fixes.

Rules are matched in table order; the first match wins. Patterns are written
against the real wording of vLLM, torch, transformers/huggingface_hub,
kubelet/scheduler and slurmstepd, and are anchored on phrases that only appear
in the failure (an ``INFO`` line about "memory profiling" or a config dump with
``trust_remote_code=False`` must not match).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends.events import Alert, Fix

if TYPE_CHECKING:
    from config.spec import ExperimentSpec

# Rule ids (stable: they are saved in event logs and named in Alert.diagnosis).
CUDA_OOM = "cuda-oom"
IMAGE_PULL = "image-pull"
MODEL_NOT_FOUND = "model-not-found"
MODEL_GATED = "model-gated"
TRUST_REMOTE_CODE = "trust-remote-code"
GPU_UNSCHEDULABLE = "gpu-unschedulable"
SERVER_NOT_READY = "server-not-ready"
JOB_TIME_LIMIT = "job-time-limit"
PORT_IN_USE = "port-in-use"
OOM_KILLED = "oom-killed"
ENGINE_DEAD = "engine-dead"



@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A recognised failure.

    Args:
        rule_id: Stable id of the rule (``cuda-oom``...).
        title: Short name for a dialog title or a log prefix.
        message: What it means and what to do, in a sentence or two.
        evidence: The log line or state text that matched.
        secondary: The failure is usually the echo of an earlier, more
            specific one (an engine that died *because* of an OOM); the driver
            only reports it when nothing more specific was seen.
    """

    rule_id: str
    title: str
    message: str
    evidence: str = ""
    secondary: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    title: str
    message: str
    patterns: tuple[re.Pattern[str], ...]
    secondary: bool = False
    #: (kind or "*", state regex, reason regex) triples matched by diagnose_state.
    states: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = field(default=())

    def match_line(self, text: str) -> bool:
        return any(p.search(text) for p in self.patterns)


def _re(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def _st(kind: str, state: str, reason: str = ".*") -> tuple[str, re.Pattern[str], re.Pattern[str]]:
    return (kind, re.compile(state, re.IGNORECASE), re.compile(reason, re.IGNORECASE))


RULES: tuple[Rule, ...] = (
    Rule(
        CUDA_OOM,
        "CUDA out of memory",
        "The vLLM engine ran out of GPU memory. Spread the model over more GPUs (higher TP), "
        "or lower max_model_len or max_num_seqs so the KV cache fits.",
        _re(
            r"\b(torch\.(cuda\.)?)?OutOfMemoryError\b",
            r"\bCUDA out of memory\b",
            r"\bCUDA error: out of memory\b",
            r"No available memory for the cache blocks",
            r"\bCUBLAS_STATUS_ALLOC_FAILED\b",
            # vLLM v1: the KV cache for max_model_len does not fit what is left after the weights
            r"is larger than the maximum number of tokens that can be stored in KV cache",
            r"not enough KV cache space",
            # vLLM v0.19 (kv_cache_utils._check_enough_kv_cache_memory)
            r"KV cache is needed, which is larger than the available KV cache memory",
        ),
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
            r"Access to model .* is restricted",
            r"401 Client Error.*huggingface\.co",
        ),
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
            r"\bNCCL error\b",
        ),
        secondary=True,
    ),
)

RULES_BY_ID = {r.rule_id: r for r in RULES}

# Cheap pre-filter: every rule pattern contains one of these literals (lower case),
# so a line without any of them cannot match and costs one lower() plus plain
# substring tests (~5 µs) instead of ~50 case-insensitive regex searches (~50 µs).
# Keep it specific: words such as "engine" or "model" occur in most vLLM lines.
# tests/unit/test_diagnosis.py checks that each pattern's examples pass this filter.
_KEYWORDS = (
    "outofmemory", "out of memory", "out_of_memory", "memory for the cache", "cublas_status_alloc",
    "kv cache", "imagepull", "invalidimagename", "pull image", "pulling image", "manifest unknown",
    "fatal:", "gated", "access to model", "401 client error", "valid model identifier",
    "repositorynotfound", "repository not found", "does not exist", "invalid repository id",
    "config.json", "load the configuration", "requires you to execute", "trust_remote_code",
    "nvidia.com/gpu", "nodes are available", "node configuration", "generic resource",
    "time limit", "deadlineexceeded", "runtimeout", "never became ready", "timed out waiting",
    "errno 98", "oomkilled", "oom-kill", "oom_kill", "kill event", "enginedeaderror", "encountered a fatal error",
    "engine core initialization failed", "engine failed", "illegal memory access", "nccl error",
)


def _may_match(text: str) -> bool:
    low = text.lower()
    for word in _KEYWORDS:
        if word in low:
            return True
    return False


def _make(rule: Rule, evidence: str) -> Diagnosis:
    return Diagnosis(rule.rule_id, rule.title, rule.message, evidence.strip()[:500], rule.secondary)


def diagnose_line(text: str) -> Diagnosis | None:
    """The failure one log line shows, or None for an ordinary line."""
    if not text or not _may_match(text):
        return None
    for rule in RULES:
        if rule.match_line(text):
            return _make(rule, text)
    return None


def diagnose_lines(lines: list[str] | tuple[str, ...]) -> list[Diagnosis]:
    """Every distinct failure in ``lines``, in order of first appearance."""
    seen: dict[str, Diagnosis] = {}
    for line in lines:
        found = diagnose_line(line)
        if found and found.rule_id not in seen:
            seen[found.rule_id] = found
    return list(seen.values())


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
            return _make(RULES_BY_ID[found.rule_id], evidence)
    return None


def server_not_ready(seconds: float, detail: str = "") -> Diagnosis:
    """The diagnosis for a server that did not become ready in ``seconds``."""
    rule = RULES_BY_ID[SERVER_NOT_READY]
    evidence = f"no ready answer after {seconds:g} s" + (f" ({detail})" if detail else "")
    return Diagnosis(rule.rule_id, rule.title, rule.message, evidence)


# ------------------------------------------------------------------- fixes


def fixes_for(rule_id: str, spec: "ExperimentSpec", *, default_image: str | None = None) -> list["Fix"]:
    """Concrete changes of ``spec`` that may cure the failure ``rule_id``.

    The values are computed from the current spec, so the user sees exactly
    what will change (``TP=2 -> TP=4``). A failure with no automatic cure
    (model not found, gated model) gets no fixes; its message says what to do.

    Args:
        rule_id: A rule id from :data:`RULES`.
        spec: The spec that failed.
        default_image: The catalog's default vLLM image (for image-pull);
            defaults to the value the spec's image replaced, if any.
    """
    from backends.planning import planner_fixes

    planned = planner_fixes(rule_id, spec)  # the nearest configurations that fit, when the planner knows
    if planned:
        return planned
    e = spec.engine
    fixes: list[Fix] = []
    if rule_id == CUDA_OOM:
        tp2 = e.tp * 2
        fixes.append(Fix("Increase TP", {"engine.tp": tp2}, f"TP={e.tp} -> TP={tp2} (doubles GPU memory)"))
        mml = _halve(e.max_model_len, 256)
        seqs = _halve(e.max_num_seqs, 1)
        if mml is not None:
            fixes.append(Fix("Reduce context", {"engine.max_model_len": mml}, f"max_model_len={e.max_model_len} -> {mml}"))
        if seqs is not None:
            fixes.append(Fix("Reduce batch", {"engine.max_num_seqs": seqs}, f"max_num_seqs={e.max_num_seqs} -> {seqs}"))
        if mml is not None and seqs is not None:
            fixes.append(
                Fix(
                    "Both: reduce context and batch",
                    {"engine.max_model_len": mml, "engine.max_num_seqs": seqs},
                    f"max_model_len={e.max_model_len} -> {mml}, max_num_seqs={e.max_num_seqs} -> {seqs}",
                )
            )
    elif rule_id == TRUST_REMOTE_CODE:
        if "--trust-remote-code" not in e.extra_args:
            fixes.append(
                Fix(
                    "Add --trust-remote-code",
                    {"engine.extra_args": tuple(e.extra_args) + ("--trust-remote-code",)},
                    "let vLLM run the model's own code from its repository",
                )
            )
    elif rule_id == IMAGE_PULL:
        # The image the user's choice replaced; an image that is still the
        # catalog's own has nothing to go back to.
        target = default_image or _replaced_value(spec, "engine.image") or e.image
        if target != e.image:
            fixes.append(Fix("Use the catalog default image", {"engine.image": target}, f"image {e.image} -> {target}"))
    elif rule_id == GPU_UNSCHEDULABLE:
        if e.tp > 1:
            tp = e.tp // 2
            fixes.append(Fix("Lower TP", {"engine.tp": tp}, f"TP={e.tp} -> TP={tp} (asks for half the GPUs)"))
    elif rule_id in (JOB_TIME_LIMIT, SERVER_NOT_READY):
        n = spec.workload.max_requests
        if rule_id == JOB_TIME_LIMIT and n > 1:
            fewer = max(1, n // 2)
            fixes.append(Fix("Run fewer requests", {"workload.max_requests": fewer}, f"max_requests={n} -> {fewer}"))
    elif rule_id == OOM_KILLED:
        seqs = _halve(e.max_num_seqs, 1)
        if seqs is not None:
            fixes.append(Fix("Reduce batch", {"engine.max_num_seqs": seqs}, f"max_num_seqs={e.max_num_seqs} -> {seqs}"))
    return fixes


def alert_for(diagnosis: Diagnosis, spec: "ExperimentSpec | None" = None, **kwargs: Any) -> Alert:
    """The error Alert for ``diagnosis`` with fixes computed from ``spec``."""
    fixes = fixes_for(diagnosis.rule_id, spec, **kwargs) if spec is not None else []
    return Alert(
        kind=diagnosis.rule_id,
        message=f"{diagnosis.title}: {diagnosis.message}",
        severity="error",
        diagnosis=diagnosis.rule_id,
        fixes=fixes,
        evidence=diagnosis.evidence,
    )


def _halve(value: int, floor: int) -> int | None:
    """``value // 2`` when that is still at least ``floor``, else None."""
    half = value // 2
    return half if half >= floor and half < value else None


def _replaced_value(spec: "ExperimentSpec", path: str) -> Any:
    origin = spec.origins.get(path)
    return origin.base if origin is not None else None


__all__ = [
    "Diagnosis", "RULES", "alert_for", "diagnose_line", "diagnose_lines", "diagnose_state",
    "fixes_for", "primary", "server_not_ready",
]
