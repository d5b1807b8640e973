"""ExperimentSpec: what to run, and where each value came from.

Every field records its :class:`Source` and the value it replaced, so a review
can list exactly what changed from the catalog or base values file
("CHANGES FROM values.yaml") and classify it as MATCH / SUBSET / OVERRIDE.
"""

from __future__ import annotations

import datetime as _dt
import re
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from config import inference_perf
from config.catalog import Catalogs, ModelInfo, WorkloadProfile, dns_label, make_workload
from config.errors import SweepdeckError

DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048
# The vLLM container's memory and CPU (limit = request), as the BLIS values give them.
DEFAULT_MEMORY = "128Gi"
DEFAULT_CPU = "32"

# Characters that have a meaning to a shell. User values never reach a shell
# string (remote commands are built with shlex.join), but values that end up
# in names, paths and labels are refused early with a clear message.
SHELL_META = re.compile(r"[;&|`$<>(){}\[\]*?!\\'\"\n\r\t #~]")


class Source(StrEnum):
    """Where a field's value came from."""

    DEFAULT = "default"          # sweepdeck's built-in default
    CATALOG = "catalog"          # known-models.yaml / workload-presets.yaml
    VALUES = "values.yaml"       # the base values file of a profile
    USER = "user"                # typed by the user (CLI flag, quick command, form)
    AUTO = "auto-configured"     # derived by sweepdeck or the pipeline
    FIX = "recovery fix"         # chosen in the recovery dialog
    PROFILE = "profile"          # the backend profile (its gpu / gpus / gpu_product)


USER_SOURCES = (Source.USER, Source.FIX)


@dataclass(frozen=True, slots=True)
class Origin:
    """Provenance of one field: its source and the value it replaced."""

    source: Source
    base: Any = None


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The vLLM server configuration."""

    image: str
    tp: int = 1
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    extra_args: tuple[str, ...] = ()
    memory: str = DEFAULT_MEMORY  # Kubernetes quantity (128Gi); limit and request
    cpu: str = DEFAULT_CPU        # cores (32, 0.5) or millicores (500m); limit and request
    gpu: str | None = None        # GPU catalog name (config/data/gpus.yaml) for the memory planner; not a vLLM flag

    def serve_args(self) -> list[str]:
        """vLLM ``serve`` arguments for these settings (without the model)."""
        args = [
            f"--tensor-parallel-size={self.tp}",
            f"--max-model-len={self.max_model_len}",
            f"--max-num-batched-tokens={self.max_num_batched_tokens}",
            f"--max-num-seqs={self.max_num_seqs}",
        ]
        return args + list(self.extra_args)


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the spec and its base values."""

    field: str
    base: Any
    value: Any
    source: Source

    @property
    def kind(self) -> str:
        """MATCH, SUBSET or OVERRIDE, in the BLIS skill's sense."""
        if self.base == self.value:
            return "MATCH"
        base, value = self.base, self.value
        if isinstance(base, (list, tuple)):
            vals = value if isinstance(value, (list, tuple)) else [value]
            if vals and all(v in base for v in vals):
                return "SUBSET"
        return "OVERRIDE"

    def describe(self) -> str:
        if self.kind == "MATCH":
            return f"{self.field}: {_fmt(self.value)} (matches base)"
        return f"{self.field}: {_fmt(self.base)} -> {_fmt(self.value)} ({self.kind}, {self.source})"


#: Backends whose workload sweepdeck's own load generator drives (``backends/loadgen``).
LOADGEN_BACKENDS = ("local", "slurm")


def rate_text(workload: WorkloadProfile, backend: str | None = None) -> str:
    """How the workload's requests arrive, in the words its results use (one vocabulary).

    sweepdeck's load generator writes ``"mode": "constant 5 req/s"`` into
    ``results.json``; the screens say the same words. A preset's ``sweep`` is
    one constant rate per run there (sweeping rates is the orchestrator's
    job), while guidellm (Tekton) runs a sweep of ``rate`` benchmarks.
    """
    rt, rate, cap = workload.rate_type, workload.rate, workload.max_concurrency
    if rt == "sweep" and backend is not None and backend not in LOADGEN_BACKENDS:
        return f"sweep of {rate:g} benchmarks, synchronous to throughput (guidellm)"
    if rt == "synchronous":
        return "1 concurrent (synchronous)"
    if rt == "concurrent":
        return f"{cap or int(rate or 0)} concurrent"
    if rt == "throughput":
        return f"{cap} concurrent (throughput)" if cap else "throughput: as many as the server takes"
    kind = "poisson" if rt == "poisson" else "constant"
    text = f"{kind} {rate:g} req/s" + (f", at most {cap} in flight" if cap else "")
    if rt == "sweep":
        text += " (the preset's sweep: one rate per run)"
    return text


def _fit_range(values: dict[str, Any], name: str) -> None:
    """Widen min/max when a new mean falls outside them (the preset's range was for its own mean)."""
    mean = values[name]
    if isinstance(mean, str) and mean.strip().isdigit():
        mean = values[name] = int(mean)
    if not isinstance(mean, int) or isinstance(mean, bool):
        return
    if values.get(f"{name}_max") is not None and mean > values[f"{name}_max"]:
        values[f"{name}_max"] = mean * 2
    if values.get(f"{name}_min") is not None and mean < values[f"{name}_min"]:
        values[f"{name}_min"] = 1


def _fmt(value: Any) -> str:
    if isinstance(value, dict):  # an inference-perf load stage
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]" if value else "(none)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "(none)" if value is None else str(value)


# Field paths a spec exposes to set()/get(), changes() and Fix.changes.
ENGINE_FIELDS = ("image", "tp", "max_model_len", "max_num_batched_tokens", "max_num_seqs", "extra_args",
                 "memory", "cpu", "gpu")
TOP_FIELDS = ("model", "backend", "profile", "namespace", "experiment_id", "workload")
# Single workload numbers (``workload.rate``...) so a tweak to a preset shows up
# as its own change instead of hiding behind an unchanged preset name.
WORKLOAD_FIELDS = tuple(f for f in WorkloadProfile.__dataclass_fields__ if f != "app")
FIELDS = (
    TOP_FIELDS
    + tuple(f"engine.{f}" for f in ENGINE_FIELDS)
    + ("tp_sweep",)
    + tuple(f"workload.{f}" for f in WORKLOAD_FIELDS)
)
BACKEND_NAMES = ("local", "slurm", "tekton", "argo")
# vLLM flags the spec owns as fields; as free-form extra args they would be
# passed twice with conflicting values.
ENGINE_FLAGS = {
    "--tensor-parallel-size": "tp",
    "-tp": "tp",
    "--max-model-len": "max_model_len",
    "--max-num-seqs": "max_num_seqs",
    "--max-num-batched-tokens": "max_num_batched_tokens",
}
# Flags the backend sets itself (where the server listens, what it serves).
BACKEND_FLAGS = ("--host", "--port", "--model")
# Choices with no base to differ from (a first pick of model or workload is not a change).
_CHOICES = ("model", "workload", "namespace", "experiment_id", "profile", "backend")


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """Everything needed to run one experiment, with provenance.

    Use :func:`build_spec` to make one and :meth:`set` to change a field; both
    keep :attr:`origins` right.
    """

    model: str
    backend: str
    workload: WorkloadProfile
    engine: EngineSettings
    experiment_id: str
    profile: str | None = None
    namespace: str | None = None
    parent: str | None = None
    tp_sweep: tuple[int, ...] = ()
    origins: dict[str, Origin] = field(default_factory=dict)
    # The inference-perf profile template when the values use that harness (config/inference_perf.py);
    # its settings are the paths ``profile_template.<key>``.
    profile_template: dict[str, Any] | None = None

    # ---------------------------------------------------------------- access

    def get(self, path: str) -> Any:
        """The value at a field path (``engine.tp``, ``workload.rate``, ``namespace``...).

        ``workload`` gives the workload's name; ``self.workload`` is the profile.
        """
        if path.startswith("engine."):
            return getattr(self.engine, path.split(".", 1)[1])
        if path.startswith("workload."):
            return getattr(self.workload, path.split(".", 1)[1])
        if path == "workload":
            return self.workload.app
        if path.startswith(inference_perf.PREFIX):
            return inference_perf.get_path(self.profile_template, path[len(inference_perf.PREFIX):])
        return getattr(self, path)

    def source(self, path: str) -> Source:
        origin = self.origins.get(path)
        return origin.source if origin else Source.DEFAULT

    def set(self, path: str, value: Any, source: Source = Source.USER) -> ExperimentSpec:
        """A copy with ``path`` set to ``value``, recording the source and the old value.

        The first change keeps the original base, so a field changed twice
        still diffs against the catalog/values value. TP and the TP sweep stay
        consistent: setting ``engine.tp`` while a sweep exists narrows the sweep
        to that TP, and setting ``tp_sweep`` makes its first entry the TP.
        Setting ``workload`` to a profile of another name forgets earlier
        ``workload.*`` tweaks (they belonged to the old profile); a profile of
        the same name (a custom workload re-described) records each number
        that differs as a ``workload.*`` change.

        Raises:
            SweepdeckError: unknown field or invalid value.
        """
        if path.startswith(inference_perf.PREFIX):
            return self._set_template(path, value, source)
        if path not in FIELDS:
            raise SweepdeckError(f"Unknown setting {path!r}.", "Settings: " + ", ".join(FIELDS))
        value = _validate_field(path, value)
        if path == "workload" and isinstance(value, WorkloadProfile) and value.app == self.workload.app:
            # Same name, other numbers (a custom workload re-described): the
            # numbers that differ are the changes.
            return self._set_workload_numbers(value, source)
        new = self._set_one(path, value, source)
        if path == "engine.tp" and new.tp_sweep and new.tp_sweep != (value,):
            new = new._set_one("tp_sweep", (value,), source)
        elif path == "tp_sweep" and value and new.engine.tp != value[0]:
            new = new._set_one("engine.tp", value[0], source)
        return new

    def _set_template(self, path: str, value: Any, source: Source) -> ExperimentSpec:
        """Set one ``profile_template.<key>`` (converted to the key's type; see config/inference_perf.py)."""
        old = self.get(path)
        template = inference_perf.set_path(self.profile_template, path[len(inference_perf.PREFIX):], value)
        prior = self.origins.get(path)
        base = prior.base if prior and prior.source in USER_SOURCES else old
        return replace(self, profile_template=template, origins={**self.origins, path: Origin(source, base)})

    def _set_workload_numbers(self, profile: WorkloadProfile, source: Source) -> ExperimentSpec:
        origins = dict(self.origins)
        for name in WORKLOAD_FIELDS:
            old, new = getattr(self.workload, name), getattr(profile, name)
            if old == new:
                continue
            key = f"workload.{name}"
            prior = origins.get(key)
            base = prior.base if prior and prior.source in USER_SOURCES else old
            origins[key] = Origin(source, base)
        return replace(self, workload=profile, origins=origins)

    def _set_one(self, path: str, value: Any, source: Source) -> ExperimentSpec:
        old = self.get(path)
        prior = self.origins.get(path)
        base = prior.base if prior and prior.source in USER_SOURCES else old
        if prior and prior.source in USER_SOURCES and base is None and path in _CHOICES and source != prior.source:
            # A recovery fix that changes the user's own first choice (the model,
            # the workload) is a change from that choice.
            base = old
        origins = dict(self.origins)
        origins[path] = Origin(source, base)
        if path.startswith("engine."):
            return replace(self, engine=replace(self.engine, **{path.split(".", 1)[1]: value}), origins=origins)
        if path.startswith("workload."):
            name = path.split(".", 1)[1]
            values = {k: getattr(self.workload, k) for k in WORKLOAD_FIELDS}
            values[name] = value
            if name in ("prompt_tokens", "output_tokens"):
                _fit_range(values, name)
            profile = make_workload(self.workload.app, values, source="workload")
            return replace(self, workload=profile, origins=origins)
        if path == "workload":
            if not isinstance(value, WorkloadProfile):
                raise SweepdeckError("workload must be a workload profile.")
            for key in [k for k in origins if k.startswith("workload.")]:
                del origins[key]
            return replace(self, workload=value, origins=origins)
        return replace(self, **{path: value}, origins=origins)

    def user_fields(self) -> list[Change]:
        """Every field the user (or a recovery fix) set, including unchanged ones.

        Each :class:`Change` says MATCH, SUBSET or OVERRIDE against the base.
        A first choice with nothing to compare to (a model picked when no base
        named one) is left out.
        """
        out = []
        # the profile template's settings in review order (load, api, data), whatever order they were set in
        order = [inference_perf.PREFIX + p for p, _ in inference_perf.leaves(self.profile_template)]
        template_paths = tuple(sorted((k for k in self.origins if k.startswith(inference_perf.PREFIX)),
                                      key=lambda k: (order.index(k) if k in order else len(order), k)))
        for path in FIELDS + template_paths:
            origin = self.origins.get(path)
            if not origin or origin.source not in USER_SOURCES:
                continue
            if origin.base is None and path in _CHOICES:
                continue
            out.append(Change(path, origin.base, self.get(path), origin.source))
        swept = {c.field for c in out if c.field == "tp_sweep" and c.kind != "MATCH"}
        if swept:
            # TP follows the sweep; the sweep's SUBSET/OVERRIDE says it all.
            out = [c for c in out if c.field != "engine.tp"]
        return out

    def changes(self) -> list[Change]:
        """Fields whose value the user (or a recovery fix) changed from the base."""
        return [c for c in self.user_fields() if c.kind != "MATCH"]

    def diff(self, other: ExperimentSpec) -> list[Change]:
        """Fields that differ between ``other`` (the base) and this spec."""
        out = []
        for path in FIELDS:
            a, b = other.get(path), self.get(path)
            if a != b:
                out.append(Change(path, a, b, self.source(path)))
        return out

    def serve_command(self, base_command: list[str] | None = None, port: int | None = None,
                      host: str | None = None) -> list[str]:
        """The vLLM serve argv (``vllm serve MODEL ...`` unless a base command is given)."""
        argv = list(base_command or ["vllm", "serve"]) + [self.model]
        if host:
            argv += ["--host", host]
        if port:
            argv += ["--port", str(port)]
        return argv + self.engine.serve_args()

    def summary_lines(self) -> list[tuple[str, str]]:
        """(label, value) pairs in the BLIS skill's summary order."""
        w, e = self.workload, self.engine
        rows = [
            ("Experiment ID", self.experiment_id),
            ("Backend", self.backend + (f" ({self.profile})" if self.profile else "")),
        ]
        if self.namespace:
            rows.append(("Namespace", self.namespace))
        rows += [
            ("Model", self.model),
            ("Workload", w.app),
        ]
        if self.profile_template is not None:
            rows[-1] = ("Workload", "inference-perf profile template" if w.app == inference_perf.HARNESS
                        else f"{w.app} (as an inference-perf profile template)")
            rows += inference_perf.summary_rows(self.profile_template)
        else:
            rows += [
                ("Max Requests", str(w.max_requests)),
                ("Rate", rate_text(w, self.backend)),
                ("Prompt Tokens",
                 f"{w.prompt_tokens} (stdev {w.prompt_tokens_stdev}, {w.prompt_tokens_min}-{w.prompt_tokens_max})"),
                ("Output Tokens",
                 f"{w.output_tokens} (stdev {w.output_tokens_stdev}, {w.output_tokens_min}-{w.output_tokens_max})"),
            ]
        rows += [
            ("Image", e.image),
            ("Tensor Parallel", str(e.tp) + (f" (sweep {list(self.tp_sweep)})" if self.tp_sweep else "")),
            ("Max Model Len", str(e.max_model_len)),
            ("Max Batch Tokens", str(e.max_num_batched_tokens)),
            ("Max Num Seqs", str(e.max_num_seqs)),
            ("Resources", f"memory {e.memory}, CPU {e.cpu}, GPUs {e.tp} (= TP)"),
            ("Additional Args", " ".join(e.extra_args) or "(none)"),
        ]
        return rows

    # ------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        data = {
            "model": self.model,
            "backend": self.backend,
            "profile": self.profile,
            "namespace": self.namespace,
            "experiment_id": self.experiment_id,
            "parent": self.parent,
            "tp_sweep": list(self.tp_sweep),
            "workload": asdict(self.workload),
            "engine": {**asdict(self.engine), "extra_args": list(self.engine.extra_args)},
            "origins": {k: {"source": str(o.source), "base": _plain(o.base)} for k, o in self.origins.items()},
        }
        if self.profile_template is not None:
            data["profile_template"] = self.profile_template
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        try:
            workload = WorkloadProfile(**data["workload"])
            engine_data = dict(data["engine"])
            engine_data["extra_args"] = tuple(engine_data.get("extra_args") or ())
            engine = EngineSettings(**engine_data)
            origins = {
                k: Origin(Source(v["source"]), _unplain(v.get("base")))
                for k, v in (data.get("origins") or {}).items()
            }
            return cls(
                model=data["model"],
                backend=data["backend"],
                workload=workload,
                engine=engine,
                experiment_id=data["experiment_id"],
                profile=data.get("profile"),
                namespace=data.get("namespace"),
                parent=data.get("parent"),
                tp_sweep=tuple(data.get("tp_sweep") or ()),
                origins=origins,
                profile_template=data["profile_template"] if isinstance(data.get("profile_template"), dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SweepdeckError(f"Saved experiment spec is malformed ({exc}).") from None


def _plain(value: Any) -> Any:
    if isinstance(value, WorkloadProfile):
        return {"__workload__": asdict(value)}
    if isinstance(value, tuple):
        return list(value)
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and "__workload__" in value:
        return WorkloadProfile(**value["__workload__"])
    if isinstance(value, list):
        return tuple(value)
    return value


def _positive_int(path: str, value: Any) -> int:
    """An int > 0 from an int or a digit string; the message names the setting (``tp``, not ``engine.tp``)."""
    label = path[len("engine."):] if path.startswith("engine.") else path
    example = f"Example: {label.split('.')[-1]}=4"
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SweepdeckError(f"{label} must be a positive integer, got {value!r}.", example)
    return value


def check_safe(label: str, value: str, allow: str = "") -> str:
    """Refuse values with shell metacharacters or control characters.

    Args:
        label: What the value is, for the message (``model``, ``namespace``).
        value: The user's text.
        allow: Metacharacters that are legitimate for this value.
    """
    bad = sorted({c for c in value if SHELL_META.match(c) and c not in allow})
    if bad or not value.isprintable():
        shown = ", ".join(repr(c) for c in bad) or "control characters"
        raise SweepdeckError(
            f"The {label} {value!r} contains characters that are not allowed ({shown}).",
            f"Use only letters, digits and -._/:@+= in a {label}.",
        )
    return value


# registry[:port]/repository (lower case) [:tag] [@digest]
_IMAGE_RE = re.compile(
    r"^[a-z0-9][a-z0-9._\-/:]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{6,64})?$"
)


# Kubernetes quantities: 128Gi, 128G, 512Mi, 1e9 (bytes); CPU: 32, 0.5, 500m.
_MEMORY_RE = re.compile(r"(\d+(\.\d+)?|\.\d+)([KMGTPE]i|[kKMGTPE]|e\d+)?")
_CPU_RE = re.compile(r"(\d+(\.\d+)?|\.\d+)m?")


def _quantity(label: str, value: Any, pattern: re.Pattern[str], kind: str, example: str) -> str:
    """A positive Kubernetes quantity as text (``64Gi``, ``500m``); the message names ``label``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SweepdeckError(f"{label} must be {kind}, got {value!r}.", example)
    text = _fmt(value).strip() if not isinstance(value, str) else value.strip()
    number = re.match(r"[\d.]*", text).group(0)  # type: ignore[union-attr]  # [\d.]* matches every string
    if not pattern.fullmatch(text) or float(number or 0) <= 0:
        raise SweepdeckError(f"{label} must be {kind}, got {value!r}.", example)
    return text


def _validate_field(path: str, value: Any, where: str | None = None) -> Any:
    """``value`` checked and normalised for the spec field ``path`` (``where``: the name a message uses)."""
    if path in _POSITIVE_INT_FIELDS:
        return _positive_int(path, value)
    if path.startswith("workload."):
        return value  # make_workload validates the whole profile
    check = _FIELD_CHECKS.get(path)
    return value if check is None else check(value, where)


_POSITIVE_INT_FIELDS = ("engine.tp", "engine.max_model_len", "engine.max_num_batched_tokens", "engine.max_num_seqs")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _check_memory(value: Any, where: str | None) -> str:
    return _quantity(where or "memory", value, _MEMORY_RE, "a positive Kubernetes memory quantity",
                     "Example: memory=64Gi (or 128G, 512Mi)")


def _check_cpu(value: Any, where: str | None) -> str:
    return _quantity(where or "cpu", value, _CPU_RE, "a positive number of cores or millicores",
                     "Example: cpu=16 (or 0.5, 500m)")


def _check_image(value: Any, _where: str | None) -> str:
    value = str(value).strip()
    if not _IMAGE_RE.match(value):
        raise SweepdeckError(f"Image {value!r} is not a valid image reference.", "Example: ghcr.io/myorg/vllm:v1")
    return value


def _check_extra_args(value: Any, _where: str | None) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise SweepdeckError(f"Cannot parse vLLM arguments {value!r}: {exc}.") from None
    if not isinstance(value, (list, tuple)):
        raise SweepdeckError(f"vLLM arguments must be a list, got {value!r}.")
    args = tuple(str(a) for a in value)
    for arg in args:
        _check_extra_arg(arg)
    return args


def _check_extra_arg(arg: str) -> None:
    if not arg.startswith("-"):
        raise SweepdeckError(f"vLLM argument {arg!r} must start with --.", "Example: --enable-prefix-caching")
    check_safe("vLLM argument", arg, allow="")
    flag = arg.partition("=")[0]
    if flag in ENGINE_FLAGS:
        raise SweepdeckError(
            f"{flag} is an engine setting, not an extra argument.",
            f"Set {ENGINE_FLAGS[flag]} instead (e.g. {ENGINE_FLAGS[flag]}=4).",
        )
    if flag in BACKEND_FLAGS:
        raise SweepdeckError(
            f"{flag} is set by the backend and cannot be an extra argument.",
            "Change the port/host in the profile instead.",
        )


def _check_experiment_id(value: Any, _where: str | None) -> str:
    value = str(value)
    if not _DNS_LABEL_RE.fullmatch(value):
        raise SweepdeckError(
            f"Experiment id {value!r} is not DNS-safe.",
            "Use lower-case letters, digits and '-', at most 63 characters, starting and ending alphanumeric.",
        )
    return value


def _check_namespace(value: Any, _where: str | None) -> str | None:
    if value is None:
        return None
    value = str(value)
    if not _DNS_LABEL_RE.fullmatch(value):
        raise SweepdeckError(f"Namespace {value!r} is not a valid Kubernetes namespace name.")
    return value


def _check_backend(value: Any, _where: str | None) -> Any:
    if value not in BACKEND_NAMES:
        raise SweepdeckError(f"Unknown backend {value!r}.", "Backends: " + ", ".join(BACKEND_NAMES))
    return value


def _check_profile(value: Any, _where: str | None) -> str | None:
    if value is None:
        return None
    value = str(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", value):
        raise SweepdeckError(f"Profile name {value!r} is not valid.", "Use letters, digits, '-', '_' and '.'.")
    return value


def _check_tp_sweep(value: Any, _where: str | None) -> tuple[int, ...]:
    if isinstance(value, (int, str)):
        value = [value]
    return tuple(_positive_int("tp", v) for v in value)


#: Spec field → its check (value, the name a message uses) → the normalised value.
_FIELD_CHECKS: dict[str, Callable[[Any, str | None], Any]] = {
    "engine.gpu": lambda value, _where: _gpu_name(value),
    "engine.memory": _check_memory,
    "engine.cpu": _check_cpu,
    "engine.image": _check_image,
    "engine.extra_args": _check_extra_args,
    "experiment_id": _check_experiment_id,
    "namespace": _check_namespace,
    "model": lambda value, _where: check_safe("model", str(value).strip(), allow=""),
    "backend": _check_backend,
    "profile": _check_profile,
    "tp_sweep": _check_tp_sweep,
}


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def default_experiment_id(model: ModelInfo, workload: str, today: _dt.date | None = None) -> str:
    """``{date}-{model-short}-{workload}``, DNS-safe (e.g. ``nov23-llama-2-7b-hf-chatbot``).

    The month is spelled from a fixed table, not ``strftime('%b')``, so a
    non-English locale cannot change (or break) the id.
    """
    day = today or _dt.date.today()
    stamp = f"{_MONTHS[day.month - 1]}{day.day:02d}"
    return dns_label(f"{stamp}-{model.short}-{workload}")


def split_engine_args(args: list[str] | tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Separate the engine flags (``--max-model-len=2048``...) from true extra args.

    ``--max-model-len 2048`` (value as the next item) is accepted too.

    Returns:
        ({field: value}, remaining args)
    """
    engine: dict[str, str] = {}
    rest: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = str(items[i])
        flag, eq, value = arg.partition("=")
        if flag in ENGINE_FLAGS:
            if not eq:
                if i + 1 >= len(items):
                    raise SweepdeckError(f"{flag} needs a value.", f"Example: {flag}=4")
                value = str(items[i + 1])
                i += 1
            engine[ENGINE_FLAGS[flag]] = value
        else:
            rest.append(arg)
        i += 1
    return engine, rest


def build_spec(
    catalogs: Catalogs,
    model: str,
    *,
    backend: str = "local",
    workload: str | WorkloadProfile | None = None,
    model_choice: str | None = None,
    profile: str | None = None,
    namespace: str | None = None,
    experiment_id: str | None = None,
    tp: int | str | None = None,
    max_model_len: int | str | None = None,
    max_num_batched_tokens: int | str | None = None,
    max_num_seqs: int | str | None = None,
    memory: str | None = None,
    cpu: str | int | float | None = None,
    image: str | None = None,
    extra_args: list[str] | tuple[str, ...] | str | None = None,
    base_values: dict[str, Any] | None = None,
    today: _dt.date | None = None,
) -> ExperimentSpec:
    """Resolve user input against the catalogs into a validated spec.

    Values are layered: sweepdeck defaults < catalog recommendations < the
    base values file (``stack.MAX_MODEL_LEN``...) < user overrides. Each field
    records which layer it came from.

    Args:
        catalogs: Loaded catalogs.
        model: Model id or alias (an ambiguous alias needs ``model_choice``).
        workload: Preset name/keyword, or a ready profile; default ``chatbot``.
        base_values: A parsed values.yaml (BLIS format) to take defaults from.

    Raises:
        SweepdeckError: unknown/ambiguous model, unknown workload, bad values,
            or max_model_len above the model's limit.
    """
    backend = _validate_field("backend", backend)
    profile = _validate_field("profile", profile)
    info = catalogs.models.resolve(model, model_choice)
    origins: dict[str, Origin] = {"model": Origin(Source.USER, None)}
    from config.values import apply_inference_perf, apply_values, values_workload_app

    base_app = values_workload_app(base_values)
    if isinstance(workload, WorkloadProfile):
        prof = workload
        origins["workload"] = Origin(Source.USER, base_app)
    else:
        preset = catalogs.workloads.match(workload or base_app or "chatbot")
        prof = preset.profile
        origins["workload"] = Origin(Source.CATALOG if workload is None else Source.USER, base_app)

    def pick(name: str, catalog_value: Any, default: Any) -> Any:
        if catalog_value is not None:
            origins[f"engine.{name}"] = Origin(Source.CATALOG)
            return catalog_value
        origins[f"engine.{name}"] = Origin(Source.DEFAULT)
        return default

    engine = EngineSettings(
        image=pick("image", catalogs.models.default_image, "vllm/vllm-openai:latest"),
        tp=pick("tp", info.tp[0] if info.tp else None, 1),
        max_model_len=pick("max_model_len", info.max_model_len, DEFAULT_MAX_MODEL_LEN),
        max_num_batched_tokens=pick("max_num_batched_tokens", info.max_num_batched_tokens,
                                    DEFAULT_MAX_NUM_BATCHED_TOKENS),
        max_num_seqs=pick("max_num_seqs", info.max_num_seqs, DEFAULT_MAX_NUM_SEQS),
        extra_args=("--trust-remote-code",) if info.trust_remote_code else (),
        memory=pick("memory", None, DEFAULT_MEMORY),
        cpu=pick("cpu", None, DEFAULT_CPU),
    )
    origins["engine.extra_args"] = Origin(Source.CATALOG if info.trust_remote_code else Source.DEFAULT)
    tp_sweep: tuple[int, ...] = ()
    template: dict[str, Any] | None = None
    if base_values:
        engine, tp_sweep, prof = apply_values(base_values, engine, prof, origins, workload is None)
        template, prof, engine = apply_inference_perf(base_values, prof, engine, origins, workload is not None)

    spec = ExperimentSpec(
        model=info.id,
        backend=backend,
        workload=prof,
        engine=engine,
        experiment_id=default_experiment_id(info, prof.app, today),
        profile=profile,
        namespace=None,
        tp_sweep=tp_sweep,
        origins=origins,
        profile_template=template,
    )
    spec = replace(spec, origins={**spec.origins, "experiment_id": Origin(Source.AUTO)})
    if namespace is not None:
        spec = spec.set("namespace", namespace)
    if experiment_id is not None:
        spec = spec.set("experiment_id", experiment_id)
    for name, value in (
        ("tp", tp),
        ("max_model_len", max_model_len),
        ("max_num_batched_tokens", max_num_batched_tokens),
        ("max_num_seqs", max_num_seqs),
        ("memory", memory),
        ("cpu", cpu),
        ("image", image),
    ):
        if value is not None:
            spec = spec.set(f"engine.{name}", value)
    if isinstance(extra_args, str):
        try:
            extra_args = shlex.split(extra_args)
        except ValueError as exc:
            raise SweepdeckError(f"Cannot parse vLLM arguments {extra_args!r}: {exc}.") from None
    if extra_args:
        routed, extra_args = split_engine_args(extra_args)
        for name, value in routed.items():
            spec = spec.set(f"engine.{name}", value)
    if extra_args:
        parsed = _validate_field("engine.extra_args", extra_args)
        for arg in parsed:
            catalogs.vllm_args.check(arg)
        merged = tuple(dict.fromkeys(spec.engine.extra_args + parsed))
        spec = spec.set("engine.extra_args", merged)
    check_limits(spec, info)
    return spec


def check_limits(spec: ExperimentSpec, info: ModelInfo) -> None:
    """Raise if the engine settings exceed what the model can do.

    Only the model's own context length is a limit (see
    :meth:`ModelInfo.check_context`); a length above the catalog's
    recommendation with no known limit is a pre-flight warning, not an error.
    """
    verdict = info.check_context(spec.engine.max_model_len)
    if verdict.status == "fail":
        raise SweepdeckError(verdict.detail, verdict.fix)


def acceptable_extra_arg(arg: str) -> bool:
    """Whether a values file's vLLM argument can be an extra argument (else it stays an override)."""
    try:
        _validate_field("engine.extra_args", (arg,))
    except SweepdeckError:
        return False
    return True


def _gpu_name(value: Any) -> str | None:
    """A GPU catalog name for ``value`` (an alias, a SLURM gres type or a node label value)."""
    if value is None or str(value).strip() == "":
        return None
    from config.planner.gpus import resolve_gpu

    return resolve_gpu(str(value)).name


def with_profile_gpu(spec: ExperimentSpec, options: dict[str, Any] | None) -> ExperimentSpec:
    """The spec with the GPU its backend profile names, unless the user or values.yaml set one.

    A profile's ``gpu`` key wins over the values file; its ``gpus`` (SLURM ``A40:1``) or
    ``gpu_product`` (a Tekton node label) only fill a GPU nothing else gave. A name the
    GPU catalog does not know is left out (the planner then says which GPU to give).
    """
    from config.planner.gpus import find_gpu, profile_gpu

    name, key = profile_gpu(options)
    source = spec.source("engine.gpu")
    if name is None or source in USER_SOURCES or (source == Source.VALUES and key != "gpu"):
        return spec
    gpu = find_gpu(name)
    if gpu is None:
        return spec
    origins = {**spec.origins, "engine.gpu": Origin(Source.PROFILE)}
    return replace(spec, engine=replace(spec.engine, gpu=gpu.name), origins=origins)


def custom_workload(catalogs: Catalogs, **values: Any) -> WorkloadProfile:
    """Shortcut for :meth:`WorkloadCatalog.custom` (``prompt``/``output`` accepted as names)."""
    renamed = {{"prompt": "prompt_tokens", "output": "output_tokens"}.get(k, k): v for k, v in values.items()}
    return catalogs.workloads.custom(**renamed)


__all__ = [
    "Change", "EngineSettings", "ExperimentSpec", "Origin", "Source", "build_spec",
    "check_limits", "check_safe", "custom_workload", "default_experiment_id", "make_workload",
    "split_engine_args", "with_profile_gpu",
]
