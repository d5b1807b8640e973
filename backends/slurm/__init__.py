"""The ``slurm`` backend: vLLM as a SLURM job over SSH (the Alvis workflow).

Modules: :mod:`.ssh` (reconnecting connection, accept-new host keys, tunnel),
:mod:`.jobs` (sbatch/squeue/scancel, the shared squeue poller),
:mod:`.catalog` (models.json), :mod:`.logs` (remote tails with byte offsets),
:mod:`.backend` (the Backend implementation).
"""

from backends.slurm.backend import SlurmBackend

__all__ = ["SlurmBackend"]
