"""The inference-perf workload of a BLIS values file (``workload.harness: inference-perf``).

The BLIS campaign's values describe the load as an inference-perf profile
template under ``workload.profileTemplate``::

    load:      {type: constant, stages: [{rate: 5.0, duration: 600}, ...]}
    api:       {type: completion, streaming: true}
    server:    {type: vllm, model_name: MODEL, base_url: STACK_ENDPOINT, ignore_eos: true}
    tokenizer: {pretrained_model_name_or_path: TOKENIZER}
    data:      {type: shared_prefix, shared_prefix: {num_unique_system_prompts: 11, ...}}
    report:    {request_lifecycle: {summary: true, per_stage: true, per_request: true}}
    storage:   {local_storage: {path: PATH}}

``MODEL``, ``STACK_ENDPOINT``, ``TOKENIZER`` and ``PATH`` are placeholders the
run-workload task fills in per branch. An :class:`~config.spec.ExperimentSpec`
keeps the template as ``profile_template``; its settings are the field paths
``profile_template.<dotted key>`` (``profile_template.load.stages``,
``profile_template.data.shared_prefix.question_len``...). Only keys the
template already has can be set, each keeping its type; the stages are set
as a whole, from a list or from text such as ``5x600, 10x600``.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from config.errors import SweepdeckError

if TYPE_CHECKING:
    from config.catalog import WorkloadProfile

HARNESS = "inference-perf"
PREFIX = "profile_template."
STAGES = "load.stages"
#: What the run-workload task puts in place of each placeholder (shown, never edited).
PLACEHOLDERS = {
    "MODEL": "the model id",
    "STACK_ENDPOINT": "the branch's model server URL",
    "TOKENIZER": "the model id",
    "PATH": "the branch's results directory",
}
#: The prefix a vLLM argument has as a deploy-model override (``stack.extra_overrides``).
VLLM_ARG_OVERRIDE = 'decode.containers[name="vllm"].args='
_STAGE_TEXT = re.compile(
    r"^\s*(?P<rate>\d+(?:\.\d+)?|\.\d+)\s*(?:/s|rps|req/s)?\s*[x×:@*]\s*(?P<duration>\d+)\s*s?\s*$", re.IGNORECASE,
)


def template_of(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of the ``workload.profileTemplate`` of values that use the inference-perf harness (else None)."""
    workload = (values or {}).get("workload") if isinstance(values, dict) else None
    if not isinstance(workload, dict) or workload.get("harness") != HARNESS:
        return None
    template = workload.get("profileTemplate")
    return copy.deepcopy(template) if isinstance(template, dict) else None  # a copy: the values stay as read


def check_template(template: Any, where: str = "workload.profileTemplate") -> dict[str, Any]:
    """Validate a profile template's load stages and data type; returns it.

    Raises:
        SweepdeckError: naming the key that is wrong and what was expected.
    """
    if not isinstance(template, dict):
        raise SweepdeckError(f"{where} must be a mapping (load, api, server, tokenizer, data, report, storage).")
    load = template.get("load")
    if not isinstance(load, dict):
        raise SweepdeckError(f"{where}.load is missing: inference-perf needs a load (type and stages).",
                             "Example: load: {type: constant, stages: [{rate: 5, duration: 600}]}")
    parse_stages(load.get("stages"), f"{where}.load.stages")
    data = template.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise SweepdeckError(
            f"{where}.data.type is missing: inference-perf needs a data type (shared_prefix, random…).")
    return template


def parse_stages(value: Any, where: str = "load.stages") -> list[dict[str, Any]]:
    """Load stages from a list of ``{rate, duration}`` or text (``5x600, 10x600``; ``5/s x 600s``).

    Keys other than rate and duration in a given mapping are kept.

    Raises:
        SweepdeckError: no stages, or a rate/duration that is not a positive number.
    """
    if isinstance(value, str):
        value = [_stage_from_text(part, where) for part in re.split(r"[,;]|->|→", value) if part.strip()]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        raise SweepdeckError(f"{where} needs at least one stage.", "Example: 5x600, 10x600 (rate per second x seconds)")
    stages = []
    for i, stage in enumerate(value):
        if not isinstance(stage, dict):
            raise SweepdeckError(f"{where}[{i}] must be a mapping with rate and duration, not {stage!r}.")
        out = dict(stage)
        out["rate"] = _positive(stage.get("rate"), f"{where}[{i}].rate", float)
        out["duration"] = _positive(stage.get("duration"), f"{where}[{i}].duration", int)
        stages.append(out)
    return stages


def _stage_from_text(text: str, where: str) -> dict[str, Any]:
    m = _STAGE_TEXT.match(text)
    if not m:
        raise SweepdeckError(f"{where}: cannot read the stage {text.strip()!r}.",
                             "Write RATExSECONDS per stage, e.g. 5x600, 10x600 (5 requests/s for 600 s, then 10/s).")
    return {"rate": float(m.group("rate")), "duration": int(m.group("duration"))}


def _positive(value: Any, where: str, kind: type) -> Any:
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        number = float(value)
        if kind is int and not number.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        whole = "whole " if kind is int else ""
        raise SweepdeckError(f"{where} must be a positive {whole}number, got {value!r}.") from None
    if number <= 0 or math.isinf(number) or math.isnan(number):
        raise SweepdeckError(f"{where} must be positive, got {value!r}.")
    return int(number) if kind is int else number


def stages_text(stages: Any) -> str:
    """The stages as the editor shows them: ``5x600, 10x600``."""
    return ", ".join(f"{_num(s.get('rate'))}x{_num(s.get('duration'))}" for s in stages or [] if isinstance(s, dict))


def describe_stages(stages: Any, compact: bool = False) -> str:
    """``5/s for 600 s → 10/s for 600 s`` (the summary); compact: ``5/s×600s → 10/s×600s`` (the review)."""
    form = "{rate}/s×{duration}s" if compact else "{rate}/s for {duration} s"
    parts = [form.format(rate=_num(s.get("rate")), duration=_num(s.get("duration")))
             for s in stages or [] if isinstance(s, dict)]
    return " → ".join(parts) or "(none)"


def total_seconds(template: dict[str, Any] | None) -> float:
    """How long the load stages run in all (0 when unknown)."""
    stages = ((template or {}).get("load") or {}).get("stages") or []
    return float(sum(s["duration"] for s in stages
                     if isinstance(s, dict) and isinstance(s.get("duration"), (int, float))))


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ------------------------------------------------------------------ field paths


def get_path(template: dict[str, Any] | None, dotted: str) -> Any:
    """The value at ``dotted`` (``load.stages``, ``data.shared_prefix.question_len``).

    Raises:
        SweepdeckError: no template, or no such key in it.
    """
    node: Any = template
    if template is None:
        raise SweepdeckError(f"{PREFIX}{dotted}: this experiment has no inference-perf profile template.",
                             "It is set by values that use workload.harness: inference-perf.")
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SweepdeckError(f"Unknown setting {PREFIX + dotted!r}: the profile template has no {part!r} there.",
                                 "Settings: " + ", ".join(PREFIX + p for p, _ in leaves(template)))
        node = node[part]
    return node


def set_path(template: dict[str, Any] | None, dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``template`` with ``dotted`` set to ``value`` (converted to the current value's type).

    Raises:
        SweepdeckError: unknown key, or a value that does not fit (a word for a number...).
    """
    current = get_path(template, dotted)
    assert template is not None  # get_path raised otherwise
    if dotted == STAGES:
        new_value: Any = parse_stages(value, f"{PREFIX}{dotted}")
    elif isinstance(current, (dict, list)):
        raise SweepdeckError(f"{PREFIX}{dotted} is a section; set one of its values.",
                             "Settings: " + ", ".join(PREFIX + p for p, _ in leaves(template)
                                                      if p.startswith(dotted + ".")))
    else:
        new_value = _like(current, value, f"{PREFIX}{dotted}")
    out = copy.deepcopy(template)
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = new_value
    return out


def _like(current: Any, value: Any, where: str) -> Any:
    """``value`` as the type of ``current`` (bool, int, float or text)."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(current, bool):
        if isinstance(text, bool):
            return text
        words = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}
        if str(text).lower() in words:
            return words[str(text).lower()]
        raise SweepdeckError(f"{where} must be true or false, got {value!r}.")
    if isinstance(current, int):
        number = _positive_or_zero(text, where)
        if not float(number).is_integer():
            raise SweepdeckError(f"{where} must be a whole number, got {value!r}.")
        return int(number)
    if isinstance(current, float):
        return float(_positive_or_zero(text, where))
    if text is None or str(text) == "":
        raise SweepdeckError(f"{where} must not be empty.")
    if not str(text).isprintable():
        raise SweepdeckError(f"{where} must be printable text, got {value!r}.")
    return str(text)


def _positive_or_zero(value: Any, where: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise SweepdeckError(f"{where} must be a number, got {value!r}.") from None
    if number < 0 or math.isinf(number) or math.isnan(number):
        raise SweepdeckError(f"{where} must not be negative, got {value!r}.")
    return number


def leaves(template: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The editable settings of a template, in review order: load, api, then data.

    Placeholders (``MODEL``...) and the server/tokenizer/report/storage sections
    are filled in by the pipeline and not listed.
    """
    if not template:
        return []
    out: list[tuple[str, Any]] = []
    load = found if isinstance(found := template.get("load"), dict) else {}
    for key, value in load.items():
        if key == "stages":
            out.append((STAGES, value))
        elif not isinstance(value, (dict, list)):
            out.append((f"load.{key}", value))
    for section in ("api", "data"):
        out += _flat(template.get(section), section)
    return out


def _flat(node: Any, path: str) -> list[tuple[str, Any]]:
    if not isinstance(node, dict):
        return []
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        here = f"{path}.{key}"
        if isinstance(value, dict):
            out += _flat(value, here)
        elif not isinstance(value, list) and value is not None and value not in PLACEHOLDERS:
            out.append((here, value))
    return out


# ------------------------------------------------------------------ presets and summaries


def from_preset(profile: WorkloadProfile, base: dict[str, Any]) -> dict[str, Any]:
    """An inference-perf template for a guidellm-style preset: random data, one load stage.

    The prompt/output token distributions become ``data.input_distribution`` and
    ``output_distribution`` (``type: random``), and the preset's requests at its
    rate one stage of ``max_requests / rate`` seconds (poisson arrivals for a
    poisson preset, else constant). api, server, tokenizer, report and storage
    stay as the base template has them.
    """
    out = copy.deepcopy(base)
    duration = max(1, math.ceil(profile.max_requests / profile.rate)) if profile.rate else 60
    out["load"] = {**(found if isinstance(found := base.get("load"), dict) else {}),
                   "type": "poisson" if profile.rate_type == "poisson" else "constant",
                   "stages": [{"rate": float(profile.rate), "duration": duration}]}

    def dist(mean: int, stdev: int, low: int, high: int | None) -> dict[str, Any]:
        return {"mean": mean, "std_dev": stdev, "min": low, "max": high if high is not None else mean * 2}

    out["data"] = {
        "type": "random",
        "input_distribution": dist(profile.prompt_tokens, profile.prompt_tokens_stdev, profile.prompt_tokens_min,
                                   profile.prompt_tokens_max),
        "output_distribution": dist(profile.output_tokens, profile.output_tokens_stdev, profile.output_tokens_min,
                                    profile.output_tokens_max),
    }
    return out


def summary_rows(template: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, value)`` rows for the experiment summary: Load, Data, API."""
    load = found if isinstance(found := template.get("load"), dict) else {}
    data = found if isinstance(found := template.get("data"), dict) else {}
    api = found if isinstance(found := template.get("api"), dict) else {}
    kind = str(data.get("type", "?"))
    details = found if isinstance(found := data.get(kind), dict) else {
        k: v for k, v in data.items() if k != "type" and v is not None}
    shown = ", ".join(f"{k}={_num(v) if not isinstance(v, dict) else '{…}'}" for k, v in details.items())
    seconds = total_seconds(template)
    return [
        ("Load", f"{load.get('type', '?')}: {describe_stages(load.get('stages'))}"
                 + (f" ({_num(seconds)} s)" if seconds else "")),
        ("Data", kind + (f" ({shown})" if shown else "")),
        ("API", f"{api.get('type', '?')}" + (", streaming" if api.get("streaming") else "")),
    ]


def split_overrides(overrides: Any, accept: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """``stack.extra_overrides`` → ``(vLLM arguments, other overrides)``.

    An override ``decode.containers[name="vllm"].args=ARG`` whose ``ARG``
    ``accept`` takes becomes an argument; anything else is kept as it is.
    """
    args: list[str] = []
    others: list[str] = []
    for item in overrides or []:
        text = str(item)
        arg = text[len(VLLM_ARG_OVERRIDE):] if text.startswith(VLLM_ARG_OVERRIDE) else None
        if arg is not None and accept(arg):
            args.append(arg)
        else:
            others.append(text)
    return args, others


def overrides_for(args: tuple[str, ...] | list[str], others: list[str]) -> list[str]:
    """``stack.extra_overrides`` for the kept other overrides and these vLLM arguments."""
    return list(others) + [VLLM_ARG_OVERRIDE + a for a in args]
