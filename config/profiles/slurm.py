"""Options of a ``slurm`` profile (e.g. ``alvis``)."""

from config.schema import REQUIRED, Field, duration, port, positive, safe_word, string_list


def _backoff(value) -> str | None:
    ok = value and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    return None if ok else "a list of positive numbers of seconds"


FIELDS = {
    "backend": Field(str, "slurm", choices=("slurm",)),
    "description": Field(str, ""),
    "gpu": Field(str, None, "GPU model for the memory planner (a name from config/data/gpus.yaml: H100-80GB, A40...)"),
    "ssh_host": Field(str, REQUIRED, "an SSH host or ~/.ssh/config alias", check=safe_word),
    "ssh_port": Field(int, None, "SSH port (default from ~/.ssh/config or 22)", check=port),
    "ssh_user": Field(str, None, "SSH user (default from ~/.ssh/config)", check=safe_word),
    "ssh_config": Field(str, None, "path to an ssh config file (default ~/.ssh/config)"),
    "ssh_key": Field(str, None, "path to a private key (default: agent / ssh config)"),
    "known_hosts": Field(str, None, "known_hosts file (default ~/.ssh/known_hosts); new hosts are added (accept-new)"),
    "account": Field(str, None, "SLURM account (#SBATCH --account)", check=safe_word),
    "partition": Field(str, None, "SLURM partition", check=safe_word),
    "gpus": Field(str, None, "GPU request, e.g. A40:1 (#SBATCH --gpus-per-node); none for a CPU-only profile",
                  check=safe_word),
    "sbatch_args": Field(list, [], "extra sbatch command-line arguments, e.g. [--qos, short]", check=string_list),
    "time": Field(str, "1:00:00", "default job duration", check=duration),
    "container": Field(str, "vllm serve", "server command prefix, e.g. apptainer exec IMAGE.sif vllm serve"),
    "server_host": Field(str, None, "address the server binds to and the tunnel connects to (default: the node's name)",
                         check=safe_word),
    "node_ssh": Field(bool, False, "open the tunnel over an SSH hop to the compute node (ssh -J login NODE), "
                      "like the original script"),
    "node_ssh_port": Field(int, None, "SSH port of the compute nodes (default 22)", check=port),
    "modules": Field(list, [], "module lines run before the server", check=string_list),
    "workdir": Field(str, "~/.sweepdeck/runs", "remote run directory root on the shared filesystem"),
    "local_port": Field(int, 58000, "local tunnel port", check=port),
    "models": Field(str, None,
                    "models.json: overrides of discovered models (name -> path, max_model_len, description)"),
    "hub": Field(str, None, "the cluster's Hugging Face hub directory to discover models in (models--ORG--NAME "
                            "folders); a profile named alvis defaults to /mimer/NOBACKUP/Datasets/LLM/huggingface/hub"),
    "default_model": Field(str, "gpt-oss-20b", "model used when none is given"),
    "poll_interval": Field(float, 5.0, "seconds between squeue polls", check=positive),
    "start_timeout": Field(float, 600.0, "seconds a job may stay pending", check=positive),
    "ready_timeout": Field(float, 600.0, "seconds the server may take to become ready", check=positive),
    "connect_timeout": Field(float, 30.0, "SSH connect / tunnel test timeout in seconds", check=positive),
    "reconnect_backoff": Field(list, None, "seconds between SSH reconnect attempts (default 0.2, 0.5, 1, 2, 5, 10)",
                               check=_backoff),
    "run_workload": Field(bool, False,
                          "run the spec's workload through the tunnel, then end (default: serve until quit)"),
}
