"""From an ExperimentSpec to the manifests of one BLIS run (nothing is applied here).

The user's files (a BLIS checkout's template, ``values.yaml`` and
``pipelinerun.yaml``, or the profile's own paths) are only *read*; the
effective values, the PipelineRun and the rendered Pipeline are new documents
(:class:`Build`) that the backend writes to the run store.

Where vLLM settings live in BLIS values:

* TP values: ``stack.treatments.tensorParallelism`` (one branch per value);
* ``stack.MAX_MODEL_LEN`` / ``MAX_NUM_BATCHED_TOKENS`` / ``MAX_NUM_SEQS``;
* the image: ``stack.model.helmValues.decode.containers[name=vllm].image`` and
  the image of the init container that installs into the vLLM image;
* memory and CPU: ``decode.containers[name=vllm].resources.limits`` and
  ``.requests`` (``memory``, ``cpu``; both get the spec's value);
* extra vLLM arguments: ``decode.containers[name="vllm"].args=ARG`` overrides
  appended to every deploy-model task of the rendered Pipeline (the campaign
  format: written to ``stack.extra_overrides``, which its template renders);
* the workload: ``stack.workload`` (guidellm); the BLIS campaign's
  inference-perf format (``workload.harness: inference-perf`` with a
  ``workload.profileTemplate``) gets the spec's profile template and is
  rendered with sweepdeck's ``inference-perf.yaml.j2``; the older
  inference-perf form (``workload.profile``, ``workload.treatments``) is kept
  as the values give it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from backends.tekton.render import dump, load_values, load_yaml_file, merge_pipelinerun, read_text, render_text
from config import inference_perf
from config.errors import SweepdeckError
from config.spec import acceptable_extra_arg
from config.values import values_resources

if TYPE_CHECKING:
    from config.settings import Profile
    from config.spec import ExperimentSpec

PACKAGE_TEMPLATE = "tekton/blis/pipeline.yaml.j2"
#: The base values when the profile names none (the BLIS skill's guidellm values).
DEFAULT_VALUES = Path(__file__).resolve().parents[2] / "config" / "data" / "values.yaml"
#: sweepdeck's template for values in the BLIS campaign's inference-perf format.
INFERENCE_PERF_TEMPLATE = "tekton/blis/inference-perf.yaml.j2"
DEFAULT_EXPECTED_MINUTES = {
    "download-model": 30, "install-": 10, "create-exp-config": 2, "deploy-otel-collector": 5,
    "deploy-model": 30, "run-workload": 120, "delete-model": 5, "delete-otel-collector": 5,
    "upload": 15, "raw-upload": 15, "finally-": 5,
}
#: Over the load stages' own time, what a run-workload task of the inference-perf format is given
#: (installing the harness's data, the tokenizer download, the last requests).
WORKLOAD_MARGIN_S = 600


def package_template(values: dict[str, Any] | None) -> Path:
    """sweepdeck's own template for these values: the inference-perf one for a ``workload.profileTemplate``."""
    from templates.render import template_path

    campaign = inference_perf.template_of(values) is not None
    return template_path(INFERENCE_PERF_TEMPLATE if campaign else PACKAGE_TEMPLATE)


@dataclass
class Sources:
    """Where the template, base values and base PipelineRun come from (read only)."""

    template: Path | None  # None: sweepdeck's own, chosen by the values' format (package_template)
    values: Path
    pipelinerun: Path | None
    tasks_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def from_profile(cls, profile: Profile) -> Sources:
        """The profile's files; with ``blis_repo``, the BLIS checkout's, laid out as upstream keeps them.

        A checkout of inference-sim/tektonc-data-collection has::

            tektoncsample/<sample>/data_pipeline.yaml.j2   (some samples: pipeline.yaml.j2)
            tektoncsample/<sample>/values.yaml
            tektoncsample/<sample>/pipelinerun.yaml
            tekton/tasks/*.yaml, tekton/steps/*.yaml       (Tasks, StepActions)
            .claude/config/*.yaml                          (catalogs: settings' catalog_dir)

        ``<sample>`` is the profile's ``blis_sample`` (``blis``; ``blis-inference-perf``
        for the inference-perf harness). Explicit ``template``/``values``/``pipelinerun``
        options win. The checkout's Tasks override sweepdeck's of the same name;
        sweepdeck's fill in the ones it lacks (``install-guidellm``... are not in it).
        """
        from templates.render import template_path

        ours = [template_path("tekton/stepactions"), template_path("tekton/tasks")]
        repo = Path(profile.get("blis_repo")).expanduser() if profile.get("blis_repo") else None
        template = profile.get("template")
        values = profile.get("values")
        pr = profile.get("pipelinerun")
        tasks_dirs = list(ours)
        if repo:
            if not repo.is_dir():
                raise SweepdeckError(f"blis_repo {repo} is not a directory.", "Fix 'blis_repo' in the tekton profile.")
            sample_name = profile.get("blis_sample") or "blis"
            sample = repo / "tektoncsample" / sample_name
            if not (template and values) and not sample.is_dir():
                samples = repo / "tektoncsample"
                have = sorted(d.name for d in samples.iterdir() if d.is_dir()) if samples.is_dir() else []
                raise SweepdeckError(
                    f"blis_repo {repo} has no tektoncsample/{sample_name}/ directory.",
                    ("Set 'blis_sample' to one of: " + ", ".join(have)) if have
                    else "Point 'blis_repo' at a checkout of the BLIS repo (tektonc-data-collection), "
                         "or set template/values.",
                )
            if not template:
                found = [sample / n for n in ("data_pipeline.yaml.j2", "pipeline.yaml.j2") if (sample / n).is_file()]
                template = found[0] if found else None  # none: sweepdeck's own BLIS template
            if not values:
                values = sample / "values.yaml"
                if not values.is_file():
                    raise SweepdeckError(f"blis_repo: {values} does not exist.", "Set 'values' in the tekton profile.")
            pr = pr or sample / "pipelinerun.yaml"
            tasks_dirs += [d for d in (repo / "tekton" / "steps", repo / "tekton" / "tasks") if d.is_dir()]
        return cls(
            template=Path(template).expanduser() if template else None,
            values=Path(values).expanduser() if values else DEFAULT_VALUES,
            pipelinerun=Path(pr).expanduser() if pr and Path(pr).expanduser().exists() else None,
            tasks_dirs=tasks_dirs,
        )

    def base_values(self) -> dict[str, Any]:
        values = load_values(self.values)
        if not values:
            raise SweepdeckError(f"Values file {self.values} is empty.",
                                 "Point the tekton profile's 'values' at a BLIS values.yaml "
                                 "(experiment, stack, workload).")
        return values

    def template_for(self, values: dict[str, Any]) -> Path:
        """The template to render: the profile's, else sweepdeck's for the values' format."""
        return self.template or package_template(values)

    def base_pipelinerun(self) -> dict[str, Any] | None:
        return load_yaml_file(self.pipelinerun, "PipelineRun file") if self.pipelinerun else None


@dataclass
class Build:
    """Everything one launch applies."""

    values: dict[str, Any]
    pipeline: dict[str, Any]
    pipelinerun: dict[str, Any]
    resources: list[dict[str, Any]]
    tps: list[int]
    changes: list[str]

    @property
    def workload_seconds(self) -> float | None:
        """How long the inference-perf load stages run (None: not the inference-perf format)."""
        template = inference_perf.template_of(self.values)
        if template is None:
            return None
        return inference_perf.total_seconds(template) or None

    @property
    def task_names(self) -> list[str]:
        spec = self.pipeline.get("spec") or {}
        return [t["name"] for t in (spec.get("tasks") or []) + (spec.get("finally") or [])]

    def files(self) -> dict[str, str]:
        """Run-store files: name -> text."""
        return {
            "values.yaml": yaml.safe_dump(self.values, sort_keys=False),
            "pipeline.yaml": dump(self.pipeline),
            "pipelinerun.yaml": dump(self.pipelinerun),
            "resources.yaml": yaml.safe_dump_all(self.resources, sort_keys=False),
            "changes.txt": "\n".join(self.changes) + "\n",
        }


def effective_values(base: dict[str, Any], spec: ExperimentSpec) -> dict[str, Any]:
    """The base values with the spec's settings written where BLIS keeps them (a new dict)."""
    values = copy.deepcopy(base)
    stack = values.setdefault("stack", {})
    if not isinstance(stack, dict):
        raise SweepdeckError("values file: 'stack' must be a mapping.")
    e = spec.engine
    stack.setdefault("treatments", {})["tensorParallelism"] = list(spec.tp_sweep or (e.tp,))
    stack["MAX_MODEL_LEN"] = e.max_model_len
    stack["MAX_NUM_BATCHED_TOKENS"] = e.max_num_batched_tokens
    stack["MAX_NUM_SEQS"] = e.max_num_seqs
    harness = ((values.get("workload") or {}).get("harness")) or "guidellm"
    values.setdefault("workload", {})["harness"] = harness
    if inference_perf.template_of(values) is not None:
        set_inference_perf(values, spec)
    elif harness == "guidellm":
        stack["workload"] = spec.workload.to_values()
    set_image(values, e.image)
    set_resources(values, e.memory, e.cpu)
    # one Pipeline per experiment: runs with different values never overwrite each other
    values.setdefault("experiment", {})["name"] = spec.experiment_id
    return values


def set_inference_perf(values: dict[str, Any], spec: ExperimentSpec) -> None:
    """The campaign format: the spec's profile template, and its extra vLLM arguments as ``stack.extra_overrides``.

    Overrides that are not vLLM arguments the spec holds (helm paths, arguments
    with shell characters) are kept as the values file gives them.
    """
    stack = values["stack"]
    if spec.profile_template is None:
        # a spec made without these values (sweepdeck run --backend tekton): their workload and
        # overrides stand; the spec's arguments are added
        existing = [str(o) for o in stack.get("extra_overrides") or []]
        added = inference_perf.overrides_for(spec.engine.extra_args, [])
        stack["extra_overrides"] = existing + [o for o in added if o not in existing]
        return
    values["workload"]["profileTemplate"] = copy.deepcopy(spec.profile_template)
    _args, others = inference_perf.split_overrides(stack.get("extra_overrides"), acceptable_extra_arg)
    stack["extra_overrides"] = inference_perf.overrides_for(spec.engine.extra_args, others)


def uses_extra_overrides(values: dict[str, Any]) -> bool:
    """The template renders ``stack.extra_overrides`` (the campaign format): vLLM arguments go there."""
    return inference_perf.template_of(values) is not None


def set_image(values: dict[str, Any], image: str) -> None:
    """Put ``image`` into decode.containers[name=vllm] and the init container built on the same image."""
    helm = (((values.get("stack") or {}).get("model") or {}).get("helmValues")) or {}
    decode = helm.get("decode") if isinstance(helm, dict) else None
    if not isinstance(decode, dict):
        return
    old = None
    for c in decode.get("containers") or []:
        if isinstance(c, dict) and c.get("name") == "vllm":
            old = c.get("image")
            c["image"] = image
    inits = [c for c in decode.get("initContainers") or [] if isinstance(c, dict)]
    for c in inits:
        # the init container installs into the vLLM image's Python: it must match
        if c.get("image") == old or len(inits) == 1:
            c["image"] = image


def set_resources(values: dict[str, Any], memory: str, cpu: str) -> None:
    """Put ``memory``/``cpu`` into the limits and requests of decode.containers[name=vllm].

    A value equal to what the values file already gives (its limits, else
    requests) is left alone, so an untouched file keeps its own layout (and a
    request deliberately below its limit); a changed value goes into both.
    """
    helm = (((values.get("stack") or {}).get("model") or {}).get("helmValues")) or {}
    decode = helm.get("decode") if isinstance(helm, dict) else None
    if not isinstance(decode, dict):
        return
    current = values_resources(values)
    wanted = {k: v for k, v in (("memory", memory), ("cpu", cpu)) if current.get(k) != v}
    if not wanted:
        return
    for c in decode.get("containers") or []:
        if not (isinstance(c, dict) and c.get("name") == "vllm"):
            continue
        if not isinstance(c.get("resources"), dict):
            c["resources"] = {}
        for part in ("limits", "requests"):
            if not isinstance(c["resources"].get(part), dict):
                c["resources"][part] = {}
            c["resources"][part].update(wanted)


def add_vllm_args(pipeline: dict[str, Any], args: list[str] | tuple[str, ...]) -> int:
    """Append ``decode.containers[name="vllm"].args=ARG`` overrides to each deploy-model task."""
    touched = 0
    for task in (pipeline.get("spec") or {}).get("tasks") or []:
        if (task.get("taskRef") or {}).get("name") != "deploy-model":
            continue
        for p in task.setdefault("params", []):
            if p.get("name") == "overrides":
                break
        else:
            p = {"name": "overrides", "value": []}
            task["params"].append(p)
        p["value"] = list(p.get("value") or []) + [f'decode.containers[name="vllm"].args={a}' for a in args]
        touched += 1
    return touched


def pipelinerun_for(
    spec: ExperimentSpec, profile: Profile, pipeline_name: str, base: dict[str, Any] | None,
) -> dict[str, Any]:
    """The PipelineRun: name = experiment id; params experimentId, model, namespace; BLIS workspaces."""
    ns = spec.namespace or profile.get("namespace")
    pr = copy.deepcopy(base) if base else {}
    meta = {
        "name": spec.experiment_id,
        "namespace": ns,
        "labels": {"app.kubernetes.io/managed-by": "sweepdeck", "sweepdeck.io/experiment": spec.experiment_id},
    }
    if spec.parent:
        meta["annotations"] = {"sweepdeck.io/parent": spec.parent}
    secrets = list(profile.get("secrets") or ["hf-secret", "s3-secret"]) + ["hf-secret", "s3-secret"]
    pvcs = list(profile.get("pvcs") or ["model-pvc", "data-pvc"]) + ["model-pvc", "data-pvc"]
    workspaces = [
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": pvcs[0]}},
        {"name": "data", "persistentVolumeClaim": {"claimName": pvcs[1]}},
        {"name": "hf-credentials",
         "secret": {"secretName": secrets[0], "items": [{"key": "HF_TOKEN", "path": "HF_TOKEN"}]}},
        {"name": "target-credentials", "secret": {"secretName": secrets[1], "items": [
            {"key": "AWS_ACCESS_KEY_ID", "path": "AWS_ACCESS_KEY_ID"},
            {"key": "AWS_SECRET_ACCESS_KEY", "path": "AWS_SECRET_ACCESS_KEY"},
        ]}},
    ]
    spec_part = pr.get("spec") or {}
    spec_part.pop("pipelineSpec", None)
    spec_part["pipelineRef"] = {"name": pipeline_name}
    spec_part["params"] = [
        {"name": "experimentId", "value": spec.experiment_id},
        {"name": "model", "value": spec.model},
        {"name": "namespace", "value": ns},
    ] + [p for p in spec_part.get("params") or [] if p.get("name") in ("stack", "workload")]
    spec_part["workspaces"] = workspaces
    spec_part["timeouts"] = {"pipeline": profile.get("pipeline_timeout", "6h"),
                             "tasks": profile.get("task_timeout", "5h30m")}
    spec_part.setdefault("taskRunTemplate", {})["serviceAccountName"] = profile.get("service_account", "helm-installer")
    return {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": meta, "spec": spec_part}


def resources_for(pipeline: dict[str, Any], dirs: list[Path]) -> list[dict[str, Any]]:
    """The Tasks and StepActions the pipeline refers to (taskRef names, then their step refs).

    A name found in several ``dirs`` is taken from the last (a BLIS checkout's over sweepdeck's).
    """
    available: dict[tuple[str, str], dict[str, Any]] = {}
    for d in dirs:
        for path in sorted(Path(d).glob("*.y*ml")):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and doc.get("kind") in ("Task", "StepAction"):
                    available[(doc["kind"], doc["metadata"]["name"])] = doc
    spec = pipeline.get("spec") or {}
    wanted = []
    for task in (spec.get("tasks") or []) + (spec.get("finally") or []):
        ref = task.get("taskRef") or {}
        if ref.get("name") and not ref.get("resolver") and ref["name"] not in wanted:
            wanted.append(ref["name"])
    out, missing = [], []
    steps: list[str] = []
    for name in wanted:
        doc = available.get(("Task", name))
        if doc is None:
            missing.append(name)
            continue
        out.append(doc)
        for step in (doc.get("spec") or {}).get("steps") or []:
            ref = (step.get("ref") or {}).get("name")
            if ref and ref not in steps:
                steps.append(ref)
    actions = [available[("StepAction", s)] for s in steps if ("StepAction", s) in available]
    if missing:
        raise SweepdeckError(
            "The pipeline refers to Tasks sweepdeck does not have: " + ", ".join(missing) + ".",
            "Point the profile's blis_repo at a checkout with tekton/tasks/, or fix the template's taskRef names.",
        )
    return actions + out


def build(spec: ExperimentSpec, profile: Profile, sources: Sources | None = None) -> Build:
    """Render everything for ``spec`` (reads the sources, writes nothing)."""
    sources = sources or Sources.from_profile(profile)
    base_pr = sources.base_pipelinerun()
    base = sources.base_values()
    values = effective_values(merge_pipelinerun(base, base_pr), spec)
    path = sources.template_for(values)
    try:
        pipeline = render_text(read_text(path, "Template"), values, path.name)
    except SweepdeckError as exc:
        if inference_perf.template_of(values) is not None and "stack.workload" in exc.message:
            # a guidellm template with the campaign's values: adding stack.workload is the wrong fix
            raise SweepdeckError(
                f"The template {path} is for guidellm values (stack.workload); these values use the inference-perf "
                "harness (workload.profileTemplate).",
                "Remove 'template' from the tekton profile (sweepdeck then uses its inference-perf template), "
                "or point it at a template for this format (tektoncsample/blis-inference-perf).",
            ) from None
        raise
    pipeline.setdefault("metadata", {})
    if spec.engine.extra_args and not uses_extra_overrides(values):
        add_vllm_args(pipeline, spec.engine.extra_args)
    name = pipeline["metadata"].get("name") or spec.experiment_id
    pr = pipelinerun_for(spec, profile, name, base_pr)
    resources = resources_for(pipeline, sources.tasks_dirs)
    changes = [c.describe() + f"  [{c.kind}]" for c in spec.user_fields()]
    return Build(values, pipeline, pr, resources, list(spec.tp_sweep or (spec.engine.tp,)), changes)


def expected_seconds(task: str, profile: Profile, workload_s: float | None = None) -> float | None:
    """Expected duration of a pipeline task from the profile (minutes by name prefix).

    ``workload_s`` (the inference-perf stages' total) sets run-workload's, unless the profile names one.
    """
    mine = {str(k): v for k, v in (profile.get("expected_minutes") or {}).items()}
    if workload_s and task.startswith("run-workload") and not any(task.startswith(p) for p in mine):
        return workload_s + WORKLOAD_MARGIN_S
    table = dict(DEFAULT_EXPECTED_MINUTES)
    table.update(mine)
    best = max((p for p in table if task.startswith(p)), key=len, default=None)
    return float(table[best]) * 60 if best else None
