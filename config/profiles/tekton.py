"""Options of a ``tekton`` profile."""

from config.schema import Field, dns_name, positive, string_list

FIELDS = {
    "backend": Field(str, "tekton", choices=("tekton",)),
    "description": Field(str, ""),
    "gpu": Field(str, None, "GPU model for the memory planner (a name from config/data/gpus.yaml: H100-80GB, A40...)"),
    "kubeconfig": Field(str, None, "kubeconfig path (default $KUBECONFIG or ~/.kube/config)"),
    "context": Field(str, None, "kubeconfig context (default: current)"),
    "namespace": Field(str, None, "namespace to run in", check=dns_name),
    "blis_repo": Field(str, None,
                       "a checkout of the BLIS repo (tektonc-data-collection) to take the "
                       "template/values/pipelinerun/Tasks from"),
    "blis_sample": Field(str, "blis",
                         "with blis_repo: the tektoncsample/<name>/ directory to use (blis, blis-inference-perf...)"),
    "template": Field(str, None, "pipeline template (.yaml.j2); default: sweepdeck's BLIS template"),
    "values": Field(str, None, "base values.yaml; default: sweepdeck's"),
    "pipelinerun": Field(str, None, "base pipelinerun.yaml"),
    "gpu_product": Field(str, "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.product label value"),
    "pipeline_timeout": Field(str, "6h", "PipelineRun timeouts.pipeline"),
    "task_timeout": Field(str, "5h30m", "PipelineRun timeouts.tasks"),
    "service_account": Field(str, "helm-installer", "taskRunTemplate.serviceAccountName"),
    "secrets": Field(list, ["hf-secret", "s3-secret"],
                     "the Secrets the run needs in the namespace: [Hugging Face token (HF_TOKEN), S3 credentials]",
                     check=string_list),
    "pvcs": Field(list, ["model-pvc", "data-pvc"],
                  "the PersistentVolumeClaims the run needs: [model cache, results (data)]", check=string_list),
    "watch_timeout": Field(float, 300.0, "seconds each Kubernetes watch request stays open", check=positive),
    "gpu_label": Field(str, "nvidia.com/gpu.product", "node label that names the GPU product"),
    "results_path": Field(str, "/mnt/exp", "where data-pvc is mounted to copy results from"),
    "reader_image": Field(str, "registry.access.redhat.com/ubi9/ubi-minimal:latest",
                          "image of the short-lived pod that reads data-pvc (needs tar)"),
    "expected_minutes": Field(dict, {},
                              "expected minutes per task name prefix (download-model: 30...), for 2x over-time alerts"),
    "delete_after": Field(bool, False, "delete the PipelineRun after results are copied"),
    "copy_results": Field(bool, True, "copy results from data-pvc into the run store when the run ends"),
}

#: Its runs start from a BLIS values.yaml (the profile's ``values``, else sweepdeck's own).
USES_VALUES = True
