"""``python -m vit16 bench``: training images/s and model FLOPs utilisation
(MFU) of every registered model, eager and compiled, with peak memory; the
data pipeline's images/s alone (and against DataLoader workers); and the
batch policies' images/s, aten ops and host-device copies per batch. Prints
markdown tables.

    python -m vit16 bench --device cuda --batch-size 512 --compile both
    python -m vit16 bench --device cpu --models vit_tiny,vit_small_cifar --batch-size 32

MFU = (FLOPs of one training step, counted by ``torch.utils.flop_counter``:
:func:`vit16.models.flops.train_step_flops`, attention included on every
device) x (steps/s) / (a peak FLOP/s), against two peaks: the vendor's dense
bf16 tensor-core number (GPUs only; "-" where unknown) and the measured rate
of a large matrix multiply on this device (bf16 on CUDA, fp32 on a CPU, where
MFU reads as a fraction of what its BLAS can do).
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
GPU_PEAK_FLOPS = {"H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "H200 NVL": 835e12,
                  "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "V100": 125e12,
                  "4090": 165e12}
"""Device-name substring -> dense bf16 FLOP/s (first match wins: NVL and PCIe
before the SXM default)."""

MODELS_32 = ["vit_quick", "vit_tiny", "vit_small_cifar", "vit_small", "vit_base", "resnet20_cifar",
             "resnet50_cifar"]
MODELS_224 = ["vit_s16", "vit_b16", "vit_l16", "resnet50"]


def device_name(device: torch.device) -> str:
    """Human-readable device, e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 threads, x86_64)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()})"


def datasheet_flops(device: torch.device) -> float | None:
    """The vendor's dense bf16 FLOP/s of a CUDA device (:data:`GPU_PEAK_FLOPS`);
    ``None`` for a CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), None)


def measured_flops(device: torch.device) -> float:
    """The best FLOP/s of several large matrix multiplies on ``device``: bf16
    8192 x 8192 on CUDA, fp32 2048 x 2048 on a CPU (a peak, not an average)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name: str, device: torch.device, batch_size: int, steps: int,
                warmup: int = 2, compile: bool = False) -> dict:
    """Training throughput of model ``name`` on random data: AdamW steps with bf16
    autocast on CUDA, fp32 on CPU, eager or ``torch.compile``d (the warm-up
    steps include the compilation).

    Args:
        name: a registered model (224px input if in :data:`MODELS_224`, else 32px).
        device: where it trains; batch_size: images per step.
        steps: timed steps, after ``warmup`` untimed ones.
        compile: compile the model (inductor) first.

    Returns:
        ``{"images_per_s", "step_flops", "params", "img_size", "peak_memory_gib"}``
        (peak memory: CUDA's max allocated during the run, ``None`` on a CPU).

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
    step_model = torch.compile(model) if compile else model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with amp:
            loss = F.cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"images_per_s": batch_size * steps / seconds, "step_flops": flops,
            "params": sum(p.numel() for p in model.parameters()), "img_size": size,
            "peak_memory_gib": memory}


def print_model_table(models: list[str], device: torch.device, batch: int, batch_224: int, steps: int,
                      compile_modes: list[bool]) -> None:
    """Print the markdown table of the models' training images/s, MFU against
    both peaks (:func:`datasheet_flops`, :func:`measured_flops`) and peak memory."""
    sheet, measured = datasheet_flops(device), measured_flops(device)
    print(f"peaks for MFU: data sheet {'-' if sheet is None else f'{sheet / 1e12:.0f} TFLOP/s bf16 dense'}; "
          f"measured {measured / 1e12:.2f} TFLOP/s "
          f"({'bf16' if device.type == 'cuda' else 'fp32'} matmul)\n")
    print("| model | img | params (M) | batch | compiled | train images/s | GFLOPs/image (fwd+bwd) | "
          "MFU % (data sheet) | MFU % (measured peak) | peak memory (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in models:
        b = (batch_224 or max(batch // 8, 1)) if name in MODELS_224 else batch
        for compiled in compile_modes:
            r = bench_model(name, device, b, steps, compile=compiled)
            achieved = r["step_flops"] / b * r["images_per_s"]
            mem = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
            mfu_sheet = "-" if sheet is None else f"{100 * achieved / sheet:.1f}"
            print(f"| {name} | {r['img_size']} | {r['params'] / 1e6:.2f} | {b} | {'yes' if compiled else 'no'} | "
                  f"{r['images_per_s']:,.{1 if r['images_per_s'] < 100 else 0}f} | "
                  f"{r['step_flops'] / b / 1e9:.2f} | {mfu_sheet} | {100 * achieved / measured:.1f} | {mem} |",
                  flush=True)


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward of one training
    forward of ``model`` on ``x`` (``torch.autograd.graph.saved_tensors_hooks``,
    each storage counted once; the parameters, which exist anyway, left out):
    the activation memory. With gradient checkpointing the blocks' activations
    are not kept, which is what it saves."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


def print_activation_table(models: list[str], device: torch.device, batch: int, size: int | None) -> None:
    """Print the memory autograd keeps for one forward (:func:`saved_activation_bytes`),
    plain and with ``grad_checkpointing`` (``size``: input side, default the model's)."""
    print("\n| model | img | batch | kept for backward (GiB) | with grad_checkpointing (GiB) | saved |")
    print("|---|---|---|---|---|---|")
    for name in models:
        out = []
        for ckpt in (False, True):
            model = vit16.MODELS.build(name, grad_checkpointing=ckpt, **({"img_size": size} if size else {}))
            side = size or model.patch_embed.img_size
            x = torch.randn(batch, 3, side, side, device=device)
            out.append(saved_activation_bytes(model.to(device), x) / 2**30)
        print(f"| {name} | {side} | {batch} | {out[0]:.2f} | {out[1]:.2f} | {100 * (1 - out[1] / out[0]):.0f} % |",
              flush=True)


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
    print("\n| data pipeline (train split, augmentation included) | micro-batch | images/s | "
          "host-device copies / micro-batch | aten ops / micro-batch | aten ops at 2x / 4x the micro-batch |")
    print("|---|---|---|---|---|---|")
    for exp in experiments:
        cfg = resolve(exp, tables, [] if data_root is None else [f"data.root={data_root!r}"])
        r = data_throughput(cfg, device, batches)
        micro = cfg.micro_batch_size or cfg.batch_size
        larger = " / ".join(str(data_throughput(cfg, device, 1, micro_batch_size=k * micro, warmup=1)["aten_ops"])
                            for k in (2, 4))
        policy = cfg.data.auto_augment or "no policy"
        print(f"| {exp}: {cfg.data.name} {cfg.data.img_size}px, batch {cfg.batch_size}, "
              f"augment: crop {cfg.data.crop_padding}, {policy}, "
              f"mixup {cfg.data.mixup_alpha}, cutmix {cfg.data.cutmix_alpha} | {micro} | "
              f"{r['images_per_s']:,.0f} | {r['copies']} | {r['aten_ops']} | {larger} |", flush=True)
        if workers > 0:
            cfg.data.device_resident, cfg.data.num_workers = False, workers
            base = data_throughput(cfg, device, batches)
            print(f"| the same through the DataLoader, {workers} workers (the row above is "
                  f"{r['images_per_s'] / base['images_per_s']:.1f}x) | {micro} | {base['images_per_s']:,.0f} | "
                  f"{base['copies']} | {base['aten_ops']} |", flush=True)


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
    p.add_argument("--compile", choices=("off", "on", "both"), default="off",
                   help="time the models eager (off), compiled (on) or both (default: %(default)s)")
    p.add_argument("--activations", default="", metavar="MODELS",
                   help="comma-separated ViTs whose memory kept for the backward is printed, plain and "
                        "with grad_checkpointing ('' = none)")
    p.add_argument("--activations-batch", type=int, default=1)
    p.add_argument("--activations-size", type=int, default=0, help="input side (default: the model's)")
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
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    models = [m for m in args.models.split(",") if m]
    if models:
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
        print_model_table(models, device, args.batch_size, args.batch_size_224, args.steps, modes)
    if args.activations:
        print_activation_table(args.activations.split(","), device, args.activations_batch,
                               args.activations_size or None)
    if args.data:
        print_data_table(args.data.split(","), device, args.data_root, args.data_workers, args.data_batches)
    if args.policies:
        from vit16.data.policy_bench import print_policy_table
        print_policy_table(args.policies.split(","), str(device), args.policy_batch)
    return 0
