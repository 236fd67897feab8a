"""The one prepared GPU check (issue 14): proves and measures vit16's GPU path on
one GPU in a single command that stays within ``--budget`` seconds.

Here, once (a git-ignored pack of the JPEG CIFAR-10: 55 MB of JPEGs, 19.5 MiB
gzipped, since their identical headers compress; the device tool carries it
with ``carry: [".device"]``)::

    python scripts/device_check.py pack                    # ../shared/data/cifar10 -> .device/cifar10.tar.gz

On the GPU machine (the working tree only; no ../shared, no submitit)::

    PYTHONUNBUFFERED=1 python scripts/device_check.py run --out $OUT --budget 420

On a CPU, the same phases at toy size in under two minutes (tests/test_device_check.py)::

    python scripts/device_check.py run --smoke --data DATA_ROOT --out OUT

Phases, each recorded in OUT/summary.md whatever happens to the others:

a. end to end: ``small_vit_cifar`` for 3 epochs is killed (SIGKILL) in epoch 2,
   resumed by a second process to its end (its row goes to OUT/results.md), its
   ``last.pt`` checked for wrapper prefixes (``module.``, ``_orig_mod.``), and
   ``python -m vit16 evaluate`` of the run must give its own test top-1 of best.pt;
b. benchmarks (OUT/bench.md): ``vit_small_cifar`` at 32px and ``vit_b16`` at 224
   in bf16, eager and compiled; the data pipelines of ``small_vit_cifar`` and
   ``vitb16_finetune_cifar`` against 8 DataLoader workers; compiled training with
   eager evaluation against eager (weights and top-1);
c. the rest of the budget on ``small_vit_cifar`` (its own 300-epoch schedule,
   cut by ``max_steps``), the validation curve in OUT/curve.csv.

OUT holds at most 8 files: summary.md, env.json, results.md, bench.md, e2e.log,
train.log, curve.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".device" / "cifar10.tar.gz"
sys.path.insert(0, str(ROOT))

# the toy sizes of --smoke: a 1-block ViT of width 16 on whatever tiny CIFAR-10 --data holds
SMOKE_SET = ["model.depth=1", "model.embed_dim=16", "model.num_heads=2", "model.mlp_dim=32",
             "batch_size=8", "micro_batch_size=0", "data.val_size=20", "data.num_workers=0",
             "data.repeated_aug=1", "data.auto_augment=''"]


class Check:
    """The summary being written: one line per result, ``ok`` or ``FAILED``."""

    def __init__(self, out: Path, budget: float):
        self.out, self.t0, self.budget, self.lines, self.failed = out, time.monotonic(), budget, [], 0

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def record(self, ok: bool, text: str) -> None:
        self.failed += not ok
        line = f"- {'ok' if ok else 'FAILED'}: {text}"
        self.lines.append(line)
        print(line, flush=True)

    def note(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)

    def write(self) -> None:
        head = f"# device check: {self.failed} failed, {time.monotonic() - self.t0:.0f} s of {self.budget:.0f}\n\n"
        (self.out / "summary.md").write_text(head + "\n".join(self.lines) + "\n")


@contextlib.contextmanager
def phase(check: Check, name: str):
    """Run a phase; an exception is recorded as its failure and the next phase runs."""
    check.note(f"\n## {name} ({check.left():.0f} s left)\n")
    try:
        yield
    except Exception as err:  # noqa: BLE001 (a failed phase must not stop the others)
        check.record(False, f"{name}: {type(err).__name__}: {err}")
    check.write()


def pack(src: Path, dest: Path) -> None:
    """Pack the ImageFolder ``src`` (``.../cifar10``) into the gzipped tar ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname="cifar10")
    print(f"packed {src} into {dest} ({dest.stat().st_size / 2**20:.1f} MiB); carry {dest.parent.name}/")


def data_root(args) -> Path:
    """``--data``, else the unpacked :data:`PACK` (in a temporary folder), else ../shared/data."""
    if args.data:
        return Path(args.data)
    if PACK.is_file():
        root = Path(tempfile.mkdtemp(prefix="vit16-data-"))
        with tarfile.open(PACK) as tar:
            tar.extractall(root, filter="data")
        return root
    return ROOT.parent / "shared" / "data"


def train_cmd(args, root: Path, out_dir: Path, sets: list[str], results: Path) -> list[str]:
    cmd = [sys.executable, str(ROOT / "train.py"), "small_vit_cifar", "--data-root", str(root),
           "--out", str(out_dir), "--results", str(results), "--device", args.device]
    for item in (SMOKE_SET if args.smoke else []) + sets:
        cmd += ["--set", item]
    return cmd


def metric_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kill_in_epoch_2(proc: subprocess.Popen, run_dir: Path, timeout: float, smoke: bool) -> None:
    """SIGKILL ``proc`` once epoch 1 is in metrics.jsonl and a last.pt at least as
    new is on disk, half an epoch later on a GPU (mid-epoch 2)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        rows, last = metric_rows(run_dir), run_dir / "last.pt"
        if rows and last.exists() and last.stat().st_mtime >= (run_dir / "metrics.jsonl").stat().st_mtime:
            if not smoke:
                time.sleep(rows[0]["seconds"] / 2)
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def run_logged(cmd: list[str], log, timeout: float) -> str:
    """Run ``cmd``, appending its output to ``log``; returns the output.

    Raises:
        RuntimeError: a non-zero exit (its last lines)."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    log.write(proc.stdout + proc.stderr)
    log.flush()
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-600:]}")
    return proc.stdout + proc.stderr


def end_to_end(args, check: Check, root: Path, work: Path) -> dict:
    """Phase a; returns the run's summary."""
    import torch

    run_dir, results = work / "e2e", work / "results.md"
    sets = ["epochs=3", "schedule.warmup_epochs=1", "checkpoint_minutes=0.01"]
    with open(args.out / "e2e.log", "a") as log:
        log.write(f"$ {' '.join(train_cmd(args, root, run_dir, sets, results))}  (killed in epoch 2)\n")
        log.flush()
        first = subprocess.Popen(train_cmd(args, root, run_dir, sets, results), stdout=log,
                                 stderr=subprocess.STDOUT, cwd=ROOT)
        kill_in_epoch_2(first, run_dir, min(check.left(), 240), args.smoke)
        killed_at = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)["step"]
        out = run_logged(train_cmd(args, root, run_dir, sets, results), log, max(check.left(), 30))
        summary = json.loads((run_dir / "summary.json").read_text())
        spe = summary["steps"] // 3
        check.record(first.returncode == -signal.SIGKILL and killed_at >= spe and f"step {killed_at}" in out,
                     f"killed (SIGKILL) with last.pt at step {killed_at} ({killed_at / spe:.2f} epochs), "
                     f"resumed there by a second process to step {summary['steps']}")
        keys = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)["model"].keys()
        wrapped = [k for k in keys if k.startswith(("module.", "_orig_mod."))]
        check.record(not wrapped, f"last.pt has {len(keys)} weights, {len(wrapped)} with a wrapper prefix")
        rows = (results.read_text().count("| small_vit_cifar |") if results.exists() else 0)
        check.record(rows == 1, f"{rows} results row(s) of small_vit_cifar in results.md (1 expected)")
        ev = run_logged([sys.executable, "-m", "vit16", "evaluate", str(run_dir), "--data-root", str(root),
                         "--out", str(work / "eval"), "--device", args.device], log, max(check.left(), 30))
        top1 = json.loads((work / "eval" / "metrics.json").read_text())["top1"]
        want = summary["test_top1_best"] if summary["test_top1_best"] is not None else summary["test_top1"]
        check.record(abs(top1 - want) < 1e-6, f"evaluate: test top-1 {top1:.2f} % = the run's {want:.2f} %")
        log.write(ev)
    check.note(f"throughput: {summary['images_per_s']:,.0f} training images/s end to end; "
               f"test top-1 after 3 epochs {summary['test_top1']:.2f} %")
    return summary


def bench_tables(args, check: Check, root: Path) -> None:
    """Phase b's benchmark tables (``python -m vit16 bench``'s) into OUT/bench.md."""
    from vit16.commands import bench

    if args.smoke:
        argv = ["--device", args.device, "--models", "vit_quick", "--batch-size", "8", "--steps", "1",
                "--data", "", "--policies", "randaugment", "--policy-batch", "16"]  # the tables' val_size
                # of 5,000 does not fit a toy data set
    else:
        argv = ["--device", args.device, "--models", "vit_small_cifar,vit_b16", "--batch-size", "512",
                "--batch-size-224", "128", "--steps", "10", "--compile", "both",
                "--data", "small_vit_cifar,vitb16_finetune_cifar", "--data-workers", "8",
                "--data-batches", "20", "--data-root", str(root), "--policies", "autoaugment,randaugment"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = bench.main(argv)
    (args.out / "bench.md").write_text(f"    python -m vit16 bench {' '.join(argv)}\n\n{text.getvalue()}")
    check.record(code == 0, f"benchmarks in bench.md ({len(text.getvalue().splitlines())} lines)")


def compile_matches_eager(args, check: Check) -> None:
    """Phase b: 8 optimizer steps of the same ViT eager and ``torch.compile``d
    (fp32, the same batches; SGD, since AdamW's division by sqrt(v) turns the
    rounding noise of near-zero gradients into steps of +-lr), then each
    evaluated eagerly under no_grad."""
    import torch
    import torch.nn.functional as F

    import vit16

    device = torch.device(args.device)
    kw = dict(depth=1, embed_dim=16, num_heads=2, mlp_dim=32) if args.smoke else {}
    torch.manual_seed(0)
    eager = vit16.MODELS.build("vit_small_cifar", num_classes=10, dropout=0.0, drop_path=0.0, **kw).to(device)
    compiled_raw = copy.deepcopy(eager)
    gen = torch.Generator(device="cpu").manual_seed(1)
    xs = [torch.randn(64, 3, 32, 32, generator=gen).to(device) for _ in range(8)]
    ys = [torch.randint(0, 10, (64,), generator=gen).to(device) for _ in range(8)]
    for model, step in ((eager, eager), (compiled_raw, torch.compile(compiled_raw))):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for x, y in zip(xs, ys):
            F.cross_entropy(step(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    diff = max((a - b).abs().max().item() for a, b in zip(eager.parameters(), compiled_raw.parameters()))
    with torch.no_grad():
        x = torch.randn(512, 3, 32, 32, generator=gen).to(device)
        agree = (eager(x).argmax(1) == compiled_raw(x).argmax(1)).float().mean().item()
    check.record(diff < 1e-4 and agree > 0.99, f"compiled training vs eager: max weight difference "
                 f"{diff:.2e} after 8 steps, eager evaluations agree on {100 * agree:.1f} % of 512 images")


def curve(args, check: Check, root: Path, work: Path, images_per_s: float) -> None:
    """Phase c: small_vit_cifar's own schedule for what the budget leaves."""
    seconds = check.left() - (20 if args.smoke else 60)  # start-up, data, the final test
    batch = 8 if args.smoke else 512
    steps = max(int(seconds * images_per_s / batch * 0.8), 1)
    if args.smoke:
        steps = min(steps, 30)
    sets = [f"max_steps={steps}", "checkpoint_minutes=10"]
    with open(args.out / "train.log", "w") as log:
        run_logged(train_cmd(args, root, work / "curve", sets, work / "results.md"), log,
                   max(check.left(), 30))
    rows = metric_rows(work / "curve")
    lines = ["epoch,step,lr,train_loss,val_top1,val_loss,images_per_s,seconds"]
    lines += [",".join(str(r.get(k)) for k in lines[0].split(",")) for r in rows]
    (args.out / "curve.csv").write_text("\n".join(lines) + "\n")
    best = max((r["val_top1"] for r in rows if r.get("val_top1") is not None), default=None)
    check.record(bool(rows), f"{steps} steps of the 300-epoch schedule ({len(rows)} epochs in curve.csv), "
                 f"best val top-1 {best if best is None else f'{best:.2f} %'}")


def environment(args) -> dict:
    import torch
    import torchvision

    from vit16.checkpoint import git_commit

    env = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": sys.version.split()[0],
           "device": args.device, "commit": git_commit()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    try:
        import submitit  # noqa: F401
        env["submitit"] = True
    except ImportError:
        env["submitit"] = False
    return env


def run(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.budget)
    env = environment(args)
    (args.out / "env.json").write_text(json.dumps(env, indent=1) + "\n")
    check.note(f"environment: {json.dumps(env)}")
    root = data_root(args)
    work = Path(tempfile.mkdtemp(prefix="vit16-check-"))
    os.environ.setdefault("VIT16_CACHE", str(work / "cache"))
    summary = {}
    with phase(check, "a. end to end: kill, resume, evaluate"):
        summary = end_to_end(args, check, root, work)
    with phase(check, "b. benchmarks"):
        bench_tables(args, check, root)
    with phase(check, "b. compiled vs eager"):
        compile_matches_eager(args, check)
    with phase(check, "c. the rest of the budget on small_vit_cifar"):
        curve(args, check, root, work, summary.get("images_per_s") or (2000 if args.smoke else 20000))
    if (work / "results.md").exists():
        (args.out / "results.md").write_text((work / "results.md").read_text())  # not its .lock
    check.write()
    print(f"\n{check.failed} failed; wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} to {args.out}")
    return 1 if check.failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="pack the JPEG CIFAR-10 for the GPU machine")
    pk.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    pk.add_argument("--dest", type=Path, default=PACK)
    r = sub.add_parser("run", help="run the check")
    r.add_argument("--out", type=Path, required=True, help="folder for the (at most 8) output files")
    r.add_argument("--budget", type=float, default=420.0, help="seconds for all phases (default %(default)s)")
    r.add_argument("--data", help="data root holding cifar10/ (default: the unpacked pack, else ../shared/data)")
    r.add_argument("--device", default="cuda")
    r.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (the test suite's)")
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args.src, args.dest)
        return 0
    if args.smoke:
        args.device = "cpu"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
