"""The batched policy ops (vit16/data/policy_ops.py) against torchvision's public
functional API, per op and magnitude, on the same uint8 images (CPU).

Tolerance: none. Every op, colour and geometric, is asserted bit-exact
(``torch.equal``) against ``torchvision.transforms.v2.functional`` on the CPU:
the batched code repeats torchvision's float32 arithmetic (its inverse affine
matrix and affine grid, nearest ``grid_sample`` with zero fill; its blend,
grey and LUT formulas), and the 3x3 sharpness sum is an exact integer whose
division by 13 cannot tie when rounded. On CUDA, fused multiply-adds and
``grid_sample``'s unnormalisation may round differently; there a
nearest-neighbour tie (a source coordinate exactly between two pixels) could
pick the neighbour: that path is not compared here.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vit16.data import policy_space as S
from vit16.data.augment import BatchPolicy
from vit16.data.policy_bench import count_aten_ops, count_transfers
from vit16.data.policy_ops import apply_draw


def images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, 32, 32): noise, smooth images, a constant and a two-level image."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n // 2, 3, 32, 32), dtype=torch.uint8, generator=g)
    coarse = torch.randint(0, 256, (n - n // 2 - 2, 3, 8, 8), generator=g).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear").round().to(torch.uint8)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    two = torch.where(torch.arange(32)[None, None, :, None] < 9, 40, 200).to(torch.uint8).expand(1, 3, 32, 32)
    return torch.cat([noise, smooth, flat, two])


def reference(img: torch.Tensor, op: str, m: float) -> torch.Tensor:
    """torchvision's public functional op, as its AutoAugment family applies it (defaults: nearest, fill None)."""
    if op == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                         center=[0, 0])
    if op == "ShearY":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                         center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        t = [int(m), 0] if op == "TranslateX" else [0, int(m)]
        return TF.affine(img, angle=0.0, translate=t, scale=1.0, shear=[0.0, 0.0])
    table = {"Identity": lambda: img, "Rotate": lambda: TF.rotate(img, angle=m),
             "Brightness": lambda: TF.adjust_brightness(img, 1.0 + m),
             "Color": lambda: TF.adjust_saturation(img, 1.0 + m),
             "Contrast": lambda: TF.adjust_contrast(img, 1.0 + m),
             "Sharpness": lambda: TF.adjust_sharpness(img, 1.0 + m),
             "Posterize": lambda: TF.posterize(img, int(m)), "Solarize": lambda: TF.solarize(img, 255.0 * m),
             "AutoContrast": lambda: TF.autocontrast(img), "Equalize": lambda: TF.equalize(img),
             "Invert": lambda: TF.invert(img)}
    return table[op]()


SPACES = {"autoaugment": (S.AUTOAUGMENT_SPACE, 10), "randaugment": (S.RANDAUGMENT_SPACE, 31),
          "trivialaugment": (S.TRIVIALAUGMENT_SPACE, 31)}
CASES = [(space, op) for space, (table, _) in SPACES.items() for op in table]


@pytest.mark.parametrize("space,op", CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_op_equals_torchvision_at_every_magnitude(space, op):
    table, bins = SPACES[space]
    mags = S.magnitudes(table, op, bins, 32, 32)
    signed = table[op] is not None and table[op][3]
    m = torch.cat([mags, -mags]) if signed else mags  # every bin, both signs, one sample each
    imgs = images(len(m), seed=len(m))
    d = S.PolicyDraw(torch.full((1, len(m)), S.OP_ID[op]), m[None].double())
    out = apply_draw(imgs, d, tuple(table))
    ref = torch.cat([reference(imgs[i:i + 1], op, float(m[i])) for i in range(len(m))])
    assert out.dtype == torch.uint8 and out.shape == imgs.shape
    assert torch.equal(out, ref), f"{op}: {(out != ref).float().mean():.4%} of values differ"


@pytest.mark.parametrize("name,policy", [("autoaugment", "cifar10"), ("autoaugment", "imagenet"),
                                         ("randaugment", "cifar10"), ("trivialaugment", "cifar10")])
def test_mixed_batch_equals_per_sample_torchvision(name, policy):
    pol = BatchPolicy(name, policy)
    imgs = images(96, seed=3)
    d = S.draw(name, policy, 96, 32, 32, torch.Generator().manual_seed(5))
    out = apply_draw(imgs, d, pol.ops)
    for i in range(96):  # each sample through its own ops, stage by stage
        ref = imgs[i:i + 1]
        for s in range(d.ops.shape[0]):
            ref = reference(ref, S.OPS[int(d.ops[s, i])], float(d.mags[s, i]))
        assert torch.equal(out[i:i + 1], ref), (i, [S.OPS[int(o)] for o in d.ops[:, i]])
    assert len(set(d.ops.flatten().tolist())) >= 6  # the batch mixes many ops


def test_published_spaces():
    # RandAugment M = 9 of 31 bins: 9/30 of each range's end
    assert S.magnitudes(S.RANDAUGMENT_SPACE, "Rotate", 31, 32, 32)[9] == pytest.approx(9.0, abs=1e-5)
    assert S.magnitudes(S.RANDAUGMENT_SPACE, "ShearX", 31, 32, 32)[9] == pytest.approx(0.09, abs=1e-6)
    end = S.magnitudes(S.RANDAUGMENT_SPACE, "TranslateX", 31, 32, 32)[-1]
    assert end == pytest.approx(150 / 331 * 32, abs=1e-5)
    assert S.magnitudes(S.AUTOAUGMENT_SPACE, "Posterize", 10, 32, 32).tolist() == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert S.magnitudes(S.TRIVIALAUGMENT_SPACE, "Posterize", 31, 32, 32)[[0, -1]].tolist() == [8, 2]
    assert S.magnitudes(S.TRIVIALAUGMENT_SPACE, "Rotate", 31, 32, 32)[-1] == 135.0
    assert S.magnitudes(S.AUTOAUGMENT_SPACE, "Solarize", 10, 32, 32)[[0, -1]].tolist() == [1.0, 0.0]
    assert "Invert" not in S.RANDAUGMENT_SPACE and "Invert" in S.AUTOAUGMENT_SPACE
    assert len(S.RANDAUGMENT_SPACE) == len(S.TRIVIALAUGMENT_SPACE) == 14
    for table in S.AUTOAUGMENT_POLICIES.values():
        assert len(table) == 25 and all(len(sub) == 2 for sub in table)
        assert all(0.0 <= p <= 1.0 and (b is None or 0 <= b < 10) for sub in table for _, p, b in sub)


def test_draw_frequencies():
    d = S.draw("autoaugment", "cifar10", 20000, 32, 32, torch.Generator().manual_seed(0))
    # CIFAR-10 sub-policy 0 is (Invert 0.1, Contrast 0.2); overall firing rate = mean of the 50 probabilities
    probs = [p for sub in S.AUTOAUGMENT_POLICIES["cifar10"] for _, p, _ in sub]
    fired = (d.ops != S.OP_ID["Identity"]).float().mean().item()
    assert fired == pytest.approx(sum(probs) / len(probs), abs=0.01)
    r = S.draw("randaugment", "", 20000, 32, 32, torch.Generator().manual_seed(0))
    counts = torch.bincount(r.ops.flatten(), minlength=len(S.OPS)).float() / r.ops.numel()
    assert counts[S.OP_ID["Invert"]] == 0
    assert torch.allclose(counts[counts > 0], torch.full((14,), 1 / 14), atol=0.006)
    neg = (r.mags[r.ops == S.OP_ID["Rotate"]] < 0).float().mean().item()
    assert neg == pytest.approx(0.5, abs=0.03)


def test_policy_reproducible_and_counts_independent_of_content():
    pol = BatchPolicy("autoaugment", "cifar10")
    a = pol(images(64), torch.Generator().manual_seed(1))
    assert torch.equal(a, pol(images(64), torch.Generator().manual_seed(1)))
    assert not torch.equal(a, pol(images(64), torch.Generator().manual_seed(2)))
    ops = {count_aten_ops(lambda: pol(images(n, seed), torch.Generator().manual_seed(seed)))
           for n, seed in ((64, 0), (64, 1), (256, 2))}
    assert len(ops) == 1  # the same number of aten ops for any draw and batch size
    assert count_transfers(lambda: pol(images(64), torch.Generator().manual_seed(0))) == 1


def test_policy_rejects_bad_names():
    with pytest.raises(ValueError, match="auto_augment = 'fast'"):
        BatchPolicy("fast")
    with pytest.raises(ValueError, match="autoaugment_policy"):
        BatchPolicy("autoaugment", "svhn")


def test_bench_policy_reports_both_implementations(capsys):
    from vit16.commands.bench import main
    from vit16.data.policy_bench import bench_policy

    r = bench_policy("trivialaugment", batch=16, steps=1)
    assert r["images_per_s"] > 0 and r["copies"] == 1 and r["aten_ops"] > 10
    assert main(["--device", "cpu", "--models", "", "--data", "", "--policies", "randaugment",
                 "--policy-batch", "16"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| randaugment")]
    assert len(rows) == 1 and rows[0].split("|")[-2].strip().count("/") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["autoaugment", "randaugment", "trivialaugment"])
def test_policy_on_cuda_matches_cpu(name):
    # the same draws on both devices; nearest-neighbour ties and fused multiply-adds may
    # round differently on the GPU, so at most 1 % of values may differ
    pol = BatchPolicy(name, "cifar10")
    imgs = images(256)
    cpu = pol(imgs, torch.Generator().manual_seed(0))
    gpu = pol(imgs.cuda(), torch.Generator().manual_seed(0)).cpu()
    assert (cpu != gpu).float().mean() < 0.01


@pytest.mark.parametrize("policy", ["autoaugment", ""])
def test_pipeline_one_copy_per_micro_batch(policy):
    from vit16.config import DataConfig
    from vit16.data.augment import BatchAugment

    cfg = DataConfig(auto_augment=policy, crop_padding=4, hflip=True, random_erasing=0.25, mixup_alpha=0.8,
                     cutmix_alpha=1.0)
    aug = BatchAugment(cfg, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 10, geometric=True, autoaugment_policy="cifar10")
    imgs, labels = images(32), torch.arange(32) % 10
    # the first batch also builds the normalisation constants on the device (2 copies, once)
    assert count_transfers(lambda: aug(imgs, labels, torch.Generator().manual_seed(1))) == 3
    assert count_transfers(lambda: aug(imgs, labels, torch.Generator().manual_seed(0))) == 1
    x, t = aug(imgs, labels, torch.Generator().manual_seed(0))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and t.shape == (32, 10)
    assert torch.allclose(t.sum(1), torch.ones(32))
