"""Launch checks: a run that would get fewer (or more) ranks than it asked for stops before it reads any data,
and a CPU run on several processes says what it implies. Silent under-delivery is the failure these prevent:
``sbatch`` without ``srun`` starts one task, Lightning then trains on one device with the schedule scaled
for one, and the other GPUs of the allocation sit idle. And NCCL's error handling, so that a rank left
waiting in a collective by a failed one ends at ``trainer.strategy.timeout``."""

import logging
import os

import pytorch_lightning as pl

from datnet.runs.plan import RunPlan

log = logging.getLogger(__name__)

# what the launchers say about the processes they started (SLURM's srun, torchrun, Lightning's own launcher)
LAUNCHER_VARIABLES = (
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_JOB_NUM_NODES",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "LOCAL_RANK",
)


# torch 2.x's name first, then the older one it still reads; 1: a failed or timed-out NCCL collective aborts
# its communicator and ends the process, instead of leaving it to wait
NCCL_ERROR_HANDLING = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING")


class LaunchError(RuntimeError):
    """The launcher gives this run another number of ranks than ``trainer.devices`` x
    ``trainer.num_nodes``."""


def launcher_environment() -> str:
    """The launcher variables that are set, as ``NAME=value`` (or a note that none is)."""
    found = [f"{name}={os.environ[name]}" for name in LAUNCHER_VARIABLES if name in os.environ]
    return ", ".join(found) if found else "no SLURM or torchrun variables set"


def check_world_size(plan: RunPlan, trainer: pl.Trainer) -> None:
    """Raises :class:`LaunchError` when Lightning's world size is not the plan's, naming what was asked, what
    the launcher gives and how to start the run so that they agree."""
    if trainer.world_size == plan.world_size:
        return
    devices, nodes = plan.cfg.trainer.get("devices"), int(plan.cfg.trainer.get("num_nodes", 1))
    per_node = plan.world_size // max(nodes, 1)
    raise LaunchError(
        f"trainer.devices={devices} x trainer.num_nodes={nodes} asks for {plan.world_size} ranks, but the "
        f"launcher gives {trainer.world_size} ({type(trainer.strategy).__name__}; "
        f"{launcher_environment()}): the LR and schedule would be scaled for {trainer.world_size} ranks"
        " while devices sit idle. Start one process per device: under SLURM, `srun python src/train.py ...` "
        f"in a batch script with `#SBATCH --nodes={nodes} --ntasks-per-node={per_node}` "
        "(or hydra/launcher=slurm, which asks for that); under torchrun, "
        f"`torchrun --nnodes={nodes} --nproc_per_node={per_node} src/train.py ...`; "
        "or set trainer.devices / trainer.num_nodes to what the job has"
    )


def warn_cpu_processes(plan: RunPlan, on_cpu: bool) -> None:
    """A CPU run on more than one process (each a "device") warns with the total batch and LR it implies and
    the cores it has: ``experiment=demo trainer.devices=8`` on 2 cores runs 8 processes at 4x the LR."""
    if not on_cpu or plan.world_size <= 1:
        return
    lr = f", LR {plan.recipe.lr:g}" if plan.recipe is not None else ""
    log.warning(
        "%d CPU processes (trainer.devices x trainer.num_nodes) on %s cores: total batch %d%s, as on %d GPUs",
        plan.world_size,
        os.cpu_count(),
        plan.total_batch_size,
        lr,
        plan.world_size,
    )


def enable_nccl_error_handling() -> None:
    """NCCL's asynchronous error handling on (``TORCH_NCCL_ASYNC_ERROR_HANDLING=1``) unless the user set it
    (either name of :data:`NCCL_ERROR_HANDLING`): a rank whose collective times out
    (``trainer.strategy.timeout``, e.g. because another rank died) raises and ends instead of hanging. Read
    when the process group is created, so set before ``trainer.fit``; the ranks that Lightning starts inherit
    it."""
    if not any(name in os.environ for name in NCCL_ERROR_HANDLING):
        os.environ[NCCL_ERROR_HANDLING[0]] = "1"
