"""Model, workload and vLLM-argument catalogs.

The files are in the same formats as the BLIS data-collector skill's
``known-models.yaml``, ``workload-presets.yaml`` and ``vllm-args.yaml`` so a
user can point sweepdeck at their own copies with no conversion. The defaults
ship in ``config/data/``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from config.errors import AmbiguousModel, ConfigError, SweepdeckError, UnknownModel, UnknownWorkload

DATA_DIR = Path(__file__).parent / "data"
MODELS_FILE = "known-models.yaml"
WORKLOADS_FILE = "workload-presets.yaml"
VLLM_ARGS_FILE = "vllm-args.yaml"

RATE_TYPES = ("synchronous", "concurrent", "constant", "poisson", "sweep", "throughput")


def load_yaml(path: Path) -> Any:
    """Read a YAML file; a syntax error becomes a :class:`ConfigError` naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepdeckError(f"{path}: file not found.", "Check the path (or --catalog-dir).") from None
    except OSError as exc:
        raise SweepdeckError(f"{path}: cannot read ({exc.strerror}).") from None
    except UnicodeDecodeError as exc:
        raise SweepdeckError(
            f"{path}: not a UTF-8 text file (byte {exc.start}).", f"Fix {path.name} and try again."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SweepdeckError(
            f"{path}: malformed YAML at {where}: {problem}.", f"Fix {path.name} and try again."
        ) from None


def _need(mapping: Any, key: str, typ: type | tuple[type, ...], path: Path, where: str, expected: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ConfigError(path, f"{where}.{key}" if where else key, expected + " (missing)")
    value = mapping[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ConfigError(path, f"{where}.{key}" if where else key, expected, value)
    return value


def _opt_int(mapping: dict, key: str, path: Path, where: str) -> int | None:
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(path, f"{where}.{key}", "a positive integer", value)
    return value


# --------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class ContextCheck:
    """Whether a max_model_len suits a model: ``pass``, ``warn`` or ``fail``, and why.

    Attributes:
        status: ``pass``, ``warn`` (the model's own limit is unknown and the
            length is above the catalog's recommendation) or ``fail`` (above
            the model's own context length).
        detail: One line for a pre-flight check or an error message.
        fix: What to do ('' when nothing is needed).
        limit: The model's context length, when known.
    """

    status: Literal["pass", "warn", "fail"]
    detail: str
    fix: str = ""
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model and its recommended vLLM settings.

    ``max_model_len``, ``max_num_seqs``, ``max_num_batched_tokens`` and ``tp``
    are recommendations (where a run starts). ``max_context`` is a fact: the
    model's own context length, the largest max_model_len vLLM accepts;
    ``context_source`` says where it came from (the catalog file, or
    sweepdeck's model facts when a user's catalog does not give it).
    """

    id: str
    aliases: tuple[str, ...] = ()
    tp: tuple[int, ...] = (1,)
    max_model_len: int | None = None
    max_context: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    size_gb: float | None = None
    download_time: str = ""
    notes: str = ""
    trust_remote_code: bool = False
    context_source: str = ""

    @property
    def short(self) -> str:
        """A short DNS-safe name (``meta-llama/Llama-2-7b-hf`` → ``llama-2-7b-hf``)."""
        return dns_label(self.id.rsplit("/", 1)[-1])

    @property
    def context_limit(self) -> int | None:
        """The largest max_model_len this model accepts, or None when it is not known.

        Only the model's own context length (``max_context``) is a limit. The
        recommended ``max_model_len`` never is: upstream catalogs carry only the
        recommendation, and treating it as a limit refused lengths the model
        handles (Llama 3.3 70B recommends 8192 and accepts 131072).
        """
        return self.max_context

    def check_context(self, max_model_len: int) -> ContextCheck:
        """Judge ``max_model_len`` against the model's context length.

        Above a known limit fails (vLLM would refuse to start). With no known
        limit, a length above the recommendation is a warning: it may be fine,
        but nothing can confirm it before vLLM reads the model's config.json.
        """
        limit = self.context_limit
        if limit is not None:
            if max_model_len > limit:
                where = f", from {self.context_source}" if self.context_source else ""
                return ContextCheck(
                    "fail",
                    f"max_model_len {max_model_len} is above {self.id}'s limit of {limit} tokens "
                    f"(its context length{where}).",
                    f"Use max_model_len={limit} or less.",
                    limit,
                )
            return ContextCheck("pass", f"{max_model_len} (the model accepts up to {limit:,})", "", limit)
        rec = self.max_model_len
        if rec is not None and max_model_len > rec:
            return ContextCheck(
                "warn",
                f"max_model_len {max_model_len} is above the catalog's recommended {rec}, and {self.id}'s own "
                "context length is not known to sweepdeck.",
                "vLLM refuses a length above the model's max_position_embeddings when it starts; add "
                f"max_context for {self.id} to your known-models.yaml to have it checked before launch.",
            )
        return ContextCheck("pass", f"{max_model_len} (the model's own context length is not known)")

    @property
    def large(self) -> bool:
        return (self.size_gb or 0) > 50

    def download_warning(self) -> str:
        """A warning that a large model takes a while to download, or '' for small models."""
        if not self.large:
            return ""
        time_txt = self.download_time.replace(" minutes", "") if self.download_time else "a long"
        return (
            f"This is a {self.size_gb:g} GB model; if not already cached the download takes "
            f"{time_txt} minutes."
        )


@dataclass(slots=True)
class ModelCatalog:
    """Models by id, plus their aliases and the aliases that need a choice."""

    models: dict[str, ModelInfo]
    aliases: dict[str, str]
    ambiguous: dict[str, dict[str, Any]]
    default_image: str
    custom_images: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> ModelCatalog:
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(path, "", "a mapping with aliases, ambiguous_aliases, recommended_settings", data)
        aliases_raw = _mapping(data, "aliases", path, "a mapping of alias to model id")
        ambiguous = _ambiguous_aliases(data, path)
        settings = _mapping(data, "recommended_settings", path, "a mapping of model id to settings")
        models = {model_id: _model_info(model_id, rec, path) for model_id, rec in settings.items()}
        aliases = _aliases(aliases_raw, models, path)
        for alias, entry in ambiguous.items():
            for opt in entry["options"]:
                if not isinstance(opt["id"], str):
                    raise ConfigError(path, f"ambiguous_aliases.{alias}.options.id", "a model id string", opt["id"])
                if opt["id"] not in models:
                    models[opt["id"]] = ModelInfo(id=opt["id"])
        models = _with_known_context(models, path)
        image = data.get("default_vllm_image") or "vllm/vllm-openai:latest"
        if not isinstance(image, str):
            raise ConfigError(path, "default_vllm_image", "an image reference string", image)
        custom_images = _mapping(data, "custom_images", path, "a mapping of name to {image, tags, ...}")
        return cls(
            models=models,
            aliases=aliases,
            ambiguous={str(k).lower(): v for k, v in ambiguous.items()},
            default_image=image,
            custom_images=custom_images,
            path=path,
        )

    def names(self) -> list[str]:
        """Every id and alias a user may type."""
        return sorted(set(self.models) | set(self.aliases) | set(self.ambiguous))

    def is_ambiguous(self, name: str) -> bool:
        return name.strip().lower() in self.ambiguous

    def options(self, alias: str) -> list[ModelInfo]:
        """The models an ambiguous alias may mean."""
        entry = self.ambiguous[alias.strip().lower()]
        return [self.models.get(o["id"], ModelInfo(id=o["id"])) for o in entry["options"]]

    def resolve(self, name: str, choice: str | None = None) -> ModelInfo:
        """Find a model by id (case-insensitive) or alias.

        Args:
            name: What the user typed.
            choice: For an ambiguous alias, the chosen option's id (or label).

        Raises:
            AmbiguousModel: ``name`` is ambiguous and no valid ``choice`` was given.
            UnknownModel: ``name`` matches nothing; the error lists close matches.
        """
        key = name.strip()
        low = key.lower()
        if key in self.models:
            return self.models[key]
        by_lower = {m.lower(): m for m in self.models}
        if low in by_lower:
            return self.models[by_lower[low]]
        # An ambiguous alias is asked about even if a (user's) catalog also lists
        # it as a plain alias: never guess.
        if low in self.aliases and low not in self.ambiguous:
            return self.models[self.aliases[low]]
        if low not in self.ambiguous:
            # The part after the org ("Llama-2-7b-hf") names a model when it is unique.
            by_short = [m for m in self.models if m.rsplit("/", 1)[-1].lower() == low]
            if len(by_short) == 1:
                return self.models[by_short[0]]
        if low in self.ambiguous:
            entry = self.ambiguous[low]
            if choice:
                for opt in entry["options"]:
                    if choice in (opt["id"], opt.get("label")) or choice.lower() == opt["id"].lower():
                        return self.models.get(opt["id"], ModelInfo(id=opt["id"]))
            raise AmbiguousModel(key, entry.get("prompt", "Which model do you mean?"), entry["options"])
        suggestions = difflib.get_close_matches(low, self.names(), n=4, cutoff=0.6)
        raise UnknownModel(key, suggestions, sorted(self.aliases))



def _mapping(data: dict[str, Any], key: str, path: Path, expected: str) -> dict[Any, Any]:
    """``data[key]`` as a mapping (missing or empty: ``{}``)."""
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(path, key, expected, value)
    return value


def _ambiguous_aliases(data: dict[str, Any], path: Path) -> dict[Any, Any]:
    ambiguous = _mapping(data, "ambiguous_aliases", path, "a mapping of alias to {options, prompt}")
    for alias, entry in ambiguous.items():
        opts = entry.get("options") if isinstance(entry, dict) else None
        if not isinstance(opts, list) or not all(isinstance(o, dict) and "id" in o for o in opts):
            raise ConfigError(path, f"ambiguous_aliases.{alias}.options", "a list of {id, label, description}", opts)
    return ambiguous


def _model_info(model_id: str, rec: Any, path: Path) -> ModelInfo:
    """One ``recommended_settings`` entry, checked."""
    where = f"recommended_settings.{model_id}"
    if not isinstance(rec, dict):
        raise ConfigError(path, where, "a mapping of settings", rec)
    tp = rec.get("tp", [1])
    if isinstance(tp, int) and not isinstance(tp, bool):
        tp = [tp]
    if not isinstance(tp, list) or not tp or not all(isinstance(t, int) and t > 0 for t in tp):
        raise ConfigError(path, f"{where}.tp", "a list of positive integers", tp)
    size = rec.get("model_size_gb")
    if size is not None and (not isinstance(size, (int, float)) or isinstance(size, bool)):
        raise ConfigError(path, f"{where}.model_size_gb", "a number", size)
    return ModelInfo(
        id=model_id,
        tp=tuple(tp),
        max_model_len=_opt_int(rec, "max_model_len", path, where),
        max_context=_opt_int(rec, "max_context", path, where),
        max_num_seqs=_opt_int(rec, "max_num_seqs", path, where),
        max_num_batched_tokens=_opt_int(rec, "max_num_batched_tokens", path, where),
        size_gb=size,
        download_time=str(rec.get("estimated_download_time", "") or ""),
        notes=str(rec.get("notes", "") or ""),
        trust_remote_code=bool(rec.get("requires_trust_remote_code", False)),
        context_source=path.name if rec.get("max_context") is not None else "",
    )


def _aliases(aliases_raw: dict[Any, Any], models: dict[str, ModelInfo], path: Path) -> dict[str, str]:
    """Alias (lower case) → model id; a model only an alias names is added, and every model gets its aliases."""
    aliases: dict[str, str] = {}
    for alias, target in aliases_raw.items():
        if not isinstance(target, str):
            raise ConfigError(path, f"aliases.{alias}", "a model id string", target)
        aliases[str(alias).lower()] = target
        if target not in models:
            models[target] = ModelInfo(id=target)
    for mid in list(models):
        own = tuple(a for a, t in aliases.items() if t == mid)
        models[mid] = replace(models[mid], aliases=own)
    return aliases


FACTS_SOURCE = "sweepdeck's model facts"


def known_context_lengths() -> dict[str, int]:
    """Model id (lower case) -> context length, from the shipped catalog's ``max_context``.

    These are facts about the models (from each model's config.json), so they
    hold whatever catalog a user loads; an unreadable shipped file gives none.
    """
    return dict(_shipped_context_lengths())


@lru_cache(maxsize=1)
def _shipped_context_lengths() -> tuple[tuple[str, int], ...]:
    try:
        data = load_yaml(DATA_DIR / MODELS_FILE)
    except SweepdeckError:
        return ()
    settings = data.get("recommended_settings") if isinstance(data, dict) else None
    if not isinstance(settings, dict):
        return ()
    out = []
    for model_id, rec in settings.items():
        value = rec.get("max_context") if isinstance(rec, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out.append((str(model_id).lower(), value))
    return tuple(out)


def _with_known_context(models: dict[str, ModelInfo], path: Path) -> dict[str, ModelInfo]:
    """Fill a missing ``max_context`` from sweepdeck's model facts (user catalogs only)."""
    try:
        if path.resolve() == (DATA_DIR / MODELS_FILE).resolve():
            return models
    except OSError:
        pass
    facts = known_context_lengths()
    out = {}
    for mid, info in models.items():
        known = facts.get(mid.lower())
        if info.max_context is None and known is not None:
            info = replace(info, max_context=known, context_source=FACTS_SOURCE)
        out[mid] = info
    return out


# ------------------------------------------------------------------ workloads


@dataclass(frozen=True, slots=True)
class WorkloadProfile:
    """A load profile: token distributions, request count and rate.

    ``rate_type`` is one of :data:`RATE_TYPES`. ``sweep`` (the presets' own
    value) is run by the built-in runner as a constant rate of ``rate``.
    """

    app: str
    rate_type: str = "sweep"
    max_requests: int = 50
    rate: float = 12
    random_seed: int = 42
    prefix_tokens: int = 0
    prompt_tokens: int = 256
    prompt_tokens_stdev: int = 0
    prompt_tokens_min: int = 1
    prompt_tokens_max: int | None = None
    output_tokens: int = 128
    output_tokens_stdev: int = 0
    output_tokens_min: int = 1
    output_tokens_max: int | None = None
    max_seconds: float | None = None
    max_concurrency: int | None = None

    @property
    def custom(self) -> bool:
        return self.app == "custom"

    def to_values(self) -> dict[str, Any]:
        """The ``stack.workload`` form of a values.yaml."""
        data = {
            k: getattr(self, k)
            for k in (
                "prefix_tokens", "prompt_tokens", "prompt_tokens_stdev", "prompt_tokens_min",
                "prompt_tokens_max", "output_tokens", "output_tokens_stdev", "output_tokens_min",
                "output_tokens_max",
            )
        }
        profile: dict[str, Any] = {
            "rate_type": self.rate_type,
            "max_requests": self.max_requests,
            "rate": self.rate,
            "random_seed": self.random_seed,
            "data": {k: v for k, v in data.items() if v is not None},
        }
        return {"app": self.app, "profile": profile}


_INT_FIELDS = (
    "max_requests", "random_seed", "prefix_tokens", "prompt_tokens", "prompt_tokens_stdev",
    "prompt_tokens_min", "prompt_tokens_max", "output_tokens", "output_tokens_stdev",
    "output_tokens_min", "output_tokens_max", "max_concurrency",
)


def make_workload(app: str, values: dict[str, Any], source: str = "workload") -> WorkloadProfile:
    """Build and validate a profile from flat or preset-shaped values.

    ``values`` may be the preset's ``profile`` mapping (with a nested ``data``)
    or a flat mapping of field names. Missing max/min get the template's
    defaults (max = 2 × mean).

    Raises:
        SweepdeckError: a value is not a number, negative, or min > max.
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key == "data" and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    known = set(WorkloadProfile.__dataclass_fields__) - {"app"}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise SweepdeckError(
            f"{source}: unknown workload field(s): {', '.join(unknown)}.",
            "Known fields: " + ", ".join(sorted(known)),
        )
    # Every known field is a whole number, a positive number or the rate type (None keeps the default).
    clean: dict[str, Any] = {
        key: None if value is None else _WORKLOAD_FIELD_CHECKS[key](source, key, value)
        for key, value in flat.items()
    }
    for prefix in ("prompt_tokens", "output_tokens"):
        _fill_token_bounds(source, clean, prefix)
    if clean.get("max_requests") == 0:
        raise SweepdeckError(f"{source}: max_requests must be at least 1.")
    return WorkloadProfile(app=app, **clean)


def _whole_number(source: str, key: str, value: Any) -> int:
    """A non-negative integer: no bools, no fractions, no strings that only int() accepts ('+5', '1_000')."""
    try:
        num = int(value) if not isinstance(value, bool) else None
        if num is None or (isinstance(value, float) and value != int(value)):
            raise ValueError
        if isinstance(value, str) and not re.fullmatch(r"\s*\d+\s*", value):
            raise ValueError
    except (TypeError, ValueError):
        raise SweepdeckError(f"{source}: {key} must be a whole number, got {value!r}.") from None
    if num < 0:
        raise SweepdeckError(f"{source}: {key} must not be negative, got {num}.")
    return num


def _positive_number(source: str, key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SweepdeckError(f"{source}: {key} must be a number, got {value!r}.") from None
    if number <= 0:
        raise SweepdeckError(f"{source}: {key} must be positive, got {value!r}.")
    return number


def _rate_type(source: str, key: str, value: Any) -> str:
    if value not in RATE_TYPES:
        raise SweepdeckError(
            f"{source}: rate_type {value!r} is not one of {', '.join(RATE_TYPES)}."
        )
    return str(value)


# How each WorkloadProfile field (but ``app``) is checked; a test holds it to the dataclass's fields.
_WORKLOAD_FIELD_CHECKS: dict[str, Callable[[str, str, Any], Any]] = {
    **dict.fromkeys(_INT_FIELDS, _whole_number),
    "rate": _positive_number,
    "max_seconds": _positive_number,
    "rate_type": _rate_type,
}


def _fill_token_bounds(source: str, clean: dict[str, Any], prefix: str) -> None:
    """Give a token distribution (``prompt_tokens``/``output_tokens``) its template min/max and check min <= max."""
    mean = clean.get(prefix)
    if mean is not None and mean <= 0:
        raise SweepdeckError(f"{source}: {prefix} must be at least 1, got {mean}.")
    if mean is not None:
        clean.setdefault(f"{prefix}_min", 1)
        if clean.get(f"{prefix}_max") is None:
            clean[f"{prefix}_max"] = mean * 2
    lo, hi = clean.get(f"{prefix}_min"), clean.get(f"{prefix}_max")
    if lo is not None and hi is not None and lo > hi:
        raise SweepdeckError(f"{source}: {prefix}_min ({lo}) is larger than {prefix}_max ({hi}).")


@dataclass(frozen=True, slots=True)
class WorkloadPreset:
    name: str
    keywords: tuple[str, ...]
    description: str
    profile: WorkloadProfile
    use_case: str = ""


@dataclass(slots=True)
class WorkloadCatalog:
    """The presets by name and the custom-workload template."""

    presets: dict[str, WorkloadPreset]
    custom_defaults: dict[str, Any]
    path: Path | None = None
    custom_required: tuple[str, ...] = ("prompt_tokens", "output_tokens")

    @classmethod
    def load(cls, path: Path) -> WorkloadCatalog:
        data = load_yaml(path)
        if not isinstance(data, dict) or not isinstance(data.get("mappings"), dict):
            raise ConfigError(path, "mappings", "a mapping of preset name to {keywords, description, profile}")
        summary = data.get("preset_summary") or []
        if not isinstance(summary, list):
            raise ConfigError(path, "preset_summary", "a list of {name, prompt, output, use_case}", summary)
        use_cases = {e.get("name"): e.get("use_case", "") for e in summary if isinstance(e, dict)}
        presets: dict[str, WorkloadPreset] = {}
        for name, entry in data["mappings"].items():
            where = f"mappings.{name}"
            if not isinstance(entry, dict):
                raise ConfigError(path, where, "a mapping", entry)
            prof = _need(entry, "profile", dict, path, where, "a profile mapping")
            keywords = entry.get("keywords") or []
            if not isinstance(keywords, list):
                raise ConfigError(path, f"{where}.keywords", "a list of words", keywords)
            values = {k: v for k, v in prof.items() if k != "app"}
            try:
                profile = make_workload(str(name), values, source=f"{path}: {where}.profile")
            except SweepdeckError as exc:
                raise SweepdeckError(exc.message, f"Fix {path.name} and try again.") from None
            presets[str(name)] = WorkloadPreset(
                name=str(name),
                keywords=tuple(str(k).lower() for k in keywords),
                description=str(entry.get("description", "")),
                profile=profile,
                use_case=str(use_cases.get(name, "")),
            )
        defaults: dict[str, Any] = {}
        template = data.get("custom_workload_template") or {}
        if not isinstance(template, dict):
            raise ConfigError(path, "custom_workload_template",
                              "a mapping with required_params and optional_params", template)
        optional = template.get("optional_params") or {}
        if not isinstance(optional, dict):
            raise ConfigError(path, "custom_workload_template.optional_params",
                              "a mapping of parameter to {default, description}", optional)
        for key, spec in optional.items():
            if isinstance(spec, dict):
                defaults[key] = spec.get("default")
        required = template.get("required_params") or ["prompt_tokens", "output_tokens"]
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ConfigError(path, "custom_workload_template.required_params", "a list of parameter names", required)
        # Check the template's defaults now, not when a user first asks for a custom workload.
        try:
            make_workload("custom", {k: v for k, v in defaults.items() if v is not None},
                          source=f"{path}: custom_workload_template")
        except SweepdeckError as exc:
            raise SweepdeckError(exc.message, f"Fix {path.name} and try again.") from None
        return cls(presets=presets, custom_defaults=defaults, path=path, custom_required=tuple(required))

    def match(self, text: str) -> WorkloadPreset:
        """Find a preset by name or keyword; a misspelling is never taken for a name.

        ``chatbot-style`` → chatbot; ``conversational`` → chatsweep. An exact
        preset name always wins over a keyword. ``chatbt`` matches nothing: the
        error names the close spellings (:meth:`suggest`) for the user to choose.

        Raises:
            UnknownWorkload: nothing matches (with the close spellings, if any).
        """
        word = text.strip().lower()
        if word in self.presets:
            return self.presets[word]
        for suffix in ("-style", "-like", "-type", " style", " workload", "-workload"):
            if word.endswith(suffix) and word[: -len(suffix)] in self.presets:
                return self.presets[word[: -len(suffix)]]
        stem = re.split(r"[-_ ]", word)[0]
        if stem in self.presets:
            return self.presets[stem]
        for preset in self.presets.values():
            if word in preset.keywords:
                return preset
        for preset in self.presets.values():
            if stem in preset.keywords:
                return preset
        raise UnknownWorkload(text, list(self.presets), self.suggest(word))

    def suggest(self, text: str, n: int = 3) -> list[str]:
        """Preset names close to ``text`` in spelling (a keyword's spelling suggests its preset)."""
        word = text.strip().lower()
        names = difflib.get_close_matches(word, list(self.presets), n=n, cutoff=0.6)
        by_keyword = {k: p.name for p in self.presets.values() for k in p.keywords}
        for keyword in difflib.get_close_matches(word, list(by_keyword), n=n, cutoff=0.75):
            if by_keyword[keyword] not in names:
                names.append(by_keyword[keyword])
        return names[:n]

    def words(self) -> list[str]:
        """Every preset name and keyword (for suggestions)."""
        return sorted(set(self.presets) | {k for p in self.presets.values() for k in p.keywords})

    def custom(self, **values: Any) -> WorkloadProfile:
        """A custom workload; unspecified fields take the template's defaults.

        Raises:
            SweepdeckError: a required parameter (``prompt_tokens``,
                ``output_tokens``) is missing or a value is invalid.
        """
        missing = [r for r in self.custom_required if values.get(r) is None]
        if missing:
            raise SweepdeckError(
                f"A custom workload needs {' and '.join(missing)}.",
                "Example: custom workload prompt_tokens=500 output_tokens=200",
            )
        merged = {k: v for k, v in self.custom_defaults.items() if v is not None}
        merged.update(values)
        return make_workload("custom", merged, source="custom workload")


# ------------------------------------------------------------------ vllm args


@dataclass(frozen=True, slots=True)
class VllmArg:
    name: str
    type: str
    description: str = ""
    category: str = ""
    default: Any = None
    values: tuple[str, ...] = ()
    values_yaml_path: str | None = None
    notes: str = ""
    auto_configured: bool = False
    requires_custom_image: bool = False


@dataclass(slots=True)
class VllmArgCatalog:
    args: dict[str, VllmArg]
    recipes: dict[str, dict[str, Any]]
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> VllmArgCatalog:
        data = load_yaml(path)
        if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
            raise ConfigError(path, "categories", "a mapping of category to a list of arguments")
        lists = {}
        for key in ("auto_configured_args", "custom_image_args"):
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(path, key, "a list of argument names", value)
            lists[key] = set(value)
        auto, custom = lists["auto_configured_args"], lists["custom_image_args"]
        recipes = data.get("recipes") or {}
        if not isinstance(recipes, dict):
            raise ConfigError(path, "recipes", "a mapping of recipe name to {description, args}", recipes)
        args: dict[str, VllmArg] = {}
        for cat, entries in data["categories"].items():
            if not isinstance(entries, list):
                raise ConfigError(path, f"categories.{cat}", "a list of arguments", entries)
            for i, entry in enumerate(entries):
                name = _need(entry, "name", str, path, f"categories.{cat}[{i}]",
                             "an argument name like --max-model-len")
                allowed = entry.get("values") or ()
                if not isinstance(allowed, (list, tuple)):
                    raise ConfigError(path, f"categories.{cat}[{i}].values", "a list of allowed values", allowed)
                args[name] = VllmArg(
                    name=name,
                    type=str(entry.get("type", "string")),
                    description=str(entry.get("description", "")),
                    category=str(cat),
                    default=entry.get("default"),
                    values=tuple(str(v) for v in allowed),
                    values_yaml_path=entry.get("values_yaml_path"),
                    notes=str(entry.get("notes", "")),
                    auto_configured=bool(entry.get("auto_configured")) or name in auto,
                    requires_custom_image=bool(entry.get("requires_custom_image")) or name in custom,
                )
        return cls(args=args, recipes=recipes, path=path)

    def check(self, arg: str) -> str:
        """Validate one ``--name[=value]`` argument against the reference.

        Returns:
            A warning for an argument the reference does not know ('' when known).

        Raises:
            SweepdeckError: a known argument's value has the wrong type or is not
                one of its allowed values.
        """
        name, _, value = arg.partition("=")
        ref = self.args.get(name)
        if ref is None:
            return f"{name} is not in the vLLM argument reference; it is passed through as given."
        if ref.type == "flag" and value:
            raise SweepdeckError(f"{name} is a flag and takes no value (got {value!r}).")
        if value and ref.type == "integer" and not re.fullmatch(r"-?\d+", value):
            raise SweepdeckError(f"{name} needs a whole number, got {value!r}.")
        if value and ref.type == "float":
            try:
                float(value)
            except ValueError:
                raise SweepdeckError(f"{name} needs a number, got {value!r}.") from None
        if value and ref.type == "enum" and ref.values and value not in ref.values:
            raise SweepdeckError(f"{name} must be one of {', '.join(ref.values)}, got {value!r}.")
        return ""


# ------------------------------------------------------------------- bundle


@dataclass
class Catalogs:
    """All three catalogs from one directory (missing files fall back to the defaults)."""

    directory: Path

    @cached_property
    def models(self) -> ModelCatalog:
        return ModelCatalog.load(self._file(MODELS_FILE))

    @cached_property
    def workloads(self) -> WorkloadCatalog:
        return WorkloadCatalog.load(self._file(WORKLOADS_FILE))

    @cached_property
    def vllm_args(self) -> VllmArgCatalog:
        return VllmArgCatalog.load(self._file(VLLM_ARGS_FILE))

    def _file(self, name: str) -> Path:
        own = self.directory / name
        if own.exists():
            return own
        # A user's catalog dir may hold only some files (e.g. their own
        # known-models.yaml); the rest come from the defaults.
        return DATA_DIR / name

    def validate(self) -> None:
        """Load everything now so errors surface before any work starts."""
        _ = self.models, self.workloads, self.vllm_args


def load_catalogs(directory: str | Path | None = None) -> Catalogs:
    """Catalogs from ``directory`` or the shipped defaults.

    Raises:
        SweepdeckError: ``directory`` does not exist.
    """
    if directory is None:
        return Catalogs(DATA_DIR)
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise SweepdeckError(f"Catalog directory {path} does not exist.",
                             "Pass an existing directory to --catalog-dir.")
    return Catalogs(path)


_DNS_BAD = re.compile(r"[^a-z0-9-]+")


def dns_label(text: str, limit: int = 63) -> str:
    """Lower-case, DNS-1123-safe version of ``text`` (at most ``limit`` characters)."""
    out = _DNS_BAD.sub("-", text.lower().replace(".", "-").replace("_", "-"))
    out = re.sub(r"-{2,}", "-", out).strip("-")
    return out[:limit].rstrip("-") or "x"
