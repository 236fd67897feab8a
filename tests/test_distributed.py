"""DDP on the CPU with gloo: torchrun with 2 ranks trains like 1 process.

The 2-rank runs are real ``torchrun --nproc_per_node 2`` launches of
``train.py`` (and of a small script for the NaN test), one intra-op thread
per rank; the 1-process references run in this process with one thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fakedata import set_args

from vit16 import distributed
from vit16.checkpoint import load_checkpoint
from vit16.commands.train import main
from vit16.results import read_rows
from vit16.runstate import config_diff

ROOT = Path(__file__).resolve().parents[1]

# quick, made tiny: 80 training images (20 held out for val) of 32x32, batch 8 =
# 10 steps/epoch, a 1-block ViT of width 16. No dropout / drop-path / augmentation
# (their random draws differ by rank), SGD (AdamW divides by sqrt(v): on the
# bias of attention keys, whose gradient is 0 up to rounding, reduction-order
# noise becomes +-lr).
TINY = [
    "model.depth=1", "model.embed_dim=16", "model.num_heads=2", "model.mlp_dim=32",
    "batch_size=8", "epochs=3", "data.val_size=20", "data.num_workers=0",
    "data.crop_padding=0", "data.hflip=false", "optim.name=sgd", "optim.lr=0.1",
    "checkpoint_minutes=0",
]


def torchrun(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` on the CPU (a free port, one
    thread per rank)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + str(ROOT / "tests"))
    # its own process group, so that a timeout kills the ranks too, not only torchrun
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{out[-3000:]}{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_match_one_process(tmp_path, cifar10_root):
    """Global batch 8: 1 process (micro 8) against 2 gloo ranks x micro 2 x 2
    accumulation steps (DDP's gradient averaging and no_sync both in play):
    the same per-epoch losses, accuracies and final weights within float
    tolerance, and rank 0 alone writes (one results row, one metrics line per epoch)."""
    common = ["quick", "--device", "cpu", "--data-root", str(cifar10_root), *set_args(TINY),
              "--set", "ema_decay=0.9"]  # every rank keeps the same EMA, with no collective
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*common, "--out", str(one), "--results", str(tmp_path / "one.md")]) == 0

    proc = torchrun(["train.py", *common, "--set", "micro_batch_size=2", "--out", str(two),
                     "--results", str(tmp_path / "two.md")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "batch 8 = 2 x 2 x 2 accum" in proc.stdout + proc.stderr

    m1, m2 = metrics(one), metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [10, 20, 30]
    for a, b in zip(m1, m2, strict=True):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (key, a, b)
        assert b["val_top1"] == a["val_top1"] and b["val_top5"] == a["val_top5"]
        assert b["val_ema_top1"] == a["val_ema_top1"]
    c1, c2 = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    for part in ("model", "ema"):
        w1, w2 = c1[part], c2[part]
        assert w1.keys() == w2.keys()
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=f"{part}.{k}")
    assert len(read_rows(tmp_path / "two.md")) == 1
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["test_top1"] == s1["test_top1"] and s2["steps"] == s1["steps"] == 30
    ckpt = load_checkpoint(two / "last.pt")
    assert len(ckpt["rng_ranks"]) == 2  # every rank's RNG stream is kept for resuming


NAN_SCRIPT = textwrap.dedent('''
    """One gloo rank sees a NaN image at step 5: both ranks must stop, at step 5."""
    import sys
    import torch
    from test_trainer import make_bundle, make_cfg
    from vit16.runtime import dist_env
    from vit16.trainer import TrainingDivergedError, train

    torch.set_num_threads(1)
    rank, _ = dist_env()
    out, report = sys.argv[1], sys.argv[2]
    bundle = make_bundle(seed=rank)  # each rank its own order of the fake images
    if rank == 1:
        bundle.train.x[bundle.train.x.shape[0] // 2:] = float("nan")
    cfg = make_cfg(epochs=1, batch_size=16, micro_batch_size=8)  # 2 ranks x 8: 8 steps/epoch
    cfg.model.dropout = 0.0
    cfg.model.drop_path = 0.0
    try:
        train(cfg, out, device="cpu", data=bundle, results_file=None)
        msg = "finished"
    except TrainingDivergedError as err:
        msg = str(err)
    with open(f"{report}.{rank}", "w") as f:
        f.write(msg)
''')


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """The NaN check reads the loss averaged over ranks: a NaN on rank 1 only
    stops both ranks with the same step (no rank is left waiting in a collective)."""
    script = tmp_path / "nan_rank.py"
    script.write_text(NAN_SCRIPT)
    report = tmp_path / "report"
    proc = torchrun([str(script), str(tmp_path / "run"), str(report)], timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (Path(f"{report}.{r}").read_text() for r in (0, 1))
    assert r0.startswith("training diverged: loss = nan at optimizer step"), r0
    assert r0 == r1  # same step, same message on both ranks
    if (tmp_path / "run" / "last.pt").exists():  # never a NaN checkpoint
        weights = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_world_size_without_rendezvous_is_one_error_line(tmp_path, cifar10_root, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code = main(["quick", "--device", "cpu", "--data-root", str(cifar10_root), *set_args(TINY),
                 "--out", str(tmp_path / "r"), "--results", str(tmp_path / "r.md")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT not set")
    assert "torchrun" in err[0] and "--submit" in err[0]


def test_helpers_without_a_process_group():
    assert not distributed.is_initialized()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(t) is t
    assert distributed.rank0_decides(True) and not distributed.rank0_decides(False)
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"
    assert distributed.rank_device("cpu") == torch.device("cpu")
    assert distributed.rank_seed(0, 1) != distributed.rank_seed(0, 2) != distributed.rank_seed(1, 1)
    assert distributed.setup("cpu", 0, 1) == torch.device("cpu")  # one process: no group
    assert not distributed.is_initialized()


def test_slurm_keys_never_block_a_resume():
    a = {"epochs": 3, "slurm": {"nodes": 1, "additional_parameters": {}}}
    b = {"epochs": 3, "slurm": {"nodes": 4, "additional_parameters": {"exclusive": True}}}
    assert config_diff(a, b) == []
    assert config_diff({"epochs": 3}, b) == []  # a checkpoint from before [NAME.slurm] existed
    assert config_diff(a, {**b, "epochs": 4}) == ["epochs: 3 -> 4"]


def test_dist_env_reads_torchrun_variables(monkeypatch):
    from vit16.runtime import dist_env

    assert dist_env() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert dist_env() == (3, 8)
