"""``python train.py --submit NAME``: an experiment as a Slurm job, through submitit.

    python train.py --submit quick --set optim.lr=1e-3
    python train.py --submit quick --sweep optim.lr=1e-3,3e-4 --sweep model.drop_path=0,0.1
    python train.py --submit quick --local          # submitit's local executor, no Slurm

The job's shape comes from the experiment's ``[NAME.slurm]`` table
(:class:`vit16.config.SlurmConfig`, inherited through ``base`` and changeable
with ``--set slurm.KEY=VALUE``). Every task of the job runs
:class:`TrainJob`: with several tasks it exports the ``env://`` rendezvous
variables (:func:`vit16.distributed.export_job_env`) and the trainer runs DDP.

A sweep is one job array (``map_array``): one run directory per point under
the experiment's run directory, every finished point appending its row to the
results table (rows are appended under a file lock).

Preemption and time limits: Slurm sends ``USR2`` ``signal_delay_s`` before
the limit; the training loop writes ``last.pt`` at the next optimizer-step
boundary, then submitit requeues the job (:meth:`TrainJob.checkpoint`), and
the requeued job resumes from that ``last.pt``: no work is redone. A job requeued by hand (``scontrol requeue``) resumes the same way
(``SLURM_RESTART_COUNT > 0`` means resume even after ``--no-resume``). On
SIGTERM (requeue, preemption, ``scancel``) the job exits at once rather than
training on until Slurm's SIGKILL, as submitit's default handler would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shlex
import shutil
import signal
from pathlib import Path
from typing import Any

import submitit

from vit16.config import ConfigError, ExperimentConfig
from vit16.experiment import run_experiment
from vit16.stop import request_stop
from vit16.sweep import RunSpec

__all__ = ["SubmitError", "Submitted", "TrainJob", "describe", "executor_parameters", "submit"]


class SubmitError(ConfigError):
    """``--submit`` cannot go ahead (no Slurm, the controller refused the job);
    ``str(err)`` is one line saying why and what to do."""


@dataclasses.dataclass
class Submitted:
    """What :func:`submit` did: the submitit jobs, one per run, in order."""

    jobs: list[Any]
    runs: list[RunSpec]
    folder: Path
    local: bool
    array: bool


class TrainJob(submitit.helpers.Checkpointable):
    """The callable every task of a ``--submit`` job runs: ``TrainJob(...)(run)``.

    Args:
        data_root, device, results_file: as ``train.py``'s ``--data-root``,
            ``--device`` (``None`` = CUDA when the node has it), ``--results``.
    """

    def __init__(self, data_root: str | None, device: str | None, results_file: str | None):
        self.data_root = data_root
        self.device = device
        self.results_file = results_file

    def __call__(self, run: RunSpec) -> dict[str, Any]:
        import torch

        from vit16.distributed import export_job_env, finish

        # submitit ignores SIGTERM (it waits for SIGKILL); Slurm sends it when the job is
        # requeued (scontrol requeue, preemption) or cancelled: stop at once instead of
        # training on for KillWait seconds, to resume from last.pt in the next run
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        _save_before_requeue()
        export_job_env()  # RANK, WORLD_SIZE, MASTER_ADDR... when the job has several tasks
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK") or run.cfg.slurm.cpus_per_task or 0)
        if threads > 0:
            torch.set_num_threads(threads)  # one rank per task: never more threads than its CPUs
        restarted = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0  # scontrol requeue, node failure
        summary = run_experiment(run.cfg, run.out_dir, data_root=self.data_root,
                                 device=self.device, resume=run.resume or restarted,
                                 results_file=self.results_file, overrides=run.overrides)
        finish()  # the job's ranks leave together
        return summary

    def checkpoint(self, run: RunSpec) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption / time limit (USR2): the requeued job
        runs the same call, resuming from the run directory's ``last.pt``."""
        return submitit.helpers.DelayedSubmission(self, dataclasses.replace(run, resume=True))


def _save_before_requeue() -> None:
    """Wrap submitit's USR2 handler (preemption / time limit: checkpoint and
    requeue): while epochs run, the training loop first writes ``last.pt`` at
    the next optimizer-step boundary (:func:`vit16.stop.request_stop`), then
    submitit requeues; outside the epochs it acts at once."""
    submitit_handler = signal.getsignal(signal.SIGUSR2)
    if not callable(submitit_handler):
        return

    def save_then_requeue(signum, frame) -> None:
        if not request_stop(then=lambda: submitit_handler(signum, frame)):
            submitit_handler(signum, frame)

    signal.signal(signal.SIGUSR2, save_then_requeue)


def _exit_on_sigterm(signum, frame) -> None:
    print("vit16: SIGTERM (job requeued, preempted or cancelled): exiting; a requeued job "
          "resumes from last.pt", flush=True)
    raise SystemExit(128 + signum)


# ----------------------------------------------------------------------------- submitting


def executor_parameters(cfg: ExperimentConfig, local: bool = False) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for ``cfg.slurm`` (unset = cluster default).

    ``cfg`` is resolved (:func:`vit16.config.resolve` checked the ranges of its values).

    Raises:
        SubmitError: ``nodes > 1`` with ``local`` (the local executor runs on this machine only).
    """
    s = cfg.slurm
    table = f"[{cfg.name or 'NAME'}.slurm]"
    tasks = s.tasks_per_node or max(s.gpus_per_node, 1)
    # the job unpickles vit16.slurm.TrainJob: make this vit16 importable even when not installed
    root = shlex.quote(str(Path(__file__).resolve().parents[1]))
    setup = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}", *s.setup]
    if local and s.nodes > 1:
        raise SubmitError(f"{table}: nodes = {s.nodes}, but --local runs on this machine only; "
                          "add --set slurm.nodes=1")
    p: dict[str, Any] = {
        "name": s.job_name or f"vit16-{cfg.name or 'run'}",
        "timeout_min": s.timeout_min,
        "nodes": s.nodes,
        "tasks_per_node": tasks,
        "gpus_per_node": s.gpus_per_node or None,
        "cpus_per_task": s.cpus_per_task or None,
        "mem_gb": s.mem_gb or None,
    }
    if local:
        p["local_setup"] = setup
        return {k: v for k, v in p.items() if v is not None}
    extra = {"requeue": True}  # scontrol requeue works even where JobRequeue=0 is the default
    extra.update(s.additional_parameters)
    p.update(
        slurm_partition=s.partition or None,
        slurm_account=s.account or None,
        slurm_qos=s.qos or None,
        slurm_constraint=s.constraint or None,
        slurm_signal_delay_s=s.signal_delay_s,
        slurm_array_parallelism=s.array_parallelism,
        slurm_setup=setup,
        slurm_additional_parameters=extra,
    )
    return {k: v for k, v in p.items() if v is not None}


def _check_slurm() -> None:
    if shutil.which("sbatch") is None:
        raise SubmitError(
            "--submit: no Slurm here (sbatch is not on PATH); use --submit --local to run the job "
            "through submitit on this machine, or train directly without --submit"
        )


def submit(runs: list[RunSpec], folder: Path, *, local: bool = False, data_root: str | None = None,
           device: str | None = None, results_file: str | None = None) -> Submitted:
    """Submit ``runs`` (from :func:`plan_runs`) and return at once.

    One run is one job; several are one job array (``map_array``) whose shape
    is the first run's ``[NAME.slurm]`` (a sweep may not change it).

    Raises:
        SubmitError: no ``sbatch`` on PATH (unless ``local``), Slurm refused
            the job (e.g. the controller is down), or sweep points differ in
            their ``slurm`` table.
    """
    if not local:
        _check_slurm()
    runs = [dataclasses.replace(r, out_dir=str(Path(r.out_dir).absolute())) for r in runs]
    folder = Path(folder).absolute()  # the job may start in another working directory
    shapes = {repr(dataclasses.asdict(r.cfg.slurm)) for r in runs}
    if len(shapes) > 1:
        raise SubmitError("--sweep over slurm.* keys is not possible: one job array has one shape; "
                          "submit those points separately")
    params = executor_parameters(runs[0].cfg, local)
    s = runs[0].cfg.slurm
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if local else "slurm",
                                     slurm_max_num_timeout=s.max_requeues,
                                     local_max_num_timeout=s.max_requeues)
    executor.update_parameters(**params)
    job = TrainJob(str(Path(data_root).absolute()) if data_root else None, device,
                   str(Path(results_file).absolute()) if results_file else None)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):  # submitit prints sbatch's stderr; we say it once
            if len(runs) == 1:
                jobs = [executor.submit(job, runs[0])]
            else:
                jobs = executor.map_array(job, runs)
    except (submitit.core.utils.FailedJobError, OSError, RuntimeError) as e:
        lines = [ln.strip() for ln in (str(e) or err.getvalue()).splitlines() if ln.strip()]
        why = lines[-1] if lines else type(e).__name__
        raise SubmitError(
            f"--submit: Slurm did not take the job ({why}); check that the controller is up "
            "(sinfo), or use --submit --local, or train without --submit"
        ) from None
    return Submitted(jobs, runs, folder, local, len(runs) > 1)


def describe(sub: Submitted) -> str:
    """What ``train.py --submit`` prints: job ids, run directories, log files,
    and the commands to follow and cancel the job."""

    def rel(p: Path | str) -> str:
        p = Path(p)
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)

    first = sub.jobs[0]
    job_id = first.job_id.split("_")[0]
    cfg = sub.runs[0].cfg
    s = cfg.slurm
    tasks = s.tasks_per_node or max(s.gpus_per_node, 1)
    def n(k: int, what: str) -> str:
        return f"{k} {what}{'' if k == 1 else 's'}"

    shape = f"{n(s.nodes, 'node')} x {n(tasks, 'task')}" + (
        f", {n(s.gpus_per_node, 'GPU')} per node" if s.gpus_per_node else "")
    kind = "local job" if sub.local else "Slurm job"
    if sub.array:
        kind += f" array {job_id} of {len(sub.jobs)} runs (each "
    else:
        kind += f" {job_id} ("
    where = ("on this machine, submitit local executor, id = controller pid" if sub.local
             else f"partition {s.partition}" if s.partition else "default partition")
    lines = [f"submitted {cfg.name}: {kind}{shape}, {s.timeout_min} min, {where})"]
    for job, run in zip(sub.jobs, sub.runs, strict=True):
        label = f"  {job.job_id}" if sub.array else "  run dir"
        lines.append(f"{label}: {rel(run.out_dir)}")
        lines.append(f"    log: {rel(job.paths.stdout)}  (errors: {rel(job.paths.stderr)})")
    log = shlex.quote(rel(first.paths.stdout))
    if sub.local:
        lines.append(f"follow: tail -f {log}   cancel: kill -INT {job_id}")
    else:
        lines.append(f"follow: tail -f {log}   |  squeue -j {job_id}  |  sacct -j {job_id}"
                     f"   cancel: scancel {job_id}")
    return "\n".join(lines)
