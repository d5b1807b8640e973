"""The spot-recovery manifests (``templates/argo/spot-handler.yaml``), written for one Argo version.

Argo Workflows 3.6 added ``spec.schedules`` (a list) to the CronWorkflow and v4
removed the old ``spec.schedule`` (one string), which is all 3.5 knows: no single
manifest is valid on both 3.5 and 4. The packaged file has the 3.6+ form;
:func:`spot_handler_manifests` writes the form of the cluster's version, with the
queue URL, the token Secret, the image and the timeout filled in.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from backends.argo.workflow import TOKEN_SECRET, URL_RE, check_secret_name, set_parameter, set_token_secret
from config.errors import SweepdeckError

TEMPLATE = "argo/spot-handler.yaml"
_VERSION_RE = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.\d+)?$")


def argo_version(text: str) -> tuple[int, int]:
    """``(major, minor)`` of an Argo Workflows version such as ``3.5``, ``v3.5.0`` or ``4``.

    Raises:
        SweepdeckError: not a version, or one older than 3.5 (whose CronWorkflow sweepdeck does not write).
    """
    m = _VERSION_RE.match(str(text).strip())
    if not m:
        raise SweepdeckError(f"Argo version {text!r} is not a version.", "Give it as 3.5, 3.6, 4 or v4.1.2.")
    version = (int(m.group(1)), int(m.group(2) or 0))
    if version < (3, 5):
        raise SweepdeckError(f"Argo Workflows {text} is older than 3.5.", "Upgrade Argo Workflows to 3.5 or later.")
    return version


def load_spot_handler() -> list[dict[str, Any]]:
    """The packaged CronWorkflow and CronJob (fresh copies)."""
    import yaml

    from templates.render import template_path

    path = template_path(TEMPLATE)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except OSError as exc:
        raise SweepdeckError(f"Cannot read the packaged template {path}: {exc.strerror}.") from None
    if sorted(d.get("kind", "") for d in docs) != ["CronJob", "CronWorkflow"]:
        raise SweepdeckError(f"The packaged template {TEMPLATE} is not a CronWorkflow and a CronJob.")
    return copy.deepcopy(docs)


def spot_handler_manifests(
    version: str,
    *,
    api_base_url: str,
    token_secret: str = TOKEN_SECRET,
    image: str = "sweepdeck:latest",
    timeout_minutes: float = 120,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """The CronWorkflow (for Argo ``version``) and the CronJob, ready to apply.

    Raises:
        SweepdeckError: a bad version, URL, Secret name or timeout.
    """
    major_minor = argo_version(version)
    if not URL_RE.match(str(api_base_url)):
        raise SweepdeckError(
            f"The queue API URL {api_base_url!r} is not an http(s) URL.",
            "Give it as the cluster reaches the queue, e.g. http://sweepdeck-queue:8080.",
        )
    if not 0 <= timeout_minutes <= 10 * 365 * 24 * 60:
        raise SweepdeckError(f"The timeout must be from 0 to 10 years in minutes, got {timeout_minutes:g}.")
    secret = check_secret_name(token_secret)
    url = str(api_base_url).rstrip("/")
    minutes = f"{timeout_minutes:g}"
    docs = load_spot_handler()
    cron_wf = next(d for d in docs if d["kind"] == "CronWorkflow")
    cron_job = next(d for d in docs if d["kind"] == "CronJob")

    spec = cron_wf["spec"]
    if major_minor < (3, 6):  # the one schedule, where `schedules` was (keys keep their order in the YAML)
        spec = cron_wf["spec"] = {
            ("schedule" if k == "schedules" else k): (v[0] if k == "schedules" else v) for k, v in spec.items()
        }
    for name, value in (("api-base-url", url), ("timeout-minutes", minutes), ("image", image)):
        set_parameter({"spec": spec["workflowSpec"]}, name, value)
    set_token_secret(spec["workflowSpec"], secret)

    pod = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    set_token_secret(pod, secret)
    container = pod["containers"][0]
    container["image"] = image
    args = container["args"]
    args[args.index("--api-url") + 1] = url
    args[args.index("--timeout-minutes") + 1] = minutes
    if namespace:
        for doc in docs:
            doc["metadata"]["namespace"] = namespace
    return docs
