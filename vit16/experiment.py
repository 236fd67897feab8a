"""One experiment of ``experiments.toml``, run: training, or pruning rounds
when its ``[NAME.prune]`` table names a method. What ``python -m vit16 train``
(``train.py``) and a ``--submit`` job (:class:`vit16.slurm.TrainJob`) both call.
"""

from __future__ import annotations

from pathlib import Path

from vit16.config import ExperimentConfig

__all__ = ["DEFAULT_EXPERIMENTS", "TRAIN_RESULTS", "default_results_file", "run_experiment"]

DEFAULT_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments.toml"
TRAIN_RESULTS = "results/RESULTS.md"  # one row per finished training run


def default_results_file(cfg: ExperimentConfig) -> str:
    """The results table ``cfg``'s kind of run appends to: ``results/PRUNING.md``
    (:data:`vit16.prune.DEFAULT_RESULTS`, one row per round) for a pruning run,
    else :data:`TRAIN_RESULTS`."""
    if cfg.prune.method:
        from vit16.prune import DEFAULT_RESULTS

        return DEFAULT_RESULTS
    return TRAIN_RESULTS


def run_experiment(cfg: ExperimentConfig, out_dir: str, **kwargs) -> object:
    """Train ``cfg``, or run its pruning rounds when ``cfg.prune.method`` is set.

    Args:
        cfg: the resolved experiment.
        out_dir: its run directory.
        **kwargs: passed on to :func:`vit16.trainer.train` or
            :func:`vit16.prune.run_pruning` (``data_root``, ``device``,
            ``resume``, ``results_file``, ``overrides``).

    Returns:
        what that function returns (the run's summary).

    Raises:
        whatever that function raises (``ConfigError``, ``DataNotFoundError``,
        ``CheckpointError``, ``ResumeMismatchError``, ``TrainingDivergedError``, ...).
    """
    if cfg.prune.method:
        from vit16.prune import run_pruning

        return run_pruning(cfg, out_dir, **kwargs)
    from vit16.trainer import train

    return train(cfg, out_dir, **kwargs)
