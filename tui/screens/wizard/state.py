"""The wizard's state: the choices made so far and the spec they build.

No Textual here, so the rules (what carries over when the model changes,
what needs an explicit confirmation, what the review shows) are unit-testable.
"""

from __future__ import annotations

import datetime as _dt
import shlex
from dataclasses import dataclass, field
from typing import Any

from backends.registry import backend_class
from config import inference_perf
from config.catalog import Catalogs, ModelInfo, WorkloadProfile
from config.errors import SweepdeckError
from config.spec import USER_SOURCES, ExperimentSpec, Source, build_spec, check_limits, with_profile_gpu

# The vLLM container's resources on the review step: field, label. GPUs follow TP.
RESOURCES = (("engine.memory", "Memory"), ("engine.cpu", "CPU"))

SOURCE_WORDS = {
    Source.DEFAULT: "default",
    Source.CATALOG: "catalog",
    Source.VALUES: "values.yaml",
    Source.USER: "you",
    Source.AUTO: "auto-configured",
    Source.FIX: "recovery fix",
    Source.PROFILE: "profile",
}

ENGINE_ROWS = (
    ("engine.tp", "--tensor-parallel-size"),
    ("engine.max_model_len", "--max-model-len"),
    ("engine.max_num_batched_tokens", "--max-num-batched-tokens"),
    ("engine.max_num_seqs", "--max-num-seqs"),
)


def base_values_for(settings: Any, backend: str, profile: str | None) -> dict | None:
    """The base values file the backend's profile layers under the user's values (see Settings.base_values)."""
    return settings.base_values(backend, profile) if settings is not None else None


@dataclass(slots=True)
class ReviewRow:
    """One line of the vLLM review.

    Attributes:
        key: Row id (``engine.tp``, ``arg:--enforce-eager``, ``image:init``...).
        label: What is shown on the left (``--max-model-len``).
        value: The value in force.
        source: Where it came from (``catalog``, ``values.yaml``, ``you``...).
        status: ``CHANGED``, ``NEW``, ``REMOVED`` or ''.
        base: The value it replaced (for CHANGED).
        editable: Field path to edit, or None.
        section: ``image``, ``args``, ``resources`` or ``workload`` (an inference-perf profile template).
        edit_text: What the editor starts with, when not the value itself (``5x600, 10x600``).
    """

    key: str
    label: str
    value: str
    source: str
    status: str = ""
    base: str = ""
    editable: str | None = None
    section: str = "args"
    edit_text: str = ""


#: The simulator's failure modes the wizard offers as demonstrations (backend choice, local):
#: mode (``sweepdeck sim serve --fail MODE``) → what the user sees happen.
SIM_DEMOS = {
    "oom": "simulated CUDA OOM at startup (a smaller configuration starts)",
    "model-not-found": "simulated model not found",
    "trust-remote-code": "simulated need for --trust-remote-code",
    "crash-after=20": "simulated engine crash after 20 requests",
}


@dataclass
class WizardState:
    """Choices so far; :attr:`spec` is rebuilt from them when a choice changes."""

    catalogs: Catalogs
    settings: Any = None
    store: Any = None
    today: _dt.date | None = None
    model: str | None = None
    model_choice: str | None = None
    workload: str | WorkloadProfile | None = None
    backend: str = "local"
    profile: str | None = None
    spec: ExperimentSpec | None = None
    confirmed: tuple = ()
    notes: list[str] = field(default_factory=list)
    #: A failure the built-in simulator demonstrates (``oom``, ``crash-after=20``...; see :data:`SIM_DEMOS`).
    sim_fail: str | None = None

    @classmethod
    def from_spec(cls, spec: ExperimentSpec, catalogs: Catalogs, **kw: Any) -> WizardState:
        """State for a ready spec (from the quick command)."""
        workload: str | WorkloadProfile = spec.workload if spec.workload.custom else spec.workload.app
        state = cls(catalogs, model=spec.model, workload=workload, backend=spec.backend, profile=spec.profile, **kw)
        if spec.source("engine.gpu") not in USER_SOURCES:
            spec = with_profile_gpu(spec, state._profile_options(spec.backend, spec.profile))
        state.spec = state._free_id(spec)
        return state

    # ------------------------------------------------------------- choices

    @property
    def info(self) -> ModelInfo | None:
        if self.spec is None:
            return None
        return self.catalogs.models.resolve(self.spec.model)

    def choose_model(self, name: str, choice: str | None = None) -> ExperimentSpec:
        """Pick a model (an ambiguous alias needs ``choice``)."""
        return self.rebuild(model=name, model_choice=choice)

    def choose_workload(self, workload: str | WorkloadProfile | None) -> ExperimentSpec:
        """A preset (name), a custom profile, or None: the profile's values file's own workload."""
        return self.rebuild(workload=workload)

    def choose_backend(self, backend: str, profile: str | None) -> ExperimentSpec:
        return self.rebuild(backend=backend, profile=profile)

    def rebuild(self, **changes: Any) -> ExperimentSpec:
        """Build the spec again with ``changes``, keeping the user's own edits.

        Edits that no longer fit (max_model_len above the new model's limit)
        are dropped and listed in :attr:`notes`.

        Raises:
            SweepdeckError: the new choice itself is invalid (nothing changes).
        """
        model = changes.get("model", self.model)
        if model is None:
            raise SweepdeckError("Choose a model first.")
        choice = changes.get("model_choice", self.model_choice if "model" not in changes else None)
        workload = changes.get("workload", self.workload)
        backend = changes.get("backend", self.backend)
        profile = changes.get("profile", self.profile)
        new = build_spec(
            self.catalogs,
            model,
            backend=backend,
            workload=workload,
            model_choice=choice,
            profile=profile,
            base_values=base_values_for(self.settings, backend, profile),
            today=self.today,
        )
        notes: list[str] = []
        old = self.spec
        if old is not None:
            workload_changed = "workload" in changes and _workload_key(workload) != _workload_key(self.workload)
            for ch in old.user_fields():
                if ch.field in ("model", "workload", "backend", "profile"):
                    continue
                if ch.field.startswith(("workload.", inference_perf.PREFIX)) and workload_changed:
                    continue  # tweaks of the old workload (its numbers, its profile template)
                try:
                    candidate = new.set(ch.field, ch.value, ch.source)
                    check_limits(candidate, self.catalogs.models.resolve(candidate.model))
                    new = candidate
                except SweepdeckError as exc:
                    notes.append(f"Dropped your {ch.field} = {ch.value}: {exc.message}")
        if new.source("engine.gpu") not in USER_SOURCES:
            new = with_profile_gpu(new, self._profile_options(backend, profile))
        new = self._free_id(new)
        self.model, self.model_choice, self.workload = model, choice, workload
        self.backend, self.profile = backend, profile
        self.spec = new
        self.notes = notes
        return new

    def _profile_options(self, backend: str, profile: str | None) -> dict | None:
        if self.settings is None:
            return None
        try:
            return self.settings.profile(profile, backend).options
        except SweepdeckError:
            return None

    def plan_line(self) -> tuple[str, bool | None, list]:
        """The memory planner's verdict on the spec: (text, fits, fixes); fits None when not planned."""
        from backends.planning import Unplanned, plan_for, planner_fixes
        from config.planner.text import summary_line

        spec = self.need_spec()
        result = plan_for(spec, self.settings)
        if isinstance(result, Unplanned):
            return f"memory plan: {result.short or result.reason}", None, []
        fixes = planner_fixes("cuda-oom", spec, self.settings) if not result.fits else []
        return summary_line(result), result.fits, fixes or []

    def _free_id(self, spec: ExperimentSpec) -> ExperimentSpec:
        """A generated id that a saved run already uses gets a ``-2`` suffix."""
        if self.store is None or spec.source("experiment_id") != Source.AUTO:
            return spec
        free = self.store.free_id(spec.experiment_id)
        if free != spec.experiment_id:
            spec = spec.set("experiment_id", free, Source.AUTO)
        return spec

    # -------------------------------------------------------------- editing

    def values_template(self) -> dict | None:
        """The inference-perf profile template of the chosen profile's values file (None: not that format)."""
        return inference_perf.template_of(base_values_for(self.settings, self.backend, self.profile))

    def need_spec(self) -> ExperimentSpec:
        if self.spec is None:
            raise SweepdeckError("Choose a model first.")
        return self.spec

    def edit(self, path: str, value: Any) -> ExperimentSpec:
        """Set one field as the user's value (validated; nothing changes on error)."""
        spec = self.need_spec()
        new = spec.set(path, value, Source.USER)
        check_limits(new, self.catalogs.models.resolve(new.model))
        self.spec = new
        return new

    def add_args(self, text: str) -> tuple[ExperimentSpec, list[str]]:
        """Add vLLM arguments (``--enforce-eager --gpu-memory-utilization=0.9``).

        Returns:
            The new spec and warnings for arguments the reference does not know.

        Raises:
            SweepdeckError: unparsable text, a value of the wrong type, an
                engine flag (``--max-model-len``: edit the field instead).
        """
        spec = self.need_spec()
        try:
            args = shlex.split(text)
        except ValueError as exc:
            raise SweepdeckError(f"Cannot parse {text!r}: {exc}.") from None
        if not args:
            raise SweepdeckError("Type an argument, e.g. --enable-prefix-caching.")
        # `--flag value` → `--flag=value` (the reference and the spec use =).
        joined: list[str] = []
        for arg in args:
            if joined and not arg.startswith("-") and "=" not in joined[-1]:
                joined[-1] = f"{joined[-1]}={arg}"
            else:
                joined.append(arg)
        warnings = []
        for arg in joined:
            if not arg.startswith("--"):
                raise SweepdeckError(f"vLLM argument {arg!r} must start with --.", "Example: --enable-prefix-caching")
            warning = self.catalogs.vllm_args.check(arg)
            if warning:
                warnings.append(warning)
        names = {a.partition("=")[0] for a in joined}
        kept = tuple(a for a in spec.engine.extra_args if a.partition("=")[0] not in names)
        new = spec.set("engine.extra_args", kept + tuple(joined), Source.USER)
        self.spec = new
        return new, warnings

    def remove_arg(self, arg: str) -> ExperimentSpec:
        spec = self.need_spec()
        new = spec.set("engine.extra_args", tuple(a for a in spec.engine.extra_args if a != arg), Source.USER)
        self.spec = new
        return new

    def restore_arg(self, arg: str) -> ExperimentSpec:
        spec = self.need_spec()
        new = spec.set("engine.extra_args", spec.engine.extra_args + (arg,), Source.USER)
        self.spec = new
        return new

    def revert(self, path: str) -> ExperimentSpec:
        """Undo the user's change to ``path`` (back to the catalog/values value)."""
        spec = self.need_spec()
        origin = spec.origins.get(path)
        if origin is None or origin.source not in USER_SOURCES:
            return spec
        new = spec.set(path, origin.base, Source.USER)
        self.spec = new
        return new

    # --------------------------------------------------------- confirmation

    def pending_changes(self) -> tuple:
        """A signature of the engine changes that need confirming (empty: none)."""
        spec = self.spec
        if spec is None:
            return ()
        return tuple(
            (c.field, _hashable(c.value)) for c in spec.changes()
            if c.field.startswith(("engine.", inference_perf.PREFIX)) or c.field == "tp_sweep"
        )

    @property
    def needs_confirmation(self) -> bool:
        pending = self.pending_changes()
        return bool(pending) and pending != self.confirmed

    def confirm(self) -> None:
        self.confirmed = self.pending_changes()

    def unconfirm(self) -> None:
        self.confirmed = ()

    # --------------------------------------------------------------- review

    def review_rows(self) -> list[ReviewRow]:
        """The vLLM configuration the review step shows, one row per setting."""
        spec = self.need_spec()
        rows: list[ReviewRow] = []
        image_status, image_base = _status(spec, "engine.image")
        image_source = _source_word(spec, "engine.image")
        rows.append(ReviewRow("engine.image", "Image (main container)", spec.engine.image, image_source,
                              image_status, image_base, "engine.image", "image"))
        rows.append(ReviewRow("image:init", "Image (init container)", spec.engine.image, image_source,
                              image_status, image_base, "engine.image", "image"))
        for path, flag in ENGINE_ROWS:
            status, base = _status(spec, path)
            value = str(spec.get(path))
            if path == "engine.tp" and spec.tp_sweep:
                value += f" (sweep {', '.join(str(t) for t in spec.tp_sweep)})"
            rows.append(ReviewRow(path, flag, value, _source_word(spec, path), status, base, path))
        rows.extend(self._auto_rows(spec))
        origin = spec.origins.get("engine.extra_args")
        base_args: tuple = spec.engine.extra_args
        if origin is not None and origin.source in USER_SOURCES:
            base_args = tuple(origin.base or ())
        for arg in spec.engine.extra_args:
            if arg in base_args:
                src = (
                    _source_word(spec, "engine.extra_args")
                    if origin is None or origin.source not in USER_SOURCES
                    else "catalog"
                )
                rows.append(ReviewRow(f"arg:{arg}", arg, "", src, "", "", None))
            else:
                rows.append(ReviewRow(f"arg:{arg}", arg, "", "you", "NEW", "", None))
        for arg in base_args:
            if arg not in spec.engine.extra_args:
                rows.append(ReviewRow(f"removed:{arg}", arg, "", "you", "REMOVED", "", None))
        gpus = f"{spec.engine.tp} (via TP={spec.engine.tp})"
        for path, name in RESOURCES:
            status, base = _status(spec, path)
            rows.append(ReviewRow(f"res:{name}", name, f"{spec.get(path)} (limit/request)",
                                  self._resource_source(spec, path), status, base, path, "resources"))
        tp_status, tp_base = _status(spec, "engine.tp")
        # GPUs follow TP: editing this row edits TP.
        rows.append(ReviewRow("res:GPUs", "GPUs", gpus, "= TP", tp_status, tp_base, "engine.tp", "resources"))
        gpu_status, gpu_base = _status(spec, "engine.gpu")
        rows.append(ReviewRow("res:GPU", "GPU model", spec.engine.gpu or "(unknown)",
                              _source_word(spec, "engine.gpu"), gpu_status, gpu_base, "engine.gpu", "resources"))
        return rows + self._workload_rows(spec)

    @staticmethod
    def _workload_rows(spec: ExperimentSpec) -> list[ReviewRow]:
        """The inference-perf profile template's settings: load type and stages, API, data (each editable)."""
        if spec.profile_template is None:
            return []
        origin = "values.yaml" if spec.source("workload") == Source.VALUES else f"preset {spec.workload.app}"
        data_type = str((spec.profile_template.get("data") or {}).get("type", ""))
        rows = []
        for key, value in inference_perf.leaves(spec.profile_template):
            # the data type's own settings by their names (question_len), the rest by section (load.type)
            label = key.removeprefix(f"data.{data_type}.") if key != "data.type" else key
            label = label.removeprefix("data.") if label.startswith("data.") and key != "data.type" else label
            path = inference_perf.PREFIX + key
            status, base = _status(spec, path)
            if key == inference_perf.STAGES:
                shown, text = inference_perf.describe_stages(value, compact=True), inference_perf.stages_text(value)
                if status:
                    base = inference_perf.describe_stages(_unhashable(spec.origins[path].base), compact=True)
            else:
                shown, text = _word(value), _word(value)
                base = _word(spec.origins[path].base) if status else base
            source = "you" if spec.source(path) in USER_SOURCES else origin
            rows.append(ReviewRow(path, label, shown, source, status, base, path, "workload", text))
        return rows

    def _resource_source(self, spec: ExperimentSpec, path: str) -> str:
        """Where memory/CPU came from, and whether the backend applies them (:meth:`BackendBase.unapplied`).

        A backend that does not apply them records an edit (it shows as
        CHANGED and is kept in the spec) but nothing enforces it.
        """
        word = _source_word(spec, path)
        note = backend_class(spec.backend).unapplied(path)
        if note is None:
            return word
        return f"{word}, {note}" if spec.source(path) in USER_SOURCES else note

    def _auto_rows(self, spec: ExperimentSpec) -> list[ReviewRow]:
        """Arguments the backend sets itself (shown, never editable here)."""
        return [ReviewRow(f"auto:{flag}", flag, shown, "auto-configured")
                for flag, shown in backend_class(spec.backend).auto_args(spec, self.settings)]

    def demonstration(self) -> str | None:
        """The failure the run demonstrates: :attr:`sim_fail`, when the chosen backend runs the simulator."""
        spec = self.spec
        if not self.sim_fail or spec is None or "simulator" not in backend_class(spec.backend).capabilities:
            return None
        return self.sim_fail

    # -------------------------------------------------------------- summary

    def summary_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The summary before launch: CORE SETTINGS, WORKLOAD, vLLM ENGINE."""
        spec = self.need_spec()
        lines = dict(spec.summary_lines())
        demo = self.demonstration()
        if demo:
            lines["Backend"] += f" · DEMONSTRATION: {SIM_DEMOS[demo]}"
        core = ["Experiment ID", "Backend", "Namespace", "Model"]
        work = ["Workload", "Max Requests", "Rate", "Prompt Tokens", "Output Tokens", "Load", "Data", "API"]
        engine = ["Image", "Tensor Parallel", "Max Model Len", "Max Batch Tokens", "Max Num Seqs", "Resources",
                  "Additional Args"]

        def pick(names: list[str]) -> list[tuple[str, str]]:
            return [(n, lines[n]) for n in names if n in lines]

        return [("CORE SETTINGS", pick(core)), ("WORKLOAD", pick(work)), ("vLLM ENGINE", pick(engine))]

    def changes_title(self) -> str:
        spec = self.need_spec()
        if any(o.source == Source.VALUES for o in spec.origins.values()):
            return "CHANGES FROM values.yaml"
        return "CHANGES FROM THE CATALOG DEFAULTS"

    def change_lines(self) -> list[tuple[str, str]]:
        """``(MATCH|SUBSET|OVERRIDE, description)`` for every value the user set."""
        spec = self.need_spec()
        return [(c.kind, c.describe()) for c in spec.user_fields()]


def _workload_key(workload: Any) -> Any:
    return workload if isinstance(workload, (str, type(None))) else ("custom", workload)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, WorkloadProfile):
        return ("workload", value.app)
    return value


def _word(value: Any) -> str:
    """A template value as typed in YAML (``true``, ``5``, ``shared_prefix``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _unhashable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _source_word(spec: ExperimentSpec, path: str) -> str:
    return SOURCE_WORDS.get(spec.source(path), str(spec.source(path)))


def _status(spec: ExperimentSpec, path: str) -> tuple[str, str]:
    origin = spec.origins.get(path)
    if origin is None or origin.source not in USER_SOURCES:
        return "", ""
    if origin.base == spec.get(path):
        return "", ""
    return "CHANGED", "" if origin.base is None else str(origin.base)
