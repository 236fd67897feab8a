"""``python -m vit16 bench``: training images/s and model FLOPs utilisation
(MFU) of every registered model, the data pipeline's images/s alone, and the
batch policies' images/s, aten ops and host-device copies per batch. Prints
markdown tables.

    python -m vit16 bench --device cuda --batch-size 256
    python -m vit16 bench --device cpu --models vit_tiny,vit_small_cifar --batch-size 32

MFU = (FLOPs of one training step, counted by ``torch.utils.flop_counter``:
:func:`vit16.models.flops.train_step_flops`)
x (steps/s) / (the device's peak dense FLOP/s). Peaks are the vendors' dense
bf16 tensor-core numbers for GPUs; on a CPU the peak is measured as the fp32
rate of a large matrix multiply on the same machine (so MFU there reads as a
fraction of what this CPU's BLAS can do).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

import vit16
from vit16.commands.common import choose_device, reports_user_errors
from vit16.models.flops import train_step_flops

# Dense bf16 peak FLOP/s, vendor data sheets (no sparsity).
GPU_PEAK_FLOPS = {"H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12,
                  "A100": 312e12, "L40S": 362e12, "A10": 125e12, "V100": 125e12, "4090": 165e12}

MODELS_32 = ["vit_quick", "vit_tiny", "vit_small_cifar", "vit_small", "vit_base", "resnet20_cifar",
             "resnet50_cifar"]
MODELS_224 = ["vit_s16", "vit_b16", "vit_l16", "resnet50"]


def device_name(device: torch.device) -> str:
    """Human-readable device, e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 threads, x86_64)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()})"


def peak_flops(device: torch.device) -> float:
    """Peak FLOP/s used for MFU: a GPU's data-sheet bf16 number (0 if unknown),
    or, on CPU, the best measured fp32 FLOP/s of a 2048x2048 matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if key in name:
                return value
        return 0.0
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = 0.0
    for _ in range(5):  # the best of several trials: a peak, not an average
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * 2048**3 / (time.perf_counter() - start))
    return best


def bench_model(name: str, device: torch.device, batch_size: int, steps: int,
                warmup: int = 2) -> dict:
    """Training throughput of model ``name`` on random data: AdamW steps with bf16
    autocast on CUDA, fp32 on CPU.

    Args:
        name: a registered model (224px input if in :data:`MODELS_224`, else 32px).
        device: where it trains; batch_size: images per step.
        steps: timed steps, after ``warmup`` untimed ones.

    Returns:
        ``{"images_per_s", "step_flops", "params", "img_size"}``.

    Raises:
        vit16.UnknownNameError: an unknown model name.
    """
    model = vit16.MODELS.build(name).to(device)
    size = 224 if name in MODELS_224 else 32
    x = torch.randn(batch_size, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    flops = train_step_flops(model, x, y)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with amp:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images_per_s": batch_size * steps / seconds, "step_flops": flops,
            "params": sum(p.numel() for p in model.parameters()), "img_size": size}


def print_data_table(experiments: list[str], device: torch.device, data_root: str | None,
                     workers: int = 0, batches: int = 50) -> None:
    """Print the markdown table of the training data pipeline's images/s alone.

    Args:
        experiments: experiments of the repository's ``experiments.toml``.
        device: where the augmented batches go.
        data_root: folder holding the data sets (``None``: each table's).
        workers: also time each pipeline through the DataLoader path
            (``data.device_resident = false``) with this many workers, and give
            the ratio, side by side in this run (0: not).
        batches: micro-batches timed per pipeline.

    Raises:
        ConfigError, vit16.UnknownNameError, DataNotFoundError: a bad experiment or missing data.
    """
    from vit16.config import load_tables, resolve
    from vit16.data import data_throughput
    from vit16.experiment import DEFAULT_EXPERIMENTS

    tables = load_tables(DEFAULT_EXPERIMENTS)
    print("\n| data pipeline (train split, augmentation included) | images/s |")
    print("|---|---|")
    for exp in experiments:
        cfg = resolve(exp, tables, [] if data_root is None else [f"data.root={data_root!r}"])
        rate = data_throughput(cfg, device, batches)
        policy = cfg.data.auto_augment or "no policy"
        print(f"| {exp}: {cfg.data.name} {cfg.data.img_size}px, batch {cfg.batch_size}, "
              f"augment: crop {cfg.data.crop_padding}, {policy}, "
              f"mixup {cfg.data.mixup_alpha}, cutmix {cfg.data.cutmix_alpha} | {rate:,.0f} |", flush=True)
        if workers > 0:
            cfg.data.device_resident, cfg.data.num_workers = False, workers
            base = data_throughput(cfg, device, batches)
            print(f"| the same through the DataLoader, {workers} workers | {base:,.0f} "
                  f"(the row above is {rate / base:.1f}x) |", flush=True)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 bench``: print the models' and the data pipeline's tables.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on stderr).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 bench",
                                description="Training images/s and MFU of the registered models, "
                                            "and images/s of the data pipeline alone.")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--models", default=",".join(MODELS_32 + MODELS_224),
                   help="comma-separated registered model names ('' = none)")
    p.add_argument("--batch-size", type=int, default=64, help="batch for 32px models")
    p.add_argument("--batch-size-224", type=int, default=0, help="batch for 224px models (default: batch/8)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--data", default="quick,small_vit_cifar",
                   help="experiments whose training data pipeline is timed alone ('' = none)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--data-workers", type=int, default=0,
                   help="also time each --data pipeline through DataLoader workers (this many) "
                        "and print the ratio (0 = not)")
    p.add_argument("--data-batches", type=int, default=50, help="micro-batches timed per data pipeline")
    p.add_argument("--policies", default="autoaugment,randaugment,trivialaugment",
                   help="batch policies timed alone, both implementations, 32px ('' = none)")
    p.add_argument("--policy-batch", type=int, default=512)
    args = p.parse_args(argv)
    device = choose_device(args.device)
    peak = peak_flops(device)
    print(f"device: {device_name(device)}; torch {torch.__version__}; "
          f"peak for MFU: {peak / 1e12:.2f} TFLOP/s "
          f"({'data sheet, bf16 dense' if device.type == 'cuda' else 'measured fp32 matmul'})\n")
    models = [m for m in args.models.split(",") if m]
    if models:
        print("| model | img | params (M) | batch | train images/s | GFLOPs/image (fwd+bwd) | MFU % |")
        print("|---|---|---|---|---|---|---|")
    for name in models:
        batch = args.batch_size
        if name in MODELS_224:
            batch = args.batch_size_224 or max(args.batch_size // 8, 1)
        r = bench_model(name, device, batch, args.steps)
        achieved = r["step_flops"] / batch * r["images_per_s"]
        mfu = f"{100 * achieved / peak:.1f}" if peak else "n/a"
        print(f"| {name} | {r['img_size']} | {r['params'] / 1e6:.2f} | {batch} | "
              f"{r['images_per_s']:,.{1 if r['images_per_s'] < 100 else 0}f} | "
              f"{r['step_flops'] / batch / 1e9:.2f} | {mfu} |", flush=True)
    if args.data:
        print_data_table(args.data.split(","), device, args.data_root, args.data_workers, args.data_batches)
    if args.policies:
        from vit16.data.policy_bench import print_policy_table
        print_policy_table(args.policies.split(","), str(device), args.policy_batch)
    return 0
