"""The sub-tables of an experiment that say how a run is launched and recorded,
never what it computes: ``[NAME.slurm]`` and ``[NAME.log]``. Both may change
between a checkpoint and the run that resumes it
(:data:`vit16.runstate.RESUME_IGNORED_KEYS`). :mod:`vit16.config` checks them
as it checks the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LogConfig", "SlurmConfig"]


@dataclass
class SlurmConfig:
    """``[NAME.slurm]``: the Slurm job of ``python train.py --submit NAME``.

    Only read by ``--submit`` (:mod:`vit16.slurm`); never changes the training
    math. Empty strings and zeros leave the cluster's default. The job runs
    ``nodes x tasks_per_node`` processes (DDP ranks).
    """

    partition: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 0  # 0 = one per GPU (gpus_per_node), or 1 without GPUs
    cpus_per_task: int = 0  # 0 = cluster default; torch threads per rank follow it
    mem_gb: float = 0.0  # per node; 0 = cluster default
    timeout_min: int = 60
    account: str = ""
    qos: str = ""
    constraint: str = ""
    job_name: str = ""  # "" = vit16-NAME
    array_parallelism: int = 16  # --sweep: at most this many array tasks at once
    max_requeues: int = 3  # requeues after hitting the time limit (preemptions do not count)
    signal_delay_s: int = 120  # USR2 this long before the time limit: checkpoint and requeue
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    additional_parameters: dict = field(default_factory=dict)  # extra sbatch options, e.g. {exclusive = true}


@dataclass
class LogConfig:
    """``[NAME.log]``: extra records of a run besides ``metrics.jsonl`` and the
    results row (:mod:`vit16.tblog`).

    ``tensorboard = true`` writes TensorBoard event files to
    ``RUN_DIR/tensorboard/`` (needs the ``tensorboard`` extra:
    ``pip install 'vit16[tensorboard]'``): the loss and LR of every optimizer
    step, validation top-1 / top-5 / loss and training images/s per epoch,
    test top-1 at the end. A resumed run continues the same log: what was
    logged after its checkpoint is purged, so no step appears twice.
    """

    tensorboard: bool = False
