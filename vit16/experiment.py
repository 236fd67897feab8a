"""One experiment of ``experiments.toml``, run: training, or pruning rounds
when its ``[NAME.prune]`` table names a method. What ``python -m vit16 train``
(``train.py``) and a ``--submit`` job (:class:`vit16.slurm.TrainJob`) both call.
"""

from __future__ import annotations

from pathlib import Path

from vit16.config import ExperimentConfig

__all__ = ["DEFAULT_EXPERIMENTS", "TRAIN_RESULTS", "check_experiment", "default_results_file",
           "run_experiment"]

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


def check_experiment(cfg: ExperimentConfig) -> None:
    """Fail on an unknown model, data set or schedule name, a bad
    ``[NAME.prune]`` table, ``log.tensorboard`` without the tensorboard
    package, or model, optimizer or schedule options their builders reject
    (:func:`vit16.preflight.check_options`), before any work.

    Raises:
        vit16.UnknownNameError: an unknown name.
        ConfigError: a bad pruning table or option, a missing package (one line
            naming ``[NAME.section]`` or the fix).
    """
    from vit16.preflight import check_options
    from vit16.registry import DATASETS, MODELS, SCHEDULES

    for registry, name in ((MODELS, cfg.model.name), (DATASETS, cfg.data.name),
                           (SCHEDULES, cfg.schedule.name)):
        registry.get(name)
    if cfg.prune.method:
        from vit16.prune import check_prune_config

        check_prune_config(cfg)
    if cfg.log.tensorboard:
        from vit16.tblog import check_available

        check_available()
    check_options(cfg)


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
