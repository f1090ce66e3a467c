"""Generate batch scripts for ``hpcml`` jobs: SLURM (``sbatch``) or plain ``mpirun``.

``hpcml jobscript`` prints a script that a user can read, edit and submit.  The
request is validated first (counts, time format, GPU flags per scheduler), so an
impossible request fails here instead of after hours in the queue.  The scripts
follow the shipped templates in ``jobscripts/``: ``set -euo pipefail``, one Numba
thread pool per rank sized by ``--cpus-per-task``, ``srun --mpi=pmi2`` (so ranks
are wired up instead of N singletons), output files named by job id, and a
``USR1`` signal before the wall-clock limit that asks hpcml to checkpoint and then
requeues the job.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

__all__ = ["JobRequest", "JobScriptError", "parse_time", "render"]

_TIME = re.compile(r"^(?:(\d+)-)?(\d{1,2}):(\d{2}):(\d{2})$")


class JobScriptError(ValueError):
    """The requested job cannot be expressed or cannot run (a usage error: ``hpcml jobscript`` exits 2)."""

    exit_code = 2


def parse_time(text: str) -> int:
    """Seconds in a SLURM wall time ``[D-]HH:MM:SS``; raises on anything else."""
    m = _TIME.match(text.strip())
    if not m:
        raise JobScriptError(f"--time {text!r}: expected HH:MM:SS or D-HH:MM:SS")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    if minutes > 59 or seconds > 59 or (days and hours > 23):
        raise JobScriptError(f"--time {text!r}: minutes/seconds must be < 60 and hours < 24 with a day count")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise JobScriptError(f"--time {text!r}: must be positive")
    return total


@dataclass
class JobRequest:
    """What the user asked for."""

    scheduler: str
    nodes: int
    ntasks_per_node: int
    cpus_per_task: int
    time: str
    command: list[str] = field(default_factory=list)
    gpus_per_task: int = 0
    partition: str | None = None
    account: str | None = None
    job_name: str = "hpcml"
    cores_per_node: int | None = None
    signal_seconds: int = 120

    def validate(self) -> None:
        """Raise :class:`JobScriptError` for an impossible or unsupported request."""
        if self.scheduler not in ("slurm", "mpirun"):
            raise JobScriptError(f"--scheduler {self.scheduler!r}: expected slurm or mpirun")
        for name in ("nodes", "ntasks_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise JobScriptError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_task < 0:
            raise JobScriptError(f"--gpus-per-task must be >= 0, got {self.gpus_per_task}")
        seconds = parse_time(self.time)
        if self.scheduler == "slurm" and seconds <= self.signal_seconds:
            raise JobScriptError(
                f"--time {self.time} leaves no room for the checkpoint signal {self.signal_seconds} s "
                "before the limit; ask for more time"
            )
        if self.cores_per_node is not None and self.ntasks_per_node * self.cpus_per_task > self.cores_per_node:
            raise JobScriptError(
                f"{self.ntasks_per_node} tasks x {self.cpus_per_task} CPUs = "
                f"{self.ntasks_per_node * self.cpus_per_task} CPUs per node, but nodes have "
                f"{self.cores_per_node} cores"
            )
        if self.scheduler == "mpirun" and self.nodes != 1:
            raise JobScriptError("--scheduler mpirun generates a single-node script; use slurm for several nodes")
        if not self.command:
            raise JobScriptError("no command given: add it after --, e.g. -- hpcml run job.toml")
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.job_name):
            raise JobScriptError(f"--job-name {self.job_name!r}: use letters, digits, '.', '_' and '-'")
        for name in ("partition", "account"):  # written into #SBATCH lines as they are
            value = getattr(self, name)
            if value and not re.match(r"^[A-Za-z0-9_.,+-]+$", value):
                raise JobScriptError(f"--{name} {value!r}: use letters, digits and '.', '_', '-', '+', ','")

    @property
    def ntasks(self) -> int:
        """Total MPI ranks."""
        return self.nodes * self.ntasks_per_node


def _with_restart(command: list[str]) -> list[str]:
    """``hpcml run ...`` with ``--set run.restart=auto`` (a requeued job resumes; an explicit setting wins)."""
    if len(command) >= 2 and command[0].endswith("hpcml") and command[1] == "run":
        if not any("run.restart" in c for c in command):
            return [*command[:2], "--set", "run.restart=auto", *command[2:]]
    return command


def _slurm(req: JobRequest) -> str:
    cmd = shlex.join(_with_restart(req.command))
    head = [
        "#!/bin/bash",
        f"#SBATCH --job-name={req.job_name}",
        f"#SBATCH --nodes={req.nodes}",
        f"#SBATCH --ntasks-per-node={req.ntasks_per_node}",
        f"#SBATCH --cpus-per-task={req.cpus_per_task}",
        f"#SBATCH --time={req.time}",
        f"#SBATCH --output={req.job_name}-%j.out",
        f"#SBATCH --error={req.job_name}-%j.err",
        f"#SBATCH --signal=B:USR1@{req.signal_seconds}",
        "#SBATCH --requeue",
    ]
    if req.partition:
        head.append(f"#SBATCH --partition={req.partition}")
    if req.account:
        head.append(f"#SBATCH --account={req.account}")
    if req.gpus_per_task:
        head.append(f"#SBATCH --gpus-per-task={req.gpus_per_task}")
    body = f"""
# Generated by `hpcml jobscript`: {req.ntasks} ranks ({req.nodes} node(s) x {req.ntasks_per_node}),
# {req.cpus_per_task} CPU(s) per rank{f", {req.gpus_per_task} GPU(s) per rank" if req.gpus_per_task else ""}.
# Edit the #SBATCH lines for your site; keep `srun --mpi=pmi2` (without a PMI plugin srun
# starts {req.ntasks} independent copies and hpcml refuses to run).
set -euo pipefail

# One Numba thread per allocated CPU of each rank; no hidden BLAS/OpenMP oversubscription.
export NUMBA_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-1}}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
{_gpu_env() if req.gpus_per_task else ""}
echo "job $SLURM_JOB_ID on $SLURM_JOB_NUM_NODES node(s): $SLURM_NTASKS ranks x $SLURM_CPUS_PER_TASK CPUs"

# SLURM sends USR1 {req.signal_seconds} s before the time limit (--signal above): forward it to
# the ranks, which write a checkpoint and stop cleanly; then requeue so the job continues from it.
srun --mpi=pmi2 --cpu-bind=cores --kill-on-bad-exit=1 {cmd} &
step=$!
on_signal() {{
    echo "time limit near: asking hpcml to checkpoint"
    kill -USR1 "$step" 2>/dev/null || true
    wait "$step" || true
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}}
trap on_signal USR1 TERM
wait "$step"
"""
    return "\n".join(head) + "\n" + body.lstrip("\n")


def _gpu_env() -> str:
    return """# GPU per rank: SLURM binds one GPU to each task; hpcml picks local_rank % GPUs seen.
# CUDA-aware MPI switches (harmless when unused): MPICH and Open MPI/UCX.
export MPIR_CVAR_ENABLE_GPU=1
export OMPI_MCA_opal_cuda_support=true UCX_MEMTYPE_CACHE=n
# Tell hpcml whether the MPI is CUDA-aware (1) or must stage through host memory (0).
export HPCML_CUDA_AWARE="${HPCML_CUDA_AWARE:-0}"
"""


def _mpirun(req: JobRequest) -> str:
    cmd = shlex.join(req.command)
    return f"""#!/bin/bash
# Generated by `hpcml jobscript --scheduler mpirun`: {req.ntasks} ranks x {req.cpus_per_task} thread(s)
# on this machine. Edit MPIEXEC to use another MPI (e.g. mpiexec.mpich, or your module's mpirun).
set -euo pipefail
MPIEXEC="${{MPIEXEC:-mpiexec}}"
export NUMBA_NUM_THREADS={req.cpus_per_task}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
{_gpu_env() if req.gpus_per_task else ""}stamp="$(date +%Y%m%d-%H%M%S)"
echo "running {req.ntasks} ranks; log in {req.job_name}-$stamp.log"
"$MPIEXEC" -n {req.ntasks} {cmd} 2>&1 | tee "{req.job_name}-$stamp.log"
"""


def render(req: JobRequest) -> str:
    """Validate ``req`` and return the script text."""
    req.validate()
    return _slurm(req) if req.scheduler == "slurm" else _mpirun(req)
