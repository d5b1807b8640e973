"""Quick commands: one line of text → an :class:`~config.spec.ExperimentSpec`.

The TUI's ``:`` prompt, the headless CLI and the recovery dialog's "describe a
custom fix" box all use this parser. It understands the BLIS skill's
one-liners::

    llama3-70b chatbot workload with TP=4 in namespace mert
    llama2-7b --trust-remote-code --enable-prefix-caching
    llama2-7b with custom image ghcr.io/myorg/vllm:v1
    llama2-7b with custom workload prompt=500 output=100
    custom workload: prompt_tokens=500, output_tokens=200, max_requests=100
    qwen-7b codesweep tp 2 max-num-seqs 128 rate=5 poisson on slurm experiment id foo-1

and, applied to an existing spec (:func:`apply_quick`), fixes such as::

    reduce max_model_len to 2048      tp=4      max_num_seqs 64
    add --enforce-eager               remove --enable-prefix-caching
    halve max_num_seqs                increase tp          (doubles it)

Grammar (case-insensitive, any order):

* ``key=value`` or ``key value`` for settings: ``tp`` (``tp=2,4`` or
  ``tp=[2,4]`` is a TP sweep), ``max_model_len`` (``8k`` = 8192),
  ``max_num_seqs``, ``max_num_batched_tokens``, ``image``, ``namespace``,
  ``backend``, ``profile``, ``experiment id``/``id``, ``model``, ``workload``,
  and the workload numbers (``prompt``/``prompt_tokens``, ``output``,
  ``max_requests``, ``rate``, ``rate_type``, ``concurrency``, ``seconds``,
  ``seed``, ``prefix``, ``*_stdev``/``*_min``/``*_max``). Hyphens and
  underscores are interchangeable; ``--max-model-len 4096`` works too.
* Any other ``--flag[=value]`` is a vLLM argument, checked against the
  ``vllm-args.yaml`` reference (``gpu_memory_utilization=0.8`` becomes
  ``--gpu-memory-utilization=0.8``).
* A model id or alias; an ambiguous alias raises :class:`AmbiguousModel`
  (never guessed) unless ``model_choice`` names the option.
* A workload preset name or keyword, fuzzily (``chatbot-style`` → chatbot,
  ``conversational`` → chatsweep, ``long context`` → prefilldominant);
  ``custom`` starts from the custom-workload template.
* A backend name (``on slurm``), a rate type (``poisson``, ``constant``...),
  a profile name when settings are given (``on alvis``).
* Filler words (run, with, workload, using, a, the, in, on, ...) are ignored.

Any other word raises :class:`SweepdeckError` naming the word and the close
alternatives. A value with shell metacharacters is refused outright.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from config.catalog import RATE_TYPES, Catalogs, WorkloadProfile
from config.errors import AmbiguousModel, SweepdeckError, UnknownModel
from config.spec import (
    BACKEND_NAMES,
    ENGINE_FLAGS,
    ExperimentSpec,
    Origin,
    Source,
    WORKLOAD_FIELDS,
    build_spec,
    check_limits,
    check_safe,
    default_experiment_id,
)

if TYPE_CHECKING:
    from config.settings import Settings

FILLER = frozenset(
    """run with workload using use a an the in on for and please experiment model benchmark
    set change make to at of via me start launch deploy then also "=" : , sweepdeck enable
    /blis-data-collector /blis it is be by""".replace('"', "").split()
)

# Setting keys as typed (lower case, '-' → '_', leading dashes stripped) → field path.
_KEYS: dict[str, str] = {}


def _alias(path: str, *names: str) -> None:
    for name in names:
        _KEYS[name] = path


_alias("engine.tp", "tp", "tensor_parallel", "tensor_parallelism", "tensor_parallel_size", "tensorparallelism")
_alias("engine.max_model_len", "max_model_len", "max_len", "model_len", "context", "context_len", "context_length", "ctx")
_alias("engine.max_num_seqs", "max_num_seqs", "num_seqs", "max_seqs", "batch", "batch_size")
_alias(
    "engine.max_num_batched_tokens",
    "max_num_batched_tokens", "max_batched_tokens", "batched_tokens", "max_batch_tokens", "batch_tokens",
)
_alias("engine.image", "image", "vllm_image", "container_image")
_alias("engine.memory", "memory", "mem")
_alias("engine.cpu", "cpu", "cpus")
_alias("namespace", "namespace", "ns")
_alias("backend", "backend")
_alias("profile", "profile")
_alias("experiment_id", "experiment_id", "id", "experiment_name", "named", "name")
_alias("model", "model", "model_id")
_alias("workload", "workload", "preset")
for _f in WORKLOAD_FIELDS:
    _alias(f"workload.{_f}", _f)
_alias("workload.prompt_tokens", "prompt", "input", "input_tokens", "prompt_len")
_alias("workload.output_tokens", "output", "output_len", "max_tokens")
_alias("workload.prompt_tokens_stdev", "prompt_stdev")
_alias("workload.prompt_tokens_min", "prompt_min")
_alias("workload.prompt_tokens_max", "prompt_max")
_alias("workload.output_tokens_stdev", "output_stdev")
_alias("workload.output_tokens_min", "output_min")
_alias("workload.output_tokens_max", "output_max")
_alias("workload.prefix_tokens", "prefix")
_alias("workload.max_requests", "requests", "num_requests")
_alias("workload.rate", "qps", "rps", "request_rate")
_alias("workload.random_seed", "seed")
_alias("workload.max_seconds", "seconds", "duration", "max_duration")
_alias("workload.max_concurrency", "concurrency")

# Words that only count as keys in key=value form: as bare words they are
# filler ("chatbot workload with ...", "the llama2-7b model").
_EQ_ONLY = {"model", "workload", "name"}
# ``--flag`` spellings that are sweepdeck settings rather than vLLM arguments.
_FLAG_KEYS = {
    "tp", "tensor_parallel_size", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
    "image", "namespace", "backend", "profile", "experiment_id", "model", "workload", "memory", "cpu",
}
_INT_PATHS = {
    "engine.tp", "engine.max_model_len", "engine.max_num_seqs", "engine.max_num_batched_tokens",
} | {f"workload.{f}" for f in WORKLOAD_FIELDS if f not in ("rate", "max_seconds", "rate_type")}
_NUM_PATHS = _INT_PATHS | {"workload.rate", "workload.max_seconds"}
# Token counts where "8k" means 8192.
_K_PATHS = {"engine.max_model_len", "engine.max_num_batched_tokens"}
_RATE_WORDS = {**{r: r for r in RATE_TYPES}, "sync": "synchronous"}
_DOWN = {"reduce", "lower", "decrease", "shrink", "cut"}
_UP = {"increase", "raise", "bump", "grow"}
_REMOVE = {"remove", "drop", "without", "unset", "disable", "no"}
# Plain-words spellings of common vLLM flags ("with prefix caching").
_PHRASES = {
    ("prefix", "caching"): "--enable-prefix-caching",
    ("chunked", "prefill"): "--enable-chunked-prefill",
    ("enforce", "eager"): "--enforce-eager",
    ("eager", "mode"): "--enforce-eager",
    ("trust", "remote", "code"): "--trust-remote-code",
    ("remote", "code"): "--trust-remote-code",
}


def _phrase(words: list[str], i: int) -> tuple[str, int] | None:
    """The flag spelled by the words at ``i`` and how many words it takes."""
    for phrase, flag in sorted(_PHRASES.items(), key=lambda kv: -len(kv[0])):
        got = tuple(w.lower() for w in words[i:i + len(phrase)])
        if got == phrase:
            return flag, len(phrase)
    return None
# Characters refused in any word, except the brackets of ``tp=[2,4]``.
_META = re.compile(r"[;&|`$<>(){}*?!\\'\"#~\s]")


@dataclass
class QuickCommand:
    """What a quick command asked for.

    Attributes:
        text: The command as typed.
        model: The model word as typed (alias or id), if any.
        model_id: The resolved catalog id.
        workload: The preset name, if one was named.
        custom_workload: ``custom`` was said: the workload numbers make a
            custom workload rather than tweak a preset.
        sets: Ordered ``(field path, value)`` settings (``engine.tp``,
            ``workload.rate``, ``namespace``, ``tp_sweep``...).
        scales: ``(field path, "double"|"halve")`` relative changes.
        directions: field path → ``"down"``/``"up"`` from reduce/increase, checked
            against the current value when applied.
        add_args: vLLM arguments to add (``--enforce-eager``).
        remove_args: vLLM argument names to remove.
        warnings: Notes for the user (arguments not in the reference...).
        spec: The built spec (:func:`parse_quick` only, when a model was named).
    """

    text: str
    model: str | None = None
    model_id: str | None = None
    workload: str | None = None
    custom_workload: bool = False
    sets: list[tuple[str, Any]] = field(default_factory=list)
    scales: list[tuple[str, str]] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)
    add_args: list[str] = field(default_factory=list)
    remove_args: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spec: ExperimentSpec | None = None
    model_choice: str | None = None

    def value(self, path: str) -> Any:
        """The last value set for ``path`` (None when not set)."""
        found = None
        for key, value in self.sets:
            if key == path:
                found = value
        return found

    @property
    def backend(self) -> str | None:
        return self.value("backend")

    @property
    def profile(self) -> str | None:
        return self.value("profile")

    @property
    def empty(self) -> bool:
        """Nothing was asked for."""
        return not (
            self.model or self.workload or self.custom_workload or self.sets or self.scales
            or self.add_args or self.remove_args
        )

    def workload_fields(self) -> dict[str, Any]:
        """The ``workload.*`` numbers, by field name."""
        return {k.split(".", 1)[1]: v for k, v in self.sets if k.startswith("workload.")}

    def custom_profile(self, catalogs: Catalogs) -> WorkloadProfile:
        """The custom workload these numbers describe (template defaults for the rest).

        Raises:
            SweepdeckError: prompt/output tokens missing or a bad value.
        """
        return catalogs.workloads.custom(**self.workload_fields())

    # ------------------------------------------------------------------ build

    def build(
        self,
        catalogs: Catalogs,
        *,
        backend: str | None = None,
        base: dict[str, Any] | None = None,
        settings: "Settings | None" = None,
        model_choice: str | None = None,
        today: Any = None,
    ) -> ExperimentSpec:
        """A new spec from this command (every value recorded as the user's).

        Raises:
            SweepdeckError: no model named, or any invalid value.
        """
        if not self.model:
            raise SweepdeckError(
                f"No model in {self.text!r}.",
                "Name a model first, e.g. 'llama2-7b chatbot'. Known: " + ", ".join(sorted(catalogs.models.aliases)),
            )
        chosen_backend, profile = _backend_and_profile(self, backend, settings)
        workload: str | WorkloadProfile | None = self.workload
        if self.custom_workload:
            workload = self.custom_profile(catalogs)
        spec = build_spec(
            catalogs,
            self.model_id or self.model,
            backend=chosen_backend,
            workload=workload,
            model_choice=model_choice or self.model_choice,
            profile=profile,
            base_values=base,
            today=today,
        )
        spec = self._apply_settings(spec, catalogs, Source.USER, skip=("backend", "profile"))
        check_limits(spec, catalogs.models.resolve(spec.model))
        return spec

    def apply(
        self,
        spec: ExperimentSpec,
        catalogs: Catalogs,
        *,
        source: Source = Source.FIX,
        settings: "Settings | None" = None,
    ) -> ExperimentSpec:
        """``spec`` with this command's changes, each recorded with ``source``.

        Raises:
            SweepdeckError: nothing to change, a contradiction ("reduce" to a
                larger value), or any invalid value. ``spec`` is never modified.
        """
        if self.empty:
            raise SweepdeckError(f"Nothing to change in {self.text!r}.", "Example: max_model_len=2048 or add --enforce-eager")
        new = spec
        renamed = False
        if self.model_id and self.model_id != spec.model:
            new = new.set("model", self.model_id, source)
            renamed = True
        if self.backend or self.profile:
            chosen, profile = _backend_and_profile(self, self.backend or spec.backend, settings)
            if chosen != new.backend:
                new = new.set("backend", chosen, source)
            if profile and profile != new.profile:
                new = new.set("profile", profile, source)
        if self.custom_workload:
            new = new.set("workload", self.custom_profile(catalogs), source)
            renamed = True
        elif self.workload and self.workload != new.workload.app:
            new = new.set("workload", catalogs.workloads.presets[self.workload].profile, source)
            renamed = True
        new = self._apply_settings(new, catalogs, source, skip=("backend", "profile"))
        if renamed and new.source("experiment_id") == Source.AUTO:
            info = _info(catalogs, new.model)
            if info is not None:
                fresh = default_experiment_id(info, new.workload.app)
                new = replace(new, experiment_id=fresh, origins={**new.origins, "experiment_id": Origin(Source.AUTO)})
        info = _info(catalogs, new.model)
        if info is not None:
            check_limits(new, info)
        return new

    def _apply_settings(
        self, spec: ExperimentSpec, catalogs: Catalogs, source: Source, skip: tuple[str, ...]
    ) -> ExperimentSpec:
        workload_numbers = not self.custom_workload  # custom: already inside the profile
        for path, value in self.sets:
            if path in skip or path in ("model", "workload"):
                continue
            if path.startswith("workload.") and not workload_numbers:
                continue
            current = spec.get(path)
            direction = self.directions.get(path)
            if direction and isinstance(current, (int, float)) and not isinstance(value, (list, tuple)):
                wanted = _positive_number(path, value)
                if direction == "down" and wanted >= current:
                    raise SweepdeckError(
                        f"{_label(path)} is {current:g}; reducing it to {wanted:g} would not lower it.",
                        f"Say '{_label(path)}={wanted:g}' to set it anyway.",
                    )
                if direction == "up" and wanted <= current:
                    raise SweepdeckError(
                        f"{_label(path)} is {current:g}; increasing it to {wanted:g} would not raise it.",
                        f"Say '{_label(path)}={wanted:g}' to set it anyway.",
                    )
            spec = spec.set(path, value, source)
        for path, how in self.scales:
            current = spec.get(path)
            if not isinstance(current, (int, float)) or isinstance(current, bool) or current is None:
                raise SweepdeckError(f"{_label(path)} has no number to {how}.")
            if how == "double":
                value = current * 2
            else:
                value = current // 2 if isinstance(current, int) else current / 2
                if value <= 0:
                    raise SweepdeckError(f"{_label(path)} is {current:g}; halving it leaves nothing.")
            spec = spec.set(path, value, source)
        if self.add_args or self.remove_args:
            args = list(spec.engine.extra_args)
            for name in self.remove_args:
                kept = [a for a in args if a.partition("=")[0] != name]
                if len(kept) == len(args):
                    raise SweepdeckError(
                        f"{name} is not among the vLLM arguments.",
                        "Current arguments: " + (" ".join(args) or "(none)"),
                    )
                args = kept
            for arg in self.add_args:
                name = arg.partition("=")[0]
                args = [a for a in args if a.partition("=")[0] != name] + [arg]
            if tuple(args) != spec.engine.extra_args:
                spec = spec.set("engine.extra_args", args, source)
        return spec


def parse_quick(
    text: str,
    catalogs: Catalogs,
    *,
    backend: str | None = None,
    base: dict[str, Any] | None = None,
    settings: "Settings | None" = None,
    model_choice: str | None = None,
    today: Any = None,
) -> QuickCommand:
    """Parse a quick command and, when it names a model, build its spec.

    Args:
        text: The command (``llama3-70b chatbot workload with TP=4 in namespace mert``).
        catalogs: Loaded catalogs.
        backend: Backend when the text names none (default ``local``, or the
            named profile's backend).
        base: A parsed base values file (BLIS ``values.yaml``) to layer under
            the user's values; its TP sweep, limits and workload are the base
            that MATCH / SUBSET / OVERRIDE compare against.
        settings: User settings; lets bare profile names (``on alvis``) work
            and checks ``profile NAME``.
        model_choice: The option chosen for an ambiguous alias (after the
            dialog the TUI calls again with it).

    Returns:
        The parsed command; ``.spec`` is set when a model was named (a command
        without a model, such as a custom workload alone, only fills ``.sets``).

    Raises:
        AmbiguousModel: an alias that names several models, without ``model_choice``.
        UnknownModel / SweepdeckError: an unknown word or invalid value, with the
            close alternatives.
    """
    cmd = _parse(text, catalogs, settings, model_choice)
    if cmd.model:
        cmd.spec = cmd.build(
            catalogs, backend=backend, base=base, settings=settings, model_choice=model_choice, today=today
        )
    return cmd


def build_quick(text: str, catalogs: Catalogs, **kwargs: Any) -> ExperimentSpec:
    """:func:`parse_quick` for callers that need a spec (a model must be named)."""
    cmd = parse_quick(text, catalogs, **kwargs)
    if cmd.spec is None:
        cmd.build(catalogs)  # raises "No model ..."
    assert cmd.spec is not None
    return cmd.spec


def apply_quick(
    spec: ExperimentSpec,
    text: str,
    catalogs: Catalogs,
    *,
    source: Source = Source.FIX,
    settings: "Settings | None" = None,
    model_choice: str | None = None,
) -> ExperimentSpec:
    """Change an existing spec as a quick command says ("reduce max_model_len to 2048").

    Every change is recorded with ``source`` (a recovery fix by default), so
    :meth:`ExperimentSpec.changes` lists it.

    Raises:
        SweepdeckError: see :meth:`QuickCommand.apply`; ``spec`` is unchanged.
    """
    return _parse(text, catalogs, settings, model_choice).apply(spec, catalogs, source=source, settings=settings)


# ----------------------------------------------------------------- parsing


def _parse(text: str, catalogs: Catalogs, settings: "Settings | None", model_choice: str | None) -> QuickCommand:
    if not isinstance(text, str):
        raise SweepdeckError("A quick command must be text.")
    raw = text.replace("\t", " ").strip()
    if not raw.isprintable():
        raise SweepdeckError("The command contains control characters.", "Type it on one line.")
    try:
        tokens = shlex.split(raw)
    except ValueError as exc:
        raise SweepdeckError(f"Cannot read {raw!r}: {exc}.", "Check the quotes.") from None
    words: list[str] = []
    for token in tokens:
        bad = sorted(set(_META.findall(token)))
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            raise SweepdeckError(
                f"{token!r} contains characters that are not allowed ({shown}).",
                "Values may use letters, digits and - . _ / : @ + = , only.",
            )
        word = token.rstrip(",:.") if not token.startswith(".") else token.rstrip(",:")
        if word:
            words.append(word)
    cmd = QuickCommand(text=raw, model_choice=model_choice)
    profiles = settings.profiles if settings is not None else {}
    direction: str | None = None  # from a pending reduce/increase
    i = 0
    while i < len(words):
        word = words[i]
        low = word.lower()
        nxt = words[i + 1] if i + 1 < len(words) else None
        # key=value ----------------------------------------------------------
        if "=" in word and not low.startswith("-"):
            key, _, value = word.partition("=")
            if not value:
                if nxt is None:
                    raise SweepdeckError(f"{key} needs a value after '='.", f"Example: {key}=4")
                value, i = nxt, i + 1
            _set_key(cmd, catalogs, key, value, direction, word)
            direction = None
            i += 1
            continue
        # --flag[=value] ------------------------------------------------------
        if low.startswith("-"):
            i = _flag(cmd, catalogs, words, i, direction)
            direction = None
            continue
        # verbs ---------------------------------------------------------------
        if low in _DOWN or low in _UP:
            direction = "down" if low in _DOWN else "up"
            i += 1
            continue
        if low in ("double", "halve"):
            path = _key_path(nxt) if nxt else None
            if path is None or path not in _NUM_PATHS:
                raise SweepdeckError(f"{low} what? {nxt!r} is not a numeric setting." if nxt else f"{low} what?", "Example: double tp, halve max_num_seqs")
            cmd.scales.append((path, low))
            i += 2
            continue
        if low == "add":
            if nxt is None or not nxt.startswith("-"):
                raise SweepdeckError("add what? Give a vLLM argument.", "Example: add --enforce-eager")
            i += 1
            continue
        if low in _REMOVE:
            spelled = _phrase(words, i + 1)
            if spelled:
                cmd.remove_args.append(spelled[0])
                i += 1 + spelled[1]
                continue
            if nxt is None or not nxt.startswith("--"):
                raise SweepdeckError(f"{low} what? Give a vLLM argument.", "Example: remove --enforce-eager")
            cmd.remove_args.append(nxt.partition("=")[0])
            i += 2
            continue
        spelled = _phrase(words, i)
        if spelled:
            _add_arg(cmd, catalogs, spelled[0])
            i += spelled[1]
            continue
        # "custom image X" / "custom workload ..." --------------------------------
        if low == "custom":
            if not (nxt and nxt.lower() == "image"):
                cmd.custom_workload = True
            i += 1
            continue
        # key value ----------------------------------------------------------
        path = _key_path(low)
        if path is not None and _norm(low) not in _EQ_ONLY:
            j = i + 1
            while j < len(words) and words[j].lower() in ("to", "=", "of", "is", "size", "length", "len"):
                j += 1
            value = words[j] if j < len(words) else None
            takes = value is not None and (path not in _NUM_PATHS or _looks_numeric(path, value))
            if path in ("backend", "profile") and cmd.value(path) is not None and (
                value is None or path == "backend" and value.lower() not in BACKEND_NAMES
            ):
                # "on the local backend", "the alvis profile": already said.
                i += 1
                continue
            if takes:
                _set_key(cmd, catalogs, low, value, direction, f"{word} {value}")
                direction = None
                i = j + 1
                continue
            if direction and path in _NUM_PATHS:
                # "reduce max_model_len" with no number: halve (increase: double).
                cmd.scales.append((path, "halve" if direction == "down" else "double"))
                direction = None
                i += 1
                continue
            raise SweepdeckError(
                f"{word} needs a value" + (f", got {value!r}." if value is not None else "."),
                f"Example: {_example(path)}",
            )
        if low in FILLER:
            i += 1
            continue
        # numbers: "4 gpus" ----------------------------------------------------------
        if low.isdigit() and nxt and nxt.lower() in ("gpu", "gpus"):
            _set_key(cmd, catalogs, "tp", low, direction, f"{word} {nxt}")
            direction = None
            i += 2
            continue
        if low in BACKEND_NAMES:
            _put(cmd, "backend", low)
            i += 1
            continue
        if low in _RATE_WORDS:
            _put(cmd, "workload.rate_type", _RATE_WORDS[low])
            i += 1
            continue
        if word in profiles or low in profiles:
            _put(cmd, "profile", word if word in profiles else low)
            i += 1
            continue
        # a two-word workload keyword ("long context", "basic chat") ------------------
        if nxt is not None and _try_workload(cmd, catalogs, f"{low}-{nxt.lower()}", exact=True):
            i += 2
            continue
        if _try_model(cmd, catalogs, word, model_choice):
            i += 1
            continue
        if _try_workload(cmd, catalogs, low, exact=False):
            i += 1
            continue
        _unknown(cmd, catalogs, word, profiles)
    if direction:
        raise SweepdeckError(
            f"{'Reduce' if direction == 'down' else 'Increase'} what?", "Example: reduce max_model_len to 2048"
        )
    return cmd


def _norm(key: str) -> str:
    return key.strip().lower().lstrip("-").replace("-", "_")


def _key_path(word: str | None) -> str | None:
    if word is None:
        return None
    return _KEYS.get(_norm(word))


def _label(path: str) -> str:
    return path.split(".", 1)[1] if path.startswith(("engine.", "workload.")) else path


def _example(path: str) -> str:
    examples = {
        "engine.image": "image ghcr.io/myorg/vllm:v1",
        "engine.memory": "memory=64Gi",
        "engine.cpu": "cpu=16",
        "namespace": "namespace mert",
        "backend": "backend tekton",
        "profile": "profile alvis",
        "experiment_id": "experiment id my-run-1",
        "workload.rate_type": "rate_type=poisson",
    }
    return examples.get(path, f"{_label(path)}=4")


def _looks_numeric(path: str, value: str) -> bool:
    value = value.strip("[]")
    if path == "engine.tp":
        return bool(re.fullmatch(r"\d+(,\d+)*", value))
    if path in _K_PATHS:
        return bool(re.fullmatch(r"\d+[kK]?", value))
    return bool(re.fullmatch(r"\d+(\.\d+)?", value))


def _positive_number(path: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SweepdeckError(f"{_label(path)} must be a number, got {value!r}.") from None
    return number


def _put(cmd: QuickCommand, path: str, value: Any) -> None:
    cmd.sets.append((path, value))


def _set_key(cmd: QuickCommand, catalogs: Catalogs, key: str, value: str, direction: str | None, shown: str) -> None:
    norm = _norm(key)
    path = _KEYS.get(norm)
    if path is None:
        vllm_name = "--" + norm.replace("_", "-")
        if vllm_name in catalogs.vllm_args.args:
            _add_arg(cmd, catalogs, f"{vllm_name}={value}")
            return
        close = difflib.get_close_matches(norm, list(_KEYS), n=3, cutoff=0.6)
        raise SweepdeckError(
            f"Unknown setting {key!r} in {shown!r}.",
            ("Did you mean: " + ", ".join(close) + "? " if close else "")
            + "Settings: tp, max_model_len, max_num_seqs, max_num_batched_tokens, image, memory, cpu, namespace, "
            "backend, profile, id, prompt, output, max_requests, rate, rate_type, concurrency.",
        )
    if path == "model":
        if not _try_model(cmd, catalogs, value, cmd.model_choice):
            catalogs.models.resolve(value)  # raises UnknownModel with suggestions
        return
    if path == "workload":
        if value.lower() == "custom":
            cmd.custom_workload = True
        else:
            cmd.workload = catalogs.workloads.match(value).name
        return
    if path == "backend":
        value = value.lower()
    if path == "engine.tp":
        items = [v for v in value.strip("[]").split(",") if v]
        if len(items) > 1 or value.startswith("["):
            _put(cmd, "tp_sweep", tuple(items))
            return
    if path in _K_PATHS and re.fullmatch(r"\d+[kK]", value):
        value = str(int(value[:-1]) * 1024)
    if path == "workload.rate_type":
        value = _RATE_WORDS.get(value.lower(), value.lower())
    if path == "workload.max_concurrency" and cmd.value("workload.rate_type") is None:
        # "concurrency=8" means run 8 at a time.
        _put(cmd, "workload.rate_type", "concurrent")
    if path.startswith("workload.") and path.split(".", 1)[1] in _INT_INFO:
        if not re.fullmatch(r"\d+", value):
            raise SweepdeckError(f"{_label(path)} must be a whole number, got {value!r}.", f"Example: {_example(path)}")
    if path in ("workload.rate", "workload.max_seconds") and not re.fullmatch(r"\d+(\.\d+)?", value):
        raise SweepdeckError(f"{_label(path)} must be a number, got {value!r}.", f"Example: {_label(path)}=5")
    if direction:
        cmd.directions[path] = direction
    _put(cmd, path, value)


_INT_INFO = {p.split(".", 1)[1] for p in _INT_PATHS if p.startswith("workload.")}


def _flag(cmd: QuickCommand, catalogs: Catalogs, words: list[str], i: int, direction: str | None) -> int:
    """Handle ``--name[=value]`` at ``words[i]``; returns the next index."""
    word = words[i]
    name, eq, value = word.partition("=")
    if name not in ENGINE_FLAGS and (not name.startswith("--") or len(name) < 3):
        raise SweepdeckError(f"{word!r} is not an option.", "vLLM arguments look like --enable-prefix-caching.")
    norm = _norm(name)
    nxt = words[i + 1] if i + 1 < len(words) else None
    if norm in _FLAG_KEYS or name in ENGINE_FLAGS:
        key = ENGINE_FLAGS.get(name, norm)
        if not eq:
            if nxt is None:
                raise SweepdeckError(f"{name} needs a value.", f"Example: {name}=4")
            value, i = nxt, i + 1
        _set_key(cmd, catalogs, key, value, direction, f"{name} {value}")
        return i + 1
    ref = catalogs.vllm_args.args.get(name)
    if not eq and ref is not None and ref.type != "flag" and nxt is not None and not nxt.startswith("-"):
        # "--dtype bfloat16": the value is the next word.
        value, eq, i = nxt, "=", i + 1
    _add_arg(cmd, catalogs, f"{name}={value}" if eq else name)
    return i + 1


def _add_arg(cmd: QuickCommand, catalogs: Catalogs, arg: str) -> None:
    check_safe("vLLM argument", arg)
    ref = catalogs.vllm_args.args.get(arg.partition("=")[0])
    if ref is not None and ref.type != "flag" and "=" not in arg:
        raise SweepdeckError(f"{arg} needs a value.", f"Example: {arg}=VALUE")
    warning = catalogs.vllm_args.check(arg)
    if warning:
        cmd.warnings.append(warning)
    if ref is not None and ref.auto_configured:
        cmd.warnings.append(f"{ref.name} is normally set automatically; your value overrides it.")
    if ref is not None and ref.requires_custom_image:
        cmd.warnings.append(f"{ref.name} needs a custom vLLM image.")
    cmd.add_args.append(arg)


def _try_model(cmd: QuickCommand, catalogs: Catalogs, word: str, model_choice: str | None) -> bool:
    try:
        info = catalogs.models.resolve(word, model_choice)
    except AmbiguousModel:
        raise
    except UnknownModel:
        return False
    if cmd.model and cmd.model_id != info.id:
        raise SweepdeckError(
            f"Two models named: {cmd.model!r} and {word!r}.", "Name one model per experiment."
        )
    cmd.model, cmd.model_id = word, info.id
    return True


def _try_workload(cmd: QuickCommand, catalogs: Catalogs, word: str, exact: bool) -> bool:
    workloads = catalogs.workloads
    if exact:
        if word not in workloads.presets and not any(word in p.keywords for p in workloads.presets.values()):
            return False
    try:
        preset = workloads.match(word)
    except SweepdeckError:
        return False
    if cmd.workload and cmd.workload != preset.name:
        raise SweepdeckError(
            f"Two workloads named: {cmd.workload!r} and {word!r} (= {preset.name}).", "Name one workload."
        )
    cmd.workload = preset.name
    return True


def _unknown(cmd: QuickCommand, catalogs: Catalogs, word: str, profiles: dict) -> None:
    low = word.lower()
    model_names = catalogs.models.names()
    model_close = difflib.get_close_matches(low, [m.lower() for m in model_names], n=4, cutoff=0.6)
    if not cmd.model and model_close:
        raise UnknownModel(word, model_close)
    vocabulary = (
        catalogs.workloads.words()
        + list(BACKEND_NAMES)
        + list(_RATE_WORDS)
        + [k for k in _KEYS if len(k) > 2]
        + list(profiles)
        + [m.lower() for m in model_names]
    )
    close = difflib.get_close_matches(low, vocabulary, n=4, cutoff=0.6)
    hint = "Did you mean: " + ", ".join(close) + "? " if close else ""
    hint += "Known: models (" + ", ".join(sorted(catalogs.models.aliases)[:8]) + ", ...), workloads (" + ", ".join(catalogs.workloads.presets) + "), backends (" + ", ".join(BACKEND_NAMES) + "), settings like tp=4, max_model_len=4096, namespace NAME."
    raise SweepdeckError(f"Unknown word {word!r} in {cmd.text!r}.", hint)


def _backend_and_profile(
    cmd: QuickCommand, default_backend: str | None, settings: "Settings | None"
) -> tuple[str, str | None]:
    """The backend and profile, reconciling ``on slurm`` with ``profile alvis``."""
    backend, profile = cmd.backend, cmd.profile
    if profile and settings is not None:
        prof = settings.profile(profile, backend)  # raises for unknown / mismatched
        return prof.backend, profile
    if backend:
        return backend, profile
    if default_backend:
        return default_backend, profile
    if settings is not None:
        return settings.default_backend, profile
    return "local", profile


def _info(catalogs: Catalogs, model: str):
    try:
        return catalogs.models.resolve(model)
    except SweepdeckError:
        return None


__all__ = ["QuickCommand", "apply_quick", "build_quick", "parse_quick"]
