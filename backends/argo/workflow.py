"""The benchmark Workflow manifest the ``argo`` backend submits.

The manifest is sweepdeck's own ``templates/argo/benchmark-workflow.yaml`` (shipped
in the wheel) with its arguments filled in: ``model-version-id``, ``batch-size``,
``api-base-url``, ``max-parallel-pods`` (and ``image``/``endpoint``/``model`` when
given), and the name of the Secret its steps read the queue's tokens from
(:data:`TOKEN_SECRET`; keys :data:`TOKEN_KEYS`). ``metadata.generateName`` is kept —
several sweeps may run at once and the
API server picks the name — so the run is found again by its labels
(:data:`EXPERIMENT_LABEL`, :data:`MODEL_VERSION_LABEL`).
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from config.errors import SweepdeckError

if TYPE_CHECKING:
    from config.settings import Profile
    from config.spec import ExperimentSpec

TEMPLATE = "argo/benchmark-workflow.yaml"
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
CRD_NAME = f"{PLURAL}.{GROUP}"

EXPERIMENT_LABEL = "sweepdeck.io/experiment"
MODEL_VERSION_LABEL = "sweepdeck.io/model-version"
#: The full id, also when it cannot be a label value (too long, odd characters).
MODEL_VERSION_ANNOTATION = "sweepdeck.io/model-version-id"
#: Argo labels every pod of a workflow with the workflow's name.
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
#: The Secret the workflow's steps mount the queue's tokens from (the profile's queue_token_secret).
TOKEN_SECRET = "sweepdeck-queue-token"
#: Its keys: the server's token file (for a queue served in the cluster), and one token per role.
TOKEN_KEYS = ("tokens", "worker-token", "admin-token")

# The queue API puts the id in URL paths, so it must be one path segment (and fit its 64-character column).
_MVID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")


def check_model_version_id(value: Any) -> str:
    """The model version id as text, or a SweepdeckError saying what is allowed."""
    text = "" if value is None else str(value).strip()
    if not text:
        raise SweepdeckError(
            "No model version to sweep.",
            "Set model_version_id in the argo profile, or pass --model-version-id MVID.",
        )
    if not _MVID_RE.match(text):
        raise SweepdeckError(
            f"Model version id {text!r} is not usable.",
            "Use letters, digits and . _ : - (at most 64 characters), e.g. llama3-70b-v2.",
        )
    return text


def label_value(text: str) -> str | None:
    """``text`` if it is a valid Kubernetes label value, else None."""
    return text if _LABEL_VALUE_RE.match(text) else None


@lru_cache(maxsize=1)
def _template_text() -> str:
    from templates.render import template_path

    path = template_path(TEMPLATE)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepdeckError(f"Cannot read the packaged workflow template {path}: {exc.strerror}.") from None


def load_template() -> dict[str, Any]:
    """A fresh copy of the packaged benchmark Workflow."""
    import yaml

    doc = yaml.safe_load(_template_text())
    if not isinstance(doc, dict) or doc.get("kind") != "Workflow":
        raise SweepdeckError(f"The packaged template {TEMPLATE} is not an Argo Workflow.")
    return copy.deepcopy(doc)


def parameters(doc: dict[str, Any]) -> dict[str, Any]:
    """``spec.arguments.parameters`` as ``{name: value}`` (None when a parameter has no value)."""
    params = ((doc.get("spec") or {}).get("arguments") or {}).get("parameters") or []
    return {p["name"]: p.get("value") for p in params if isinstance(p, dict) and "name" in p}


def set_parameter(doc: dict[str, Any], name: str, value: Any) -> None:
    """Set one workflow argument (Argo parameters are strings).

    Raises:
        SweepdeckError: the template does not declare ``name`` (an argument
            Argo does not know would be ignored silently).
    """
    params = ((doc.get("spec") or {}).get("arguments") or {}).get("parameters") or []
    for p in params:
        if p.get("name") == name:
            p["value"] = str(value)
            return
    raise SweepdeckError(
        f"The workflow template declares no parameter {name!r}.", f"Add it to {TEMPLATE}'s spec.arguments.parameters."
    )


def check_secret_name(name: Any) -> str:
    """A Secret name (a DNS subdomain), or a SweepdeckError."""
    text = str(name or "")
    if not _DNS_SUBDOMAIN_RE.match(text):
        raise SweepdeckError(
            f"Secret name {text!r} is not a Kubernetes name.",
            "Use lower-case letters, digits, - and . (e.g. sweepdeck-queue-token).",
        )
    return text


def set_token_secret(spec: dict[str, Any], secret: str) -> int:
    """Point every Secret volume of a workflow spec that holds queue tokens at ``secret``; returns how many."""
    n = 0
    for volume in spec.get("volumes") or []:
        source = volume.get("secret") or {}
        if source and {i.get("key") for i in source.get("items") or []} <= set(TOKEN_KEYS):
            source["secretName"] = secret
            n += 1
    return n


def build_workflow(
    *,
    model_version_id: str,
    experiment_id: str,
    api_base_url: str,
    batch_size: int = 100,
    max_parallel_pods: int = 50,
    namespace: str | None = None,
    image: str | None = None,
    endpoint: str | None = None,
    model: str | None = None,
    token_secret: str = TOKEN_SECRET,
) -> dict[str, Any]:
    """The Workflow to submit (a dict ready for the API).

    Args:
        model_version_id: The model version whose configs the workers claim.
        experiment_id: Labels the Workflow so the run can be found again.
        api_base_url: The queue API as the worker pods reach it.
        batch_size: Configs per claim (the queue API allows 1–500).
        max_parallel_pods: Worker pods (the ``withSequence`` count) and ``spec.parallelism``,
            the most pods the Workflow runs at once.
        namespace: Set in ``metadata.namespace`` when given.
        image / endpoint / model: Optional overrides of the template's defaults.
        token_secret: The Secret the steps mount the queue tokens from.

    Raises:
        SweepdeckError: a value the queue API or Argo would reject.
    """
    mvid = check_model_version_id(model_version_id)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 500:
        raise SweepdeckError(
            f"batch_size must be an integer from 1 to 500 (the queue API's limit), got {batch_size!r}."
        )
    if isinstance(max_parallel_pods, bool) or not isinstance(max_parallel_pods, int) or max_parallel_pods < 1:
        raise SweepdeckError(f"max_parallel_pods must be a positive integer, got {max_parallel_pods!r}.")
    if not URL_RE.match(str(api_base_url or "")):
        raise SweepdeckError(
            f"The queue API URL {api_base_url!r} is not an http(s) URL.",
            "Set queue_url (or api_base_url, as the pods reach it) in the argo profile, e.g. http://queue:8080.",
        )
    doc = load_template()
    set_parameter(doc, "model-version-id", mvid)
    set_parameter(doc, "batch-size", batch_size)
    set_parameter(doc, "api-base-url", str(api_base_url).rstrip("/"))
    set_parameter(doc, "max-parallel-pods", max_parallel_pods)
    # The worker pool's bound. An integer field in Argo's CRD (a parameter string fails
    # validation), so the number is written here rather than templated.
    doc["spec"]["parallelism"] = max_parallel_pods
    for name, value in (("image", image), ("endpoint", endpoint), ("model", model)):
        if value:
            set_parameter(doc, name, value)
    if not set_token_secret(doc["spec"], check_secret_name(token_secret)):
        raise SweepdeckError(f"The packaged template {TEMPLATE} mounts no queue token Secret.")
    meta = doc.setdefault("metadata", {})
    meta.pop("name", None)  # generateName only: the server picks a free name
    if not meta.get("generateName"):
        raise SweepdeckError(f"The packaged template {TEMPLATE} has no metadata.generateName.")
    labels = meta.setdefault("labels", {})
    labels["app.kubernetes.io/managed-by"] = "sweepdeck"
    labels[EXPERIMENT_LABEL] = experiment_id
    mv_label = label_value(mvid)
    if mv_label:
        labels[MODEL_VERSION_LABEL] = mv_label
    meta.setdefault("annotations", {})[MODEL_VERSION_ANNOTATION] = mvid
    if namespace:
        meta["namespace"] = namespace
    return doc


def workflow_for(
    spec: ExperimentSpec, profile: Profile, model_version_id: str, namespace: str | None = None
) -> dict[str, Any]:
    """:func:`build_workflow` with the values of a spec and an argo profile."""
    return build_workflow(
        model_version_id=model_version_id,
        experiment_id=spec.experiment_id,
        api_base_url=profile.get("api_base_url") or profile.get("queue_url") or "",
        batch_size=profile.get("batch_size", 100),
        max_parallel_pods=profile.get("max_parallel_pods", 50),
        namespace=namespace,
        image=profile.get("image"),
        endpoint=profile.get("endpoint"),
        model=spec.model,
        token_secret=profile.get("queue_token_secret") or TOKEN_SECRET,
    )


def yaml_dump(doc: Any) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, width=float("inf"))


def yaml_dump_all(docs: list[Any]) -> str:
    """Several manifests as one multi-document YAML text."""
    return "---\n".join(yaml_dump(d) for d in docs)
