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
from config.errors import AmbiguousModel, SweepdeckError, UnknownModel, UnknownWorkload
from config.spec import (
    BACKEND_NAMES,
    ENGINE_FLAGS,
    WORKLOAD_FIELDS,
    ExperimentSpec,
    Origin,
    Source,
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
_alias("engine.max_model_len", "max_model_len", "max_len", "model_len", "context", "context_len",
       "context_length", "ctx")
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
        settings: Settings | None = None,
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
        settings: Settings | None = None,
    ) -> ExperimentSpec:
        """``spec`` with this command's changes, each recorded with ``source``.

        Raises:
            SweepdeckError: nothing to change, a contradiction ("reduce" to a
                larger value), or any invalid value. ``spec`` is never modified.
        """
        if self.empty:
            raise SweepdeckError(f"Nothing to change in {self.text!r}.",
                                 "Example: max_model_len=2048 or add --enforce-eager")
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
        """The line's settings, then its doublings/halvings, then the vLLM arguments it adds or removes."""
        workload_numbers = not self.custom_workload  # custom: already inside the profile
        for path, value in self.sets:
            if path in skip or path in ("model", "workload"):
                continue
            if path.startswith("workload.") and not workload_numbers:
                continue
            _check_direction(path, spec.get(path), value, self.directions.get(path))
            spec = spec.set(path, value, source)
        for path, how in self.scales:
            spec = spec.set(path, _scaled(path, spec.get(path), how), source)
        if self.add_args or self.remove_args:
            args = _edited_args(list(spec.engine.extra_args), self.add_args, self.remove_args)
            if tuple(args) != spec.engine.extra_args:
                spec = spec.set("engine.extra_args", args, source)
        return spec


def _check_direction(path: str, current: Any, value: Any, direction: str | None) -> None:
    """"reduce X to N" must lower X and "increase X to N" raise it (else the user meant something else)."""
    if not direction or not isinstance(current, (int, float)) or isinstance(value, (list, tuple)):
        return
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


def _scaled(path: str, current: Any, how: str) -> Any:
    """``current`` doubled or halved (``how``); halving to nothing is refused."""
    if not isinstance(current, (int, float)) or isinstance(current, bool) or current is None:
        raise SweepdeckError(f"{_label(path)} has no number to {how}.")
    if how == "double":
        return current * 2
    value = current // 2 if isinstance(current, int) else current / 2
    if value <= 0:
        raise SweepdeckError(f"{_label(path)} is {current:g}; halving it leaves nothing.")
    return value


def _edited_args(args: list[str], add: Any, remove: Any) -> list[str]:
    """vLLM arguments with ``remove`` (flag names, each must be there) taken out and ``add`` put last
    (an added flag replaces the same flag's earlier value)."""
    for name in remove:
        kept = [a for a in args if a.partition("=")[0] != name]
        if len(kept) == len(args):
            raise SweepdeckError(
                f"{name} is not among the vLLM arguments.",
                "Current arguments: " + (" ".join(args) or "(none)"),
            )
        args = kept
    for arg in add:
        name = arg.partition("=")[0]
        args = [a for a in args if a.partition("=")[0] != name] + [arg]
    return args


def parse_quick(
    text: str,
    catalogs: Catalogs,
    *,
    backend: str | None = None,
    base: dict[str, Any] | None = None,
    settings: Settings | None = None,
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
    settings: Settings | None = None,
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


def _parse(text: str, catalogs: Catalogs, settings: Settings | None, model_choice: str | None) -> QuickCommand:
    """Parse every word; report every unknown word (and every bad value) of the line at once.

    Raises:
        AmbiguousModel: at once (the caller asks and parses again).
        SweepdeckError: one problem, as it was found; several, or any unknown
            word, as :class:`UnknownWords` listing them all.
    """
    raw, words = _words(text)
    state = _ParseState(QuickCommand(text=raw, model_choice=model_choice), catalogs,
                        settings.profiles if settings is not None else {}, words)
    i = 0
    while i < len(words):
        try:
            i = _step(state, i)
        except AmbiguousModel:
            raise
        except SweepdeckError as exc:
            state.problems.append(exc)
            i = max(i + 1, getattr(exc, "resume_at", i + 1))
    if state.direction:
        state.problems.append(SweepdeckError(
            f"{'Reduce' if state.direction == 'down' else 'Increase'} what?", "Example: reduce max_model_len to 2048"
        ))
    _raise_problems(state)
    return state.cmd


def _words(text: str) -> tuple[str, list[str]]:
    """The command as typed (stripped) and its words; shell metacharacters are refused here."""
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
    return raw, words


@dataclass
class _ParseState:
    """What :func:`_step` reads and changes while it walks the words."""

    cmd: QuickCommand
    catalogs: Catalogs
    profiles: dict
    words: list[str]
    direction: str | None = None  # from a pending reduce/increase
    unknown: list[Unknown] = field(default_factory=list)
    problems: list[SweepdeckError] = field(default_factory=list)


def _resume(exc: SweepdeckError, at: int) -> SweepdeckError:
    """``exc``, marked so that parsing goes on at word ``at`` (its value is not read again as a word)."""
    exc.resume_at = at  # type: ignore[attr-defined]  # read back with getattr in _parse
    return exc


def _step(state: _ParseState, i: int) -> int:
    """Read the word(s) at ``i``; returns the index of the next word."""
    cmd, catalogs, words = state.cmd, state.catalogs, state.words
    word = words[i]
    low = word.lower()
    nxt = words[i + 1] if i + 1 < len(words) else None
    if "=" in word and not low.startswith("-"):
        return _key_equals(state, i)
    if low.startswith("-"):  # --flag[=value]
        direction, state.direction = state.direction, None
        return _flag(cmd, catalogs, words, i, direction)
    verb = _verb(state, i)
    if verb is not None:
        return verb
    # "custom image X" / "custom workload ..." --------------------------------
    if low == "custom":
        if not (nxt and nxt.lower() == "image"):
            cmd.custom_workload = True
        return i + 1
    # key value ----------------------------------------------------------
    path = _key_path(low)
    if path is not None and _norm(low) not in _EQ_ONLY:
        return _key_value(state, i, path)
    if low in FILLER:
        return i + 1
    # numbers: "4 gpus" ----------------------------------------------------------
    if low.isdigit() and nxt and nxt.lower() in ("gpu", "gpus"):
        direction, state.direction = state.direction, None
        _set_key(cmd, catalogs, "tp", low, direction, f"{word} {nxt}")
        return i + 2
    return _name(state, i)


def _key_equals(state: _ParseState, i: int) -> int:
    """``key=value`` (or ``key= value``); an unknown key is an unknown word."""
    words = state.words
    word = words[i]
    key, _, value = word.partition("=")
    step = 1
    if not value:
        if i + 1 >= len(words):
            raise SweepdeckError(f"{key} needs a value after '='.", f"Example: {key}=4")
        value, step = words[i + 1], 2
    direction, state.direction = state.direction, None
    try:
        _set_key(state.cmd, state.catalogs, key, value, direction, word)
    except _UnknownSetting:
        state.unknown.append(_unknown_entry(state, key, i, setting=True))
    except (UnknownWorkload, UnknownModel) as exc:
        # workload=chatbt, model=llama4: the value is the unknown word
        what = "workload preset" if isinstance(exc, UnknownWorkload) else "model"
        state.unknown.append(Unknown(value, tuple((w, what) for w in exc.suggestions)))
    except SweepdeckError as exc:
        raise _resume(exc, i + step) from None
    return i + step


def _verb(state: _ParseState, i: int) -> int | None:
    """reduce/increase, double/halve, add, remove and the plain-words flags; None: not a verb."""
    cmd, words = state.cmd, state.words
    low = words[i].lower()
    nxt = words[i + 1] if i + 1 < len(words) else None
    if low in _DOWN or low in _UP:
        state.direction = "down" if low in _DOWN else "up"
        return i + 1
    if low in ("double", "halve"):
        path = _key_path(nxt) if nxt else None
        if path is None or path not in _NUM_PATHS:
            raise _resume(SweepdeckError(f"{low} what? {nxt!r} is not a numeric setting." if nxt else f"{low} what?",
                                         "Example: double tp, halve max_num_seqs"), i + 2)
        cmd.scales.append((path, low))
        return i + 2
    if low == "add":
        if nxt is None or not nxt.startswith("-"):
            raise SweepdeckError("add what? Give a vLLM argument.", "Example: add --enforce-eager")
        return i + 1
    if low in _REMOVE:
        spelled = _phrase(words, i + 1)
        if spelled:
            cmd.remove_args.append(spelled[0])
            return i + 1 + spelled[1]
        if nxt is None or not nxt.startswith("--"):
            raise SweepdeckError(f"{low} what? Give a vLLM argument.", "Example: remove --enforce-eager")
        cmd.remove_args.append(nxt.partition("=")[0])
        return i + 2
    spelled = _phrase(words, i)
    if spelled:
        _add_arg(cmd, state.catalogs, spelled[0])
        return i + spelled[1]
    return None


def _key_value(state: _ParseState, i: int, path: str) -> int:
    """``tp 4``, ``max model len to 8192``, ``namespace mert``: a setting and the word(s) after it."""
    cmd, words = state.cmd, state.words
    word = words[i]
    j = i + 1
    while j < len(words) and words[j].lower() in ("to", "=", "of", "is", "size", "length", "len"):
        j += 1
    value = words[j] if j < len(words) else None
    takes = value is not None and (path not in _NUM_PATHS or _looks_numeric(path, value))
    if path in ("backend", "profile") and cmd.value(path) is not None and (
        value is None or path == "backend" and value.lower() not in BACKEND_NAMES
    ):
        # "on the local backend", "the alvis profile": already said.
        return i + 1
    if takes:
        assert value is not None
        direction, state.direction = state.direction, None
        try:
            _set_key(cmd, state.catalogs, word.lower(), value, direction, f"{word} {value}")
        except SweepdeckError as exc:
            raise _resume(exc, j + 1) from None
        return j + 1
    if state.direction and path in _NUM_PATHS:
        # "reduce max_model_len" with no number: halve (increase: double).
        cmd.scales.append((path, "halve" if state.direction == "down" else "double"))
        state.direction = None
        return i + 1
    raise _resume(SweepdeckError(
        f"{word} needs a value" + (f", got {value!r}." if value is not None else "."),
        f"Example: {_example(path)}",
    ), j + 1)


def _name(state: _ParseState, i: int) -> int:
    """A backend, rate type, profile, workload or model name; anything else is an unknown word."""
    cmd, catalogs, words = state.cmd, state.catalogs, state.words
    word = words[i]
    low = word.lower()
    nxt = words[i + 1] if i + 1 < len(words) else None
    if low in BACKEND_NAMES:
        _put(cmd, "backend", low)
        return i + 1
    if low in _RATE_WORDS:
        _put(cmd, "workload.rate_type", _RATE_WORDS[low])
        return i + 1
    if word in state.profiles or low in state.profiles:
        _put(cmd, "profile", word if word in state.profiles else low)
        return i + 1
    # a two-word workload keyword ("long context", "basic chat") ------------------
    if nxt is not None and _try_workload(cmd, catalogs, f"{low}-{nxt.lower()}", exact=True):
        return i + 2
    if _try_model(cmd, catalogs, word, cmd.model_choice):
        return i + 1
    if _try_workload(cmd, catalogs, low, exact=False):
        return i + 1
    state.unknown.append(_unknown_entry(state, word, i))
    return i + 1


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
        _set_vllm_arg(cmd, catalogs, norm, key, value, shown)
        return
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
    if path == "engine.tp":
        items = [v for v in value.strip("[]").split(",") if v]
        if len(items) > 1 or value.startswith("["):
            _put(cmd, "tp_sweep", tuple(items))
            return
    value = _spelled_out(path, value)
    if path == "workload.max_concurrency" and cmd.value("workload.rate_type") is None:
        # "concurrency=8" means run 8 at a time.
        _put(cmd, "workload.rate_type", "concurrent")
    _check_workload_number(path, value)
    if direction:
        cmd.directions[path] = direction
    _put(cmd, path, value)


def _set_vllm_arg(cmd: QuickCommand, catalogs: Catalogs, norm: str, key: str, value: str, shown: str) -> None:
    """``key=value`` that is no sweepdeck setting: a vLLM argument when the reference knows it, else an error."""
    vllm_name = "--" + norm.replace("_", "-")
    if vllm_name in catalogs.vllm_args.args:
        _add_arg(cmd, catalogs, f"{vllm_name}={value}")
        return
    close = difflib.get_close_matches(norm, list(_KEYS), n=3, cutoff=0.6)
    raise _UnknownSetting(
        f"Unknown setting {key!r} in {shown!r}.",
        ("Did you mean: " + ", ".join(close) + "? " if close else "") + SETTINGS_HINT,
    )


def _spelled_out(path: str, value: str) -> str:
    """The value in the form the spec takes: lower-case backend, ``4k`` as 4096, a rate-type word as the type."""
    if path == "backend":
        return value.lower()
    if path in _K_PATHS and re.fullmatch(r"\d+[kK]", value):
        return str(int(value[:-1]) * 1024)
    if path == "workload.rate_type":
        return _RATE_WORDS.get(value.lower(), value.lower())
    return value


def _check_workload_number(path: str, value: str) -> None:
    if path.startswith("workload.") and path.split(".", 1)[1] in _INT_INFO and not re.fullmatch(r"\d+", value):
        raise SweepdeckError(f"{_label(path)} must be a whole number, got {value!r}.", f"Example: {_example(path)}")
    if path in ("workload.rate", "workload.max_seconds") and not re.fullmatch(r"\d+(\.\d+)?", value):
        raise SweepdeckError(f"{_label(path)} must be a number, got {value!r}.", f"Example: {_label(path)}=5")


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
    if exact and word not in workloads.presets and not any(word in p.keywords for p in workloads.presets.values()):
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


SETTINGS_HINT = (
    "Settings: tp, max_model_len, max_num_seqs, max_num_batched_tokens, image, memory, cpu, namespace, "
    "backend, profile, id, prompt, output, max_requests, rate, rate_type, concurrency."
)


class _UnknownSetting(SweepdeckError):
    """``key=value`` with a key that is neither a setting nor a vLLM argument (collected as an unknown word)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A word of a quick command that names nothing sweepdeck knows.

    Attributes:
        word: The word as typed (``chatbt``; for ``tpp=2`` the key ``tpp``).
        suggestions: ``(word, what it is)`` closest first: ``("chatbot", "workload preset")``,
            ``("mert", "profile (tekton)")``, ``("tp", "setting")``.
        note: What the word looked like it meant (``no profile named 'alvis' is configured``).
        model_like: It is close to a model name and no model was named.
    """

    word: str
    suggestions: tuple[tuple[str, str], ...] = ()
    note: str = ""
    model_like: bool = False

    def line(self) -> str:
        """``'chatbt': did you mean chatbot (workload preset)?``"""
        parts = [self.note] if self.note else []
        if self.suggestions:
            parts.append("did you mean " + " or ".join(f"{w} ({what})" for w, what in self.suggestions) + "?")
        elif not self.note:
            parts.append("nothing close.")
        return f"{self.word!r}: " + "; ".join(parts) + ("" if parts[-1].endswith(("?", ".")) else ".")


class UnknownWords(SweepdeckError):
    """Every word of a quick command that names nothing (and every bad value), reported together.

    A misspelling is never taken for the word it resembles: the TUI asks which
    word was meant (:attr:`unknown` carries the suggestions), a headless caller
    shows the message and the hint and stops.

    Attributes:
        text: The command.
        unknown: The unknown words, in the order typed.
        problems: Other errors of the same line (a bad value...).
    """

    def __init__(self, text: str, unknown: list[Unknown], problems: list[SweepdeckError], known: str) -> None:
        names = ", ".join(repr(u.word) for u in unknown)
        if unknown:
            message = f"Unknown word{'s' if len(unknown) > 1 else ''} {names} in {text!r}."
            if problems:
                message += " Also: " + " ".join(p.message for p in problems)
        else:
            message = f"{len(problems)} problems in {text!r}: " + " ".join(p.message for p in problems)
        hints = [u.line() for u in unknown] + [p.hint for p in problems if p.hint]
        if unknown:
            hints.append(known)
        # not super(): in UnknownModelWord the next class is UnknownModel, whose arguments differ
        SweepdeckError.__init__(self, message, " ".join(h for h in hints if h))
        self.text = text
        self.unknown = list(unknown)
        self.problems = list(problems)

    @property
    def askable(self) -> bool:
        """Every problem is an unknown word with at least one suggestion: the TUI can ask which was meant."""
        return bool(self.unknown) and not self.problems and all(u.suggestions for u in self.unknown)


class UnknownModelWord(UnknownWords, UnknownModel):
    """The one unknown word is close to a model name (and no model was named): an :class:`UnknownModel` too."""

    def __init__(self, text: str, unknown: list[Unknown], problems: list[SweepdeckError], known: str) -> None:
        UnknownWords.__init__(self, text, unknown, problems, known)
        self.name = unknown[0].word
        self.suggestions = [w for w, _ in unknown[0].suggestions]


def replace_word(text: str, word: str, choice: str) -> str:
    """``text`` with the first ``word`` (as a whole word, or the key of ``word=value``) replaced by ``choice``."""
    pattern = re.compile(rf"(?<![\w.-]){re.escape(word)}(?![\w.-])")
    return pattern.sub(choice, text, count=1)


def _raise_problems(state: _ParseState) -> None:
    if not state.unknown and not state.problems:
        return
    if not state.unknown and len(state.problems) == 1:
        raise state.problems[0]
    known = _known(state.catalogs, state.profiles)
    if len(state.unknown) == 1 and state.unknown[0].model_like and not state.problems:
        raise UnknownModelWord(state.cmd.text, state.unknown, state.problems, known)
    raise UnknownWords(state.cmd.text, state.unknown, state.problems, known)


def _known(catalogs: Catalogs, profiles: dict) -> str:
    """The hint's list of what a word may be."""
    configured = ", ".join(f"{name} ({getattr(p, 'backend', '?')})" for name, p in sorted(profiles.items()))
    return (
        "Known: models (" + ", ".join(sorted(catalogs.models.aliases)[:8]) + ", ...), workloads ("
        + ", ".join(catalogs.workloads.presets) + "), profiles (" + (configured or "none configured") + "), backends ("
        + ", ".join(BACKEND_NAMES) + "), settings like tp=4, max_model_len=4096, namespace NAME."
    )


def _unknown_entry(state: _ParseState, word: str, i: int, setting: bool = False) -> Unknown:
    """What ``word`` may have meant: close profiles, models, presets, backends and settings."""
    low = _norm(word) if setting else word.lower()
    suggestions: list[tuple[float, str, str]] = []

    def consider(candidates, what, cutoff: float = 0.6) -> None:
        for name in candidates:
            ratio = difflib.SequenceMatcher(None, low, str(name).lower()).ratio()
            if ratio >= cutoff:
                suggestions.append((ratio, str(name), what(name) if callable(what) else what))

    profiles = state.profiles
    consider(profiles, lambda n: f"profile, {getattr(profiles[n], 'backend', '?')}")
    consider([k for k in _KEYS if setting or len(k) > 2], "setting")
    if not setting:
        models = state.catalogs.models
        consider(models.names(), "model")
        consider(state.catalogs.workloads.presets, "workload preset")
        keywords = {k: p.name for p in state.catalogs.workloads.presets.values() for k in p.keywords}
        consider(keywords, lambda k: f"keyword of {keywords[k]}", cutoff=0.75)
        consider(BACKEND_NAMES, "backend")
        consider(_RATE_WORDS, "rate type")
    best: dict[str, tuple[float, str, str]] = {}  # one entry per word, its closest reading
    for ratio, name, what in suggestions:
        if name.lower() not in best or ratio > best[name.lower()][0]:
            best[name.lower()] = (ratio, name, what)
    ranked = sorted(best.values(), key=lambda t: -t[0])[:4]
    note = ""
    before = state.words[i - 1].lower() if i > 0 else ""
    if not setting and before in ("on", "profile", "using", "via") and low not in profiles:
        configured = ", ".join(sorted(profiles)) or "none"
        note = (f"no profile named {word!r} is configured (profiles: {configured}; "
                "add one under 'profiles:' in the config)")
    model_like = not setting and not state.cmd.model and any(w == "model" for _, _, w in ranked)
    return Unknown(word, tuple((n, w) for _, n, w in ranked), note, model_like)


def _backend_and_profile(
    cmd: QuickCommand, default_backend: str | None, settings: Settings | None
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


__all__ = ["QuickCommand", "Unknown", "UnknownWords", "apply_quick", "build_quick", "parse_quick", "replace_word"]
