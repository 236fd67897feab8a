"""``train.py --submit``: sweeps, executor parameters, errors, submitit's local
executor, and real jobs on a real Slurm.

The ``real Slurm`` tests submit to whatever ``sinfo`` reaches: in CI that is
the single-node cluster ``scripts/local_slurm.sh start`` brings up (``.ci/run``
does it). Without one they skip with a warning that names the fix; with
``VIT16_REQUIRE_SLURM=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch
from fakedata import set_args

from vit16.checkpoint import load_checkpoint
from vit16.commands.train import main
from vit16.config import ConfigError, load_tables, resolve
from vit16.experiment import DEFAULT_EXPERIMENTS
from vit16.results import PRUNE_COLUMNS, read_rows
from vit16.slurm import SubmitError, executor_parameters
from vit16.sweep import SweepError, parse_sweep, plan_runs

# quick, made tiny: 80 training images of 32x32 (20 held out), batch 8, a 1-block ViT of width 16
TINY = ["model.depth=1", "model.embed_dim=16", "model.num_heads=2", "model.mlp_dim=32",
        "batch_size=8", "epochs=1", "data.val_size=20", "data.num_workers=0",
        "slurm.cpus_per_task=1", "slurm.timeout_min=10"]


def tables() -> dict:
    return load_tables(DEFAULT_EXPERIMENTS)


def wait_for(cond, timeout: float, what: str, logs: Path | None = None, poll: float = 0.2):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    tail = ""
    if logs is not None:
        for f in sorted(logs.glob("*_log.*")):
            tail += f"\n--- {f.name}\n" + f.read_text()[-2000:]
    queue = ""
    if shutil.which("squeue"):
        queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    pytest.fail(f"{what} did not happen within {timeout:.0f}s\n{queue}{tail}")


# ----------------------------------------------------------------------------- no Slurm needed


def test_parse_sweep_grid():
    assert parse_sweep([]) == [[]]
    assert parse_sweep(["optim.lr=1e-3,3e-4", "model.drop_path=0,0.1"]) == [
        ["optim.lr=1e-3", "model.drop_path=0"], ["optim.lr=1e-3", "model.drop_path=0.1"],
        ["optim.lr=3e-4", "model.drop_path=0"], ["optim.lr=3e-4", "model.drop_path=0.1"]]
    assert parse_sweep(['optim.betas=[0.9,0.99],[0.9,0.95]', 'model.name="a,b",c']) == [
        ["optim.betas=[0.9,0.99]", 'model.name="a,b"'], ["optim.betas=[0.9,0.99]", "model.name=c"],
        ["optim.betas=[0.9,0.95]", 'model.name="a,b"'], ["optim.betas=[0.9,0.95]", "model.name=c"]]
    for bad, msg in ((["optim.lr"], "expected KEY=V1,V2"), (["optim.lr=1,"], "empty value"),
                     (["optim.lr=1", "optim.lr=2"], "given twice")):
        with pytest.raises(SweepError, match=msg):
            parse_sweep(bad)


def test_plan_runs_one_dir_per_point(tmp_path):
    runs, folder = plan_runs("quick", tables(), ["epochs=2"], ["optim.lr=1e-3,3e-4"], str(tmp_path / "sw"))
    assert folder == tmp_path / "sw" / "submitit"
    assert [Path(r.out_dir).name for r in runs] == ["optim.lr=1e-3", "optim.lr=3e-4"]
    assert [r.cfg.optim.lr for r in runs] == [1e-3, 3e-4] and all(r.cfg.epochs == 2 for r in runs)
    assert runs[0].overrides == ["epochs=2", "optim.lr=1e-3"]
    (single,), folder = plan_runs("quick", tables(), [], [], None)
    assert Path(single.out_dir) == Path("runs/quick") and folder.name == "submitit"


def test_executor_parameters_from_the_slurm_table():
    t = tables()
    p = executor_parameters(resolve("quick", t))
    assert p["cpus_per_task"] == 2 and p["timeout_min"] == 30 and p["tasks_per_node"] == 1
    assert p["nodes"] == 1 and "gpus_per_node" not in p and "slurm_partition" not in p
    assert p["slurm_additional_parameters"] == {"requeue": True}
    assert p["slurm_setup"][0].startswith("export PYTHONPATH=")  # vit16 importable in the job
    cfg = resolve("quick", t, ["slurm.nodes=4", "slurm.gpus_per_node=8", "slurm.partition=gpu",
                               "slurm.qos=high", "slurm.mem_gb=64", "slurm.setup=['module load cuda']",
                               "slurm.additional_parameters.exclusive=true"])
    p = executor_parameters(cfg)
    assert (p["nodes"], p["gpus_per_node"], p["tasks_per_node"]) == (4, 8, 8)  # one rank per GPU
    assert p["slurm_partition"] == "gpu" and p["slurm_qos"] == "high" and p["mem_gb"] == 64
    assert p["slurm_setup"][1:] == ["module load cuda"]
    assert p["slurm_additional_parameters"] == {"requeue": True, "exclusive": True}
    with pytest.raises(SubmitError, match="--local runs on this machine only"):
        executor_parameters(cfg, local=True)
    with pytest.raises(ConfigError, match=r"^\[quick.slurm\]: nodes = 0 must be >= 1$"):
        resolve("quick", t, ["slurm.nodes=0"])  # the range is checked once, by resolve


def test_submit_cli_errors(tmp_path, cifar10_root, monkeypatch, capsys):
    def error(*argv: str) -> str:
        assert main(list(argv)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    msg = error("--submit", "quick", "--set", "slurm.gpus=2")
    assert "unknown key 'gpus'" in msg and "gpus_per_node" in msg and "tasks_per_node" in msg
    assert "expected KEY=V1,V2" in error("quick", "--sweep", "optim.lr")  # a local sweep too
    assert "needs --submit" in error("quick", "--local")
    assert "expected KEY=V1,V2" in error("--submit", "--local", "quick", "--sweep", "optim.lr")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no sbatch
    msg = error("--submit", "quick", "--out", str(tmp_path / "r"), "--data-root", str(cifar10_root))
    assert "no Slurm here (sbatch is not on PATH)" in msg
    assert "--submit --local" in msg and "without --submit" in msg
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch is not installed "
                    "(scripts/local_slurm.sh start installs it)")
def test_submit_with_the_controller_down_is_one_error_line(tmp_path, cifar10_root, monkeypatch, capsys):
    """A real sbatch whose controller does not answer (nothing listens on its port)."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=down\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=1\n"
                    "NodeName=localhost CPUs=1\nPartitionName=debug Nodes=localhost Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    assert main(["--submit", "quick", "--out", str(tmp_path / "r"), "--data-root", str(cifar10_root)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --submit: Slurm did not take the job ("), lines
    assert "Unable to contact slurm controller" in lines[0] and "--submit --local" in lines[0]


def test_submit_checks_the_data_before_it_submits(tmp_path, monkeypatch, capsys):
    """Missing data is one line naming the paths tried, for the first sweep point
    already, and nothing is submitted; data.download = true defers it to the
    job, except for a data set that cannot be downloaded (ImageNet)."""
    import vit16.slurm

    calls = []
    monkeypatch.setattr(vit16.slurm, "submit", lambda *a, **k: calls.append(a) or [])
    monkeypatch.setattr(vit16.slurm, "describe", lambda submitted: "submitted")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--submit", "quick", "--sweep", "seed=0,1", "--set", "data.download=false",
                 "--data-root", str(empty), "--out", str(tmp_path / "r")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data set 'cifar10' not found; tried "), lines
    assert str(empty / "cifar-10-batches-py" / "test_batch") in lines[0]
    assert str(empty / "cifar10" / "train") in lines[0] and "download = true" in lines[0]
    assert calls == [] and not (tmp_path / "r").exists()

    assert main(["--submit", "quick", "--data-root", str(empty),
                 "--out", str(tmp_path / "r")]) == 0  # quick has data.download = true: the job downloads it
    assert len(calls) == 1
    assert main(["--submit", "vitb16_pretrain", "--set", "data.download=true", "--data-root",
                 str(empty), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "data set 'imagenet' not found" in err and "cannot be downloaded automatically" in err
    (empty / "imagenet" / "train").mkdir(parents=True)
    (empty / "imagenet" / "val").mkdir()
    assert main(["--submit", "vitb16_pretrain", "--data-root", str(empty), "--out", str(tmp_path / "r2")]) == 0
    assert len(calls) == 2


def test_dry_run_shows_the_slurm_table(capsys):
    assert main(["--dry-run", "vitb16_cifar_scratch"]) == 0
    out = capsys.readouterr().out
    assert "[slurm]" in out and "gpus_per_node = 4" in out


def submitted_id(out: str) -> str:
    m = re.search(r"^submitted \S+: (?:local|Slurm) job (?:array )?(\d+)", out, re.M)
    assert m, out
    return m.group(1)


@pytest.mark.slow
def test_submit_local_executor_runs_and_appends_its_row(tmp_path, cifar10_root, capsys):
    results, out = tmp_path / "results.md", tmp_path / "run"
    argv = ["--submit", "--local", "quick", *set_args(TINY + ["max_steps=2"]), "--data-root",
            str(cifar10_root), "--out", str(out), "--results", str(results), "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    submitted_id(printed)
    assert "tail -f" in printed
    wait_for(lambda: (out / "summary.json").exists() and results.exists(), 120,
             "the local job's summary.json and results row", out / "submitit")
    assert len(read_rows(results)) == 1


# ----------------------------------------------------------------------------- a real Slurm


def _slurm_reason() -> str:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch/sinfo not on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    if not re.search(r"^(idle|mixed|allocated|completing)", proc.stdout, re.M):
        return f"no usable node (sinfo: {proc.stdout.split()})"
    return ""


@pytest.fixture(scope="module")
def slurm():
    """A reachable Slurm controller with an up node, else skip loudly (fail under
    ``VIT16_REQUIRE_SLURM=1``)."""
    reason = _slurm_reason()
    if reason:
        required = bool(os.environ.get("VIT16_REQUIRE_SLURM"))
        msg = (f"REAL-SLURM TESTS {'FAILED (VIT16_REQUIRE_SLURM=1)' if required else 'SKIPPED'}: "
               f"{reason}. As root, run scripts/local_slurm.sh start (.ci/run does) to test "
               "--submit on a real single-node Slurm")
        if required:
            pytest.fail(msg)
        warnings.warn(msg, pytest.PytestWarning, stacklevel=1)
        pytest.skip(msg)
    submitted: list[str] = []
    yield submitted
    for job_id in submitted:  # nothing left running after a failure
        subprocess.run(["scancel", job_id], capture_output=True)


def job_state(job_id: str) -> str:
    """squeue's state, or "" when the job has left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def submit(capsys, slurm, *argv: str) -> tuple[str, float]:
    t0 = time.monotonic()
    assert main(["--submit", *argv]) == 0
    elapsed = time.monotonic() - t0
    job_id = submitted_id(capsys.readouterr().out)
    slurm.append(job_id)
    return job_id, elapsed


def start_requeued_now(job_id: str) -> None:
    """A requeued job waits (BeginTime) before it may start again; let it start now.
    Not within the second of the requeue: slurmd revokes the old run's job
    credential with a one-second timestamp and kills a relaunch in that same
    second ("Job credential revoked"), which then never runs again."""
    time.sleep(2.0)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True,
                   capture_output=True)


def test_multi_node_pretrain_table_reaches_slurm(tmp_path, capsys, slurm):
    """`--submit vitb16_pretrain` as it is: Slurm accepts the 4 nodes x 8 GPUs job
    (the local cluster has 8 count-only GPUs on its one node, so it pends)."""
    imagenet = tmp_path / "data" / "imagenet"  # its folders only: --submit checks they exist
    (imagenet / "train").mkdir(parents=True)
    (imagenet / "val").mkdir()
    job_id, _ = submit(capsys, slurm, "vitb16_pretrain", "--out", str(tmp_path / "run"),
                       "--results", str(tmp_path / "results.md"), "--data-root", str(tmp_path / "data"))
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "NumNodes=4" in job and "NumTasks=32" in job and re.search(r"gres[:/]gpu[:=]8", job), job
    assert job_state(job_id) == "PENDING"


@pytest.mark.slow
def test_submit_quick_on_slurm_appends_one_row(tmp_path, cifar10_root, capsys, slurm):
    results, out = tmp_path / "results.md", tmp_path / "run"
    job_id, elapsed = submit(capsys, slurm, "quick", *set_args(TINY + ["max_steps=2"]), "--data-root",
                             str(cifar10_root), "--out", str(out), "--results", str(results))
    assert elapsed < 30  # returns at once: nothing waits for the job
    wait_for(lambda: results.exists() and not job_state(job_id), 180, f"Slurm job {job_id}",
             out / "submitit")
    rows = read_rows(results)
    assert len(rows) == 1 and rows[0]["experiment"] == "quick"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2


@pytest.mark.slow
def test_two_task_job_trains_ddp_over_slurm_tasks(tmp_path, cifar10_root, capsys, slurm):
    """tasks_per_node = 2: srun starts 2 ranks, each exports the env:// variables
    from the Slurm job (submitit's TorchDistributedEnvironment) and they train
    with gloo; rank 0 alone writes the row."""
    results, out = tmp_path / "results.md", tmp_path / "run"
    job_id, _ = submit(capsys, slurm, "quick", *set_args(TINY + ["max_steps=3", "slurm.tasks_per_node=2"]),
                       "--device", "cpu", "--data-root", str(cifar10_root), "--out", str(out),
                       "--results", str(results))
    wait_for(lambda: results.exists() and not job_state(job_id), 180, f"Slurm job {job_id}",
             out / "submitit")
    assert len(read_rows(results)) == 1
    log = (out / "submitit" / f"{job_id}_0_log.out").read_text()
    assert "batch 8 = 4 x 2 x 1 accum" in log
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng_ranks"]) == 2


@pytest.mark.slow
def test_sweep_is_one_array_with_a_row_per_point(tmp_path, cifar10_root, capsys, slurm):
    results, out = tmp_path / "results.md", tmp_path / "sweep"
    job_id, _ = submit(capsys, slurm, "quick", *set_args(TINY + ["max_steps=2"]), "--sweep",
                       "optim.lr=1e-3,3e-4", "--data-root", str(cifar10_root), "--out", str(out),
                       "--results", str(results))
    wait_for(lambda: results.exists() and len(read_rows(results)) == 2 and not job_state(job_id),
             240, f"Slurm job array {job_id}", out / "submitit")
    rows = read_rows(results)
    assert sorted(r["overrides"].split()[-1] for r in rows) == ["optim.lr=1e-3", "optim.lr=3e-4"]
    for point, lr in (("optim.lr=1e-3", 1e-3), ("optim.lr=3e-4", 3e-4)):
        ckpt = load_checkpoint(out / point / "last.pt")
        assert ckpt["config"]["optim"]["lr"] == lr and ckpt["step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("how", ["scontrol-requeue", "usr2-preemption"])
def test_requeued_job_resumes_and_matches_an_uninterrupted_run(tmp_path, cifar10_root, capsys, slurm,
                                                               how):
    """Once a mid-epoch last.pt exists, the job is requeued, either by hand
    (``scontrol requeue``) or by itself: ``USR2``, the signal submitit gets
    before a time limit or on preemption, makes it call ``TrainJob.checkpoint``
    and requeue. It runs again, resumes from last.pt, and ends with the weights
    of a run that was never interrupted (bit for bit: one thread in both)."""
    # 30 min limit: a USR2 now reads as a preemption (submitit: a time-out is a USR2 after 80 %)
    items = TINY + ["slurm.timeout_min=30", "batch_size=4", "epochs=30", "checkpoint_minutes=0.0005"]
    out, results = tmp_path / "job", tmp_path / "results.md"
    job_id, _ = submit(capsys, slurm, "quick", *set_args(items), "--data-root", str(cifar10_root),
                       "--out", str(out), "--results", str(results))

    def mid_epoch_checkpoint() -> bool:
        try:
            ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError):  # not there yet
            return False
        return ckpt["batch_in_epoch"] > 0

    wait_for(mid_epoch_checkpoint, 120, "a mid-epoch last.pt", out / "submitit", poll=0.05)
    if how == "scontrol-requeue":
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    else:  # what submitit's job._interrupt() does
        subprocess.run(["scancel", job_id, "--signal", "USR2"], check=True, capture_output=True)
    wait_for(lambda: job_state(job_id) == "PENDING", 60, f"job {job_id} back to PENDING",
             out / "submitit")
    start_requeued_now(job_id)
    wait_for(lambda: results.exists() and not job_state(job_id), 240,
             f"requeued job {job_id} to finish", out / "submitit")
    log = "".join(f.read_text() for f in (out / "submitit").glob("*_log.*"))
    assert log.count("new run") == 1 and re.search(r"resumed at epoch \d+ step [1-9]", log), log[-3000:]
    if how == "usr2-preemption":
        assert "this job is preempted" in log and "Calling checkpoint method" in log, log[-3000:]
    # the job ran twice: Slurm's accounting keeps the first, requeued, run (-D: duplicates)
    states = subprocess.run(["sacct", "-n", "-D", "-X", "-j", job_id, "-o", "State"],
                            capture_output=True, text=True).stdout.split()
    assert "REQUEUED" in states, states
    assert len(read_rows(results)) == 1

    ref = tmp_path / "ref"
    assert main(["quick", "--device", "cpu", *set_args(items[:-1]), "--data-root", str(cifar10_root),
                 "--out", str(ref), "--results", str(tmp_path / "ref.md")]) == 0
    a, b = load_checkpoint(out / "last.pt"), load_checkpoint(ref / "last.pt")
    assert a["step"] == b["step"] == 600
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.slow
def test_requeued_pruning_job_resumes_its_round_and_matches_an_uninterrupted_run(
        tmp_path, cifar10_root, capsys, slurm):
    """A ``[NAME.prune]`` job requeued in the middle of round 1 resumes that
    round from its last.pt (masks included) and ends with round 2's weights
    and rows of a run that was never interrupted, one row per round."""
    items = TINY + ["model.num_heads=4", "slurm.timeout_min=30", "batch_size=4", "epochs=10",
                    "prune.rounds=3", "prune.rate=0.5", "checkpoint_minutes=0.0005"]
    out, results = tmp_path / "job", tmp_path / "PRUNING.md"
    job_id, _ = submit(capsys, slurm, "refill_quick", *set_args(items), "--data-root",
                       str(cifar10_root), "--out", str(out), "--results", str(results))

    def mid_round_1() -> bool:
        try:
            ckpt = torch.load(out / "round_01" / "last.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError):
            return False
        return ckpt["step"] > 0 and "blocks.0.attn.qkv.weight_mask" in ckpt["model"]

    wait_for(mid_round_1, 180, "a mid-round-1 last.pt", out / "submitit", poll=0.05)
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    wait_for(lambda: job_state(job_id) == "PENDING", 60, f"job {job_id} back to PENDING", out / "submitit")
    start_requeued_now(job_id)
    wait_for(lambda: (out / "round_02" / "round.json").exists() and not job_state(job_id), 300,
             f"requeued job {job_id} to finish", out / "submitit")
    log = "".join(f.read_text() for f in (out / "submitit").glob("*_log.*"))
    assert re.search(r"resumed at epoch \d+ step [1-9]\d* \| [^\n]*round_01", log), log[-3000:]
    rows = read_rows(results, PRUNE_COLUMNS)
    assert [r["round"] for r in rows] == ["0", "1", "2"]

    ref = tmp_path / "ref"
    assert main(["refill_quick", "--device", "cpu", *set_args(items[:-1]), "--data-root",
                 str(cifar10_root), "--out", str(ref), "--results", str(tmp_path / "ref.md")]) == 0
    a = load_checkpoint(out / "round_02" / "pruned.pt")["model"]
    b = load_checkpoint(ref / "round_02" / "pruned.pt")["model"]
    assert a.keys() == b.keys()
    for k in b:
        assert torch.equal(a[k], b[k]), k
    ref_rows = read_rows(tmp_path / "ref.md", PRUNE_COLUMNS)
    for x, y in zip(rows, ref_rows, strict=True):
        for key in ("sparsity", "heads", "neurons", "val_top1", "test_top1"):
            assert x[key] == y[key], key
