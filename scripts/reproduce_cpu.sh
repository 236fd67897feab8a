#!/usr/bin/env bash
# The CPU-scale measurements of results/REPRODUCTION.md: ViT vs ResNet from
# scratch on CIFAR-10, 3 seeds each, at 10 %, 30 % and 100 % of the training
# set. Every run appends a row to results/RESULTS.md; a rerun skips the points
# already finished (the sweeps resume), so the script can be stopped and
# started again. About 45 minutes on a 2-core CPU before the last sweep
# (resnet_quick, 10 epochs, about 20 minutes a seed).
#   bash scripts/reproduce_cpu.sh [DATA_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
SEEDS=seed=0,1,2
run() { python train.py "$@" --data-root "$DATA"; }
run quick --sweep "$SEEDS"
run resnet_quick_time --sweep "$SEEDS"
run quick --sweep data.fraction=0.1,0.3 --sweep "$SEEDS"
run resnet_quick_time --sweep data.fraction=0.1,0.3 --sweep "$SEEDS"
run quick --set ema_decay=0.999 --out runs/quick_ema
run resnet_quick --sweep "$SEEDS"
python -m vit16 report --experiment quick resnet_quick_time resnet_quick --group-by data.fraction
