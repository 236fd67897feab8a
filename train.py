"""Train one experiment of experiments.toml: ``python train.py NAME [--set key=value ...]``
(the same as ``python -m vit16 train``). ``python train.py --list`` shows the
experiments; ``--help`` every option."""

import sys

from vit16.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
