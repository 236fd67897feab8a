"""Train one experiment of experiments.toml: ``python train.py NAME [--set key=value ...]``.

``python train.py --list`` shows the experiments; ``--help`` every option.
"""

import sys

from vit16.cli import main

if __name__ == "__main__":
    sys.exit(main())
