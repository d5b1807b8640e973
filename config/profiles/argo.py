"""Options of an ``argo`` profile."""

from config.schema import Field, dns_name, positive

FIELDS = {
    "backend": Field(str, "argo", choices=("argo",)),
    "description": Field(str, ""),
    "gpu": Field(str, None, "GPU model for the memory planner (a name from config/data/gpus.yaml: H100-80GB, A40...)"),
    "kubeconfig": Field(str, None, "kubeconfig path (default $KUBECONFIG or ~/.kube/config)"),
    "context": Field(str, None, "kubeconfig context"),
    "namespace": Field(str, "argo", "namespace the workflows run in", check=dns_name),
    "queue_url": Field(str, "http://127.0.0.1:8080", "base URL of the work-queue API, as sweepdeck reaches it"),
    "api_base_url": Field(str, None, "base URL of the work-queue API as the worker pods reach it (default: queue_url)"),
    "queue_token_file": Field(str, None, "the queue's token file: sweepdeck sends its admin token and makes the "
                                         "Secret from it (default: $SWEEPDECK_QUEUE_TOKEN, else the file "
                                         "queue serve generates)"),
    "queue_token_secret": Field(str, "sweepdeck-queue-token", "Secret the workflow's steps mount the queue tokens from",
                                check=dns_name),
    # An opaque id ("llama3-70b-v2", a UUID); a bare number in YAML is accepted and used as text.
    "model_version_id": Field((str, int), None, "model version to sweep (an opaque id such as llama3-70b-v2)"),
    "batch_size": Field(int, 100, "configs a worker claims at a time (the queue API allows 1-500)", check=positive),
    "max_parallel_pods": Field(int, 50, "worker pods the Workflow runs at once", check=positive),
    "image": Field(str, None, "image the workflow's steps run (default: the template's sweepdeck:latest)"),
    "endpoint": Field(str, None, "OpenAI-compatible server the workers benchmark (default: the template's)"),
    "poll_interval": Field(float, 2.0, "seconds between queue progress reads", check=positive),
    "stale_after_min": Field(float, 120.0, "running longer than this many minutes counts as stale", check=positive),
    "watch_timeout": Field(float, 300.0, "seconds each Kubernetes watch request stays open", check=positive),
    "delete_after": Field(bool, False,
                          "delete the Workflow after it finishes (a live one is always deleted on cleanup)"),
}

#: Its runs start from a BLIS values.yaml (the profile's ``values``, else sweepdeck's own).
USES_VALUES = True
