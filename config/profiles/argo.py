"""Options of an ``argo`` profile."""

from config.schema import Field, dns_name, positive

FIELDS = {
    "backend": Field(str, "argo", choices=("argo",)),
    "description": Field(str, ""),
    "kubeconfig": Field(str, None, "kubeconfig path (default $KUBECONFIG or ~/.kube/config)"),
    "context": Field(str, None, "kubeconfig context"),
    "namespace": Field(str, "argo", "namespace the workflows run in", check=dns_name),
    "queue_url": Field(str, "http://127.0.0.1:8080", "base URL of the work-queue API"),
    "model_version_id": Field(int, None, "model version to sweep"),
    "batch_size": Field(int, 100, check=positive),
    "max_parallel_pods": Field(int, 50, check=positive),
    "poll_interval": Field(float, 2.0, "seconds between queue progress reads", check=positive),
}
