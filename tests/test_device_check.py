"""scripts/device_check.py: its --smoke mode runs every phase on the CPU (as CI
can), without submitit (the GPU image has none), and its data pack round-trips."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_runs_every_phase_without_submitit(tmp_path, cifar10_root):
    blocker = tmp_path / "no_submitit"
    blocker.mkdir()
    (blocker / "submitit.py").write_text("raise ImportError('submitit is not installed (test)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]), OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "run", "--smoke", "--data", str(cifar10_root),
                           "--out", str(out), "--budget", "300"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# device check: 0 failed") and summary.count("- ok:") == 7, summary
    assert "killed (SIGKILL) with last.pt at step" in summary and "0 with a wrapper prefix" in summary
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.md", "curve.csv", "e2e.log", "env.json", "results.md", "summary.md", "train.log"]
    assert json.loads((out / "env.json").read_text())["submitit"] is False
    assert (out / "results.md").read_text().count("| small_vit_cifar |") == 2  # the e2e run and the curve
    assert len((out / "curve.csv").read_text().splitlines()) == 1 + 3
    assert "| vit_quick | 32 |" in (out / "bench.md").read_text()


def test_pack_round_trips_the_image_folder(tmp_path, monkeypatch):
    dc = load_script()
    src = tmp_path / "shared" / "cifar10"
    (src / "train" / "cat").mkdir(parents=True)
    (src / "train" / "cat" / "0.jpg").write_bytes(b"jpeg bytes")
    dest = tmp_path / "repo" / ".device" / "cifar10.tar.gz"
    dc.pack(src, dest)
    with tarfile.open(dest) as tar:
        assert "cifar10/train/cat/0.jpg" in tar.getnames()
    monkeypatch.setattr(dc, "PACK", dest)
    root = dc.data_root(type("Args", (), {"data": None})())
    assert (root / "cifar10" / "train" / "cat" / "0.jpg").read_bytes() == b"jpeg bytes"
