#!/usr/bin/env bash
# The CPU-scale measurements of results/REPRODUCTION.md: ViT vs ResNet from
# scratch on CIFAR-10 (3 seeds each) at 10, 20, 30, 50 and 100 % of the
# training set, and the proxy pre-training gain (pre-train once, fine-tune and
# train from scratch with 3 seeds each), the hybrid, and patch-8 weights
# fine-tuned at patch 4 (FlexiViT's resize against a bilinear one). Every run appends a row to
# results/RESULTS.md; a rerun skips the points already finished (the sweeps
# resume), so the script can be stopped and started again. About 8 hours on a
# 2-core CPU in all (resnet_quick, 10 epochs, is about 21 minutes a seed at
# full data; proxy_pretrain about 30 minutes).
#   bash scripts/reproduce_cpu.sh [DATA_ROOT]
# On a 2-core CPU, two 1-thread processes (OMP_NUM_THREADS=1, one sweep point each,
# e.g. --sweep seed=1 and --sweep seed=2) train these small models 1.33x faster in
# all than one 2-thread process (measured with proxy_finetune); two 2-thread
# processes fight over the cores and are many times slower.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
SEEDS=seed=0,1,2
run() { python train.py "$@" --data-root "$DATA"; }
run quick --sweep "$SEEDS"
run resnet_quick_time --sweep "$SEEDS"
run quick --sweep data.fraction=0.1,0.2,0.3,0.5 --sweep "$SEEDS"
run resnet_quick_time --sweep data.fraction=0.1,0.3 --sweep "$SEEDS"
run quick --set ema_decay=0.999 --out runs/quick_ema
run resnet_quick --sweep "$SEEDS"
run resnet_quick --sweep data.fraction=0.1,0.2,0.5 --sweep "$SEEDS"
run proxy_pretrain
run proxy_finetune --sweep "$SEEDS"
run proxy_scratch --sweep "$SEEDS"
run hybrid_quick --sweep "$SEEDS"
run proxy_pretrain_p8
run flexi_finetune --sweep "$SEEDS"
run flexi_finetune_bilinear --sweep "$SEEDS"
python -m vit16 report results/RESULTS.md --since 2026-12-01 --claims results/claims.toml \
    --experiment quick resnet_quick resnet_quick_time --no-overrides --group-by data.fraction \
    --out results/REPRODUCTION.md --figure results/data_size.png \
    --title 'CIFAR-10 from scratch: ViT vs ResNet-20 (3 seeds)'
