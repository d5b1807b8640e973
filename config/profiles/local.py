"""Options of a ``local`` profile (also the top-level ``local:`` section)."""

from config.schema import Field, port, positive, string_list

FIELDS = {
    "backend": Field(str, "local", choices=("local",)),
    "description": Field(str, ""),
    "gpu": Field(str, None, "GPU model for the memory planner (a name from config/data/gpus.yaml: H100-80GB, A40...)"),
    "server": Field(str, "sim", "which server to start", choices=("sim", "vllm", "auto", "command")),
    "command": Field(list, None, "server command argv when server is 'command' (the model and settings are appended)",
                     check=string_list),
    "host": Field(str, "127.0.0.1", "address the server binds to"),
    "port": Field(int, 8000, "server port", check=port),
    "ready_timeout": Field(float, 600.0, "seconds to wait for the server to become ready", check=positive),
    "run_workload": Field(bool, True, "run the workload once the server is ready"),
    "keep_server": Field(bool, False, "keep serving after the workload finishes, until quit"),
}
