"""``python -m vit16 bench``'s model table: the numbers it reports and the
data-sheet peaks it divides by (no timed assertions: speed lives in results/)."""

from __future__ import annotations

import pytest
import torch

from vit16.commands import bench


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12), ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("Some Future GPU", None),
])
def test_datasheet_peak_of_each_gpu_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert bench.datasheet_flops(torch.device("cuda", 0)) == peak
    assert bench.datasheet_flops(torch.device("cpu")) is None


def test_bench_model_counts_flops_and_steps():
    r = bench.bench_model("vit_quick", torch.device("cpu"), batch_size=4, steps=1, warmup=1)
    assert r["params"] == 558_474 and r["img_size"] == 32 and r["peak_memory_gib"] is None
    # fwd + bwd of vit_quick at 32px is about 3x its 0.019 GFLOPs forward, per image
    assert 0.04e9 < r["step_flops"] / 4 < 0.08e9 and r["images_per_s"] > 0


def test_model_table_has_both_mfu_columns(capsys):
    assert bench.main(["--device", "cpu", "--models", "vit_quick", "--batch-size", "4", "--steps", "1",
                       "--data", "", "--policies", ""]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "TFLOP/s (fp32 matmul)" in out
    row = next(line for line in out.splitlines() if line.startswith("| vit_quick |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 10 and cells[4] == "no" and cells[7] == "-" and float(cells[8]) > 0 and cells[9] == "-"


@pytest.mark.slow
def test_bench_model_compiled_runs_on_the_cpu():
    r = bench.bench_model("vit_quick", torch.device("cpu"), batch_size=4, steps=1, warmup=1, compile=True)
    assert r["images_per_s"] > 0 and r["params"] == 558_474


def test_grad_checkpointing_keeps_less_for_the_backward(capsys):
    import vit16

    def kept(batch: int, ckpt: bool) -> int:
        torch.manual_seed(0)
        model = vit16.MODELS.build("vit_quick", grad_checkpointing=ckpt)
        return bench.saved_activation_bytes(model, torch.randn(batch, 3, 32, 32))

    plain1, plain4, ckpt4 = kept(1, False), kept(4, False), kept(4, True)
    assert 3.5 < plain4 / plain1 <= 4.0  # activations grow with the batch (the rest is shared)
    assert ckpt4 < 0.2 * plain4  # only the blocks' inputs and the embeddings/head are kept
    assert bench.main(["--device", "cpu", "--models", "", "--data", "", "--policies", "",
                       "--activations", "vit_quick", "--activations-batch", "2"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| vit_quick |"))
    assert row.split("|")[2].strip() == "32" and row.strip().endswith("% |")


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("0", "0")])
def test_importing_vit16_first_turns_on_huge_pages_unless_told_not_to(preset, expected):
    """``import vit16`` before torch sets PyTorch's THP_MEM_ALLOC_ENABLE=1
    (results/BENCH_CPU.md: the 224px CPU pipeline); a value the user set stays."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    code = "import os, vit16, torch; torch.zeros(1 << 20); print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
