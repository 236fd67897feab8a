"""``python -m vit16 COMMAND [ARGS]`` (or ``vit16 COMMAND``): run one of the
commands; ``python -m vit16`` alone lists them, ``COMMAND --help`` shows its
options."""

from __future__ import annotations

import importlib
import sys

# command -> (module of vit16.commands, what it does)
COMMANDS = {
    "train": ("train", "train an experiment of experiments.toml (as train.py)"),
    "bench": ("bench", "training images/s and MFU of the models, images/s of the data pipeline"),
    "fewshot": ("fewshot", "linear few-shot top-1 of frozen features (paper section 4.1)"),
    "inspect": ("inspect", "attention distance, position embeddings, filters, rollout (section 4.5)"),
    "report": ("report", "n, mean, std, min-max of top-1 over the seeds of each run of a results table"),
    "plot": ("plot", "training curves of runs, or top-1 against sparsity of pruning runs"),
    "export-pruned": ("export_pruned", "a pruned checkpoint as a physically smaller ViT"),
    "evaluate": ("evaluate", "top-1/top-5, loss, per-class accuracy and confusion matrix of weights"),
    "predict": ("predict", "class probabilities of a model on image files or folders"),
    "export": ("export", "a model as ONNX, TorchScript or torch.export file, checked against PyTorch"),
}


def usage() -> str:
    """The list of commands, as ``python -m vit16`` prints it.

    Returns:
        the text, ending in a newline.
    """
    lines = ["usage: python -m vit16 COMMAND [ARGS]   (COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<14} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv[0]`` with the rest of ``argv``.

    Args:
        argv: ``COMMAND [ARGS]``, ``None`` for ``sys.argv[1:]``.

    Returns:
        the command's exit code; 0 after listing the commands (no command,
        ``-h``, ``--help``), 2 for an unknown command.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    module = importlib.import_module(f"vit16.commands.{COMMANDS[argv[0]][0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
