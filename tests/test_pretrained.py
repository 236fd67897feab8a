"""``init = ...`` resolution (vit16.models.pretrained): every weight format the
tests write themselves (vit16 checkpoint, torchvision, timm .pth/.safetensors,
google-research/vision_transformer .npz) loads back with equal logits; library
names are resolved without downloading (the download functions are replaced);
bad input is one clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vit16.checkpoint import CheckpointError, save_checkpoint
from vit16.config import ConfigError, load_tables, resolve
from vit16.experiment import DEFAULT_EXPERIMENTS
from vit16.models import (
    VisionTransformer, WeightLoadError, from_jax_npz, load_pretrained, read_init, resample_patch_embed,
    to_jax_npz, to_timm, to_torchvision,
)
from vit16.models.pretrained import parse_init
from vit16.runtime import load_init

SMALL = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, mlp_dim=64, num_classes=5)
TV_SMALL = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                num_classes=5)


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random values everywhere (default inits zero biases and heads, which
    would hide a wrong mapping)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def source_model(**kw) -> VisionTransformer:
    return randomize(VisionTransformer(**{**SMALL, **kw}))


def logits(model: nn.Module, img_size: int = 32) -> torch.Tensor:
    x = torch.randn(3, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


def assert_same_logits(a: nn.Module, b: nn.Module) -> None:
    ref, out = logits(a), logits(b)
    assert ref.abs().max() > 0.05  # not a comparison between zeros
    assert (ref - out).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("spec, expected", [
    ("runs/x/best.pt", ("file", "runs/x/best.pt")),
    ("torchvision:ViT_B_16_Weights.IMAGENET1K_V1", ("torchvision", "ViT_B_16_Weights.IMAGENET1K_V1")),
    ("torchvision:/w/vit.pth", ("torchvision_file", "/w/vit.pth")),
    ("torchvision:vit_b_16-c867db91.pth", ("torchvision_file", "vit_b_16-c867db91.pth")),
    ("timm:vit_base_patch16_224.augreg_in21k_ft_in1k", ("timm", "vit_base_patch16_224.augreg_in21k_ft_in1k")),
    ("timm:hf-hub:timm/vit_base_patch16_224.augreg_in21k", ("timm", "hf-hub:timm/vit_base_patch16_224.augreg_in21k")),
    ("timm:weights/model.safetensors", ("timm_file", "weights/model.safetensors")),
    ("jax:ViT-B_16.npz", ("jax_file", "ViT-B_16.npz")),
    ("ViT-B_16.npz", ("file", "ViT-B_16.npz")),
])
def test_parse_init(spec, expected):
    assert parse_init(spec) == expected


def test_unknown_prefix_missing_file_and_empty_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"unknown prefix 'hf:'.*torchvision:, timm:, jax:"):
        read_init("hf:google/vit-base-patch16-224")
    with pytest.raises(CheckpointError, match=r"nope\.pt not found; check the path"):
        read_init(str(tmp_path / "nope.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        read_init(f"timm:{tmp_path / 'nope.safetensors'}")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_init(str(tmp_path))
    with pytest.raises(CheckpointError, match="init is empty"):
        read_init("  ")


# ----------------------------------------------------------------------------- our checkpoints


def test_vit16_checkpoint_and_plain_model_files(tmp_path):
    src = source_model()
    save_checkpoint(tmp_path / "best.pt", {"model": src.state_dict(), "epoch": 3})
    torch.save({"model": src.state_dict()}, tmp_path / "other.pt")  # no vit16 format key
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "ddp.pth")
    for path in (tmp_path / "best.pt", str(tmp_path / "other.pt"), str(tmp_path / "ddp.pth")):
        dst = VisionTransformer(**SMALL)
        assert load_pretrained(dst, path) == []
        assert_same_logits(src, dst)


def test_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    src = source_model()
    save_checkpoint(tmp_path / "best.pt", {"model": src.state_dict()})
    data = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_init(str(tmp_path / "cut.pt"))
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="holds no state dict.*found: epoch, note"):
        read_init(str(tmp_path / "meta.pt"))
    save_checkpoint(tmp_path / "future.pt", {"model": src.state_dict()})
    state = torch.load(tmp_path / "future.pt", weights_only=True)
    torch.save({**state, "vit16_checkpoint": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        read_init(str(tmp_path / "future.pt"))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3, np.float32))
    with pytest.raises(CheckpointError, match="not a google-research/vision_transformer"):
        read_init(str(tmp_path / "other.npz"))


def test_mismatch_is_one_message_with_missing_unexpected_and_shapes(tmp_path):
    sd = source_model().state_dict()
    sd["blocks.0.mlp.fc1.bias"] = torch.zeros(65)
    sd["extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "w.pt")
    deeper = VisionTransformer(**{**SMALL, "depth": 3})
    with pytest.raises(WeightLoadError) as info:
        load_pretrained(deeper, str(tmp_path / "w.pt"))
    msg = str(info.value)
    assert msg.count("\n") == 0 and "do not fit VisionTransformer" in msg
    assert "missing keys: blocks.2." in msg and "unexpected keys: extra.weight" in msg
    assert "shape mismatches: blocks.0.mlp.fc1.bias (65,) vs model (64,)" in msg
    with pytest.raises(CheckpointError, match="missing keys.*unexpected keys.*shape mismatches"):
        load_init(deeper, tmp_path / "w.pt")  # the trainer's entry point: CheckpointError


# ----------------------------------------------------------------------------- torchvision


def test_torchvision_file_loads_with_torchvision_logits(tmp_path):
    tv = randomize(torchvision.models.VisionTransformer(**TV_SMALL))
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    ours = VisionTransformer(**SMALL)
    assert load_pretrained(ours, f"torchvision:{tmp_path / 'tv.pth'}") == []
    assert_same_logits(tv, ours)
    # our model written in torchvision's layout comes back the same
    src = source_model()
    torch.save(to_torchvision(src.state_dict()), tmp_path / "ours_tv.pth")
    back = VisionTransformer(**SMALL)
    load_pretrained(back, f"torchvision:{tmp_path / 'ours_tv.pth'}")
    assert_same_logits(src, back)


def test_torchvision_name_resolves_through_get_weight_without_download(tmp_path, monkeypatch):
    """The weight enum is torchvision's real one; only the URL fetch is replaced."""
    import torchvision.models._api as api

    tv = randomize(torchvision.models.VisionTransformer(**TV_SMALL))
    calls = []

    def fake_fetch(url, *args, **kwargs):
        calls.append((url, kwargs))
        return tv.state_dict()

    monkeypatch.setattr(api, "load_state_dict_from_url", fake_fetch)
    ours = VisionTransformer(**SMALL)
    load_init(ours, "torchvision:ViT_B_16_Weights.IMAGENET1K_V1")
    assert calls == [(torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1.url, {"progress": True})]
    assert_same_logits(tv, ours)
    with pytest.raises(CheckpointError, match="torchvision has no weights named 'ViT_B_16_Weights.NOPE'"):
        read_init("torchvision:ViT_B_16_Weights.NOPE")
    with pytest.raises(CheckpointError, match="no weights named 'vit_b_16'.*full enum name"):
        read_init("torchvision:vit_b_16")


def test_torchvision_non_vit_model_takes_the_state_dict_as_it_is(tmp_path):
    src = randomize(torchvision.models.resnet18(num_classes=5))
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    dst = torchvision.models.resnet18(num_classes=5)
    load_pretrained(dst, f"torchvision:{tmp_path / 'r18.pth'}")
    assert_same_logits(src, dst)


def test_wrong_layout_for_the_prefix_names_the_layout(tmp_path):
    src = source_model()
    torch.save(to_torchvision(src.state_dict()), tmp_path / "tv.pth")
    torch.save(src.state_dict(), tmp_path / "ours.pth")
    with pytest.raises(CheckpointError, match="not a timm ViT state dict \\(it looks like a torchvision layout\\)"):
        read_init(f"timm:{tmp_path / 'tv.pth'}")
    with pytest.raises(CheckpointError, match="not a torchvision ViT state dict \\(it looks like a vit16/timm"):
        read_init(f"torchvision:{tmp_path / 'ours.pth'}")
    # a torchvision file given as a plain path: the strict load fails and names the prefix
    with pytest.raises(WeightLoadError, match=r'looks like a torchvision state dict: use init = "torchvision:'):
        load_pretrained(VisionTransformer(**SMALL), str(tmp_path / "tv.pth"))


# ----------------------------------------------------------------------------- timm


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_files_written_from_our_model(tmp_path, suffix):
    src = source_model(representation_size=24)
    sd = to_timm(src.state_dict())
    if suffix == ".safetensors":
        safetensors = pytest.importorskip("safetensors.torch")
        safetensors.save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    else:
        torch.save(sd, tmp_path / "w.pth")
    dst = VisionTransformer(**SMALL, representation_size=24)
    assert load_pretrained(dst, f"timm:{tmp_path / ('w' + suffix)}") == []
    assert_same_logits(src, dst)


def _timm_vit(**kw):
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    assert timm
    return randomize(TimmViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             mlp_ratio=2.0, num_classes=5, **kw))


def test_timm_model_file_loads_with_timm_logits(tmp_path):
    ref = _timm_vit()
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = VisionTransformer(**SMALL)
    load_pretrained(ours, f"timm:{tmp_path / 'timm.pth'}")
    assert_same_logits(ref, ours)


def test_timm_name_uses_create_model_pretrained(monkeypatch):
    timm = pytest.importorskip("timm")
    ref = _timm_vit(global_pool="avg")
    calls = []

    def fake_create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        return ref

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    ours = VisionTransformer(**SMALL, pool="gap")  # timm's avg pool normalises after pooling
    load_init(ours, "timm:vit_base_patch16_224.augreg_in21k_ft_in1k")
    assert calls == [("vit_base_patch16_224.augreg_in21k_ft_in1k", True, {})]
    assert_same_logits(ref, ours)

    def failing(name, pretrained=False, **kwargs):
        raise RuntimeError(f"Unknown model ({name})")

    monkeypatch.setattr(timm, "create_model", failing)
    with pytest.raises(CheckpointError, match=r"timm could not provide.*Unknown model \(vit_nope\)"):
        read_init("timm:vit_nope")


def test_timm_name_without_timm_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(CheckpointError) as info:
        read_init("timm:vit_base_patch16_224.augreg_in21k_ft_in1k")
    assert str(info.value) == ("init 'timm:vit_base_patch16_224.augreg_in21k_ft_in1k' needs timm: "
                               "pip install timm")


# ----------------------------------------------------------------------------- JAX .npz


def test_jax_npz_layout_shapes():
    src = source_model(representation_size=24)
    arrays = to_jax_npz(src.state_dict(), num_heads=2)
    expected = {
        "embedding/kernel": (8, 8, 3, 32), "embedding/bias": (32,), "cls": (1, 1, 32),
        "Transformer/posembed_input/pos_embedding": (1, 17, 32),
        "Transformer/encoderblock_1/LayerNorm_0/scale": (32,),
        "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel": (32, 2, 16),
        "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/value/bias": (2, 16),
        "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel": (2, 16, 32),
        "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/bias": (32,),
        "Transformer/encoderblock_1/LayerNorm_2/bias": (32,),
        "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel": (32, 64),
        "Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel": (64, 32),
        "Transformer/encoder_norm/scale": (32,),
        "pre_logits/kernel": (32, 24), "head/kernel": (24, 5), "head/bias": (5,),
    }
    for key, shape in expected.items():
        assert arrays[key].shape == shape, key
    assert len(arrays) == 4 + 2 * 16 + 2 + 4  # top, 16 arrays per block, encoder_norm, pre_logits+head
    sd = from_jax_npz(arrays)
    assert sd.keys() == src.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in src.state_dict().items())


@pytest.mark.parametrize("spec", ["{path}", "jax:{path}", "timm:{path}"])
def test_jax_npz_file_loads_with_equal_logits(tmp_path, spec):
    src = source_model(representation_size=24)
    path = tmp_path / "ViT-B_16.npz"
    np.savez(path, **to_jax_npz(src.state_dict(), num_heads=2))
    dst = VisionTransformer(**SMALL, representation_size=24)
    assert load_pretrained(dst, spec.format(path=path)) == []
    assert_same_logits(src, dst)


def test_jax_npz_old_flax_prefix_and_gap_model(tmp_path):
    src = source_model(pool="gap", class_token=False, fc_norm=False)
    arrays = {f"opt/target/{k}": v for k, v in to_jax_npz(src.state_dict(), num_heads=2).items()}
    arrays["opt/state/step"] = np.zeros((), np.float32)  # optimizer state is ignored
    assert "opt/target/cls" not in arrays
    np.savez(tmp_path / "gap.npz", **arrays)
    dst = VisionTransformer(**SMALL, pool="gap", class_token=False, fc_norm=False)
    load_pretrained(dst, str(tmp_path / "gap.npz"))
    assert_same_logits(src, dst)


def test_jax_npz_agrees_with_timms_reader(tmp_path):
    """An independent reader of the original layout: timm's loader for the
    google-research .npz files gives the same logits as ours."""
    pytest.importorskip("timm")
    from timm.models import vision_transformer as tvt

    if not hasattr(tvt, "_load_weights"):
        pytest.skip("this timm has no .npz loader")
    src = source_model()
    np.savez(tmp_path / "w.npz", **to_jax_npz(src.state_dict(), num_heads=2))
    ref = tvt.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                mlp_ratio=2.0, num_classes=5).eval()
    tvt._load_weights(ref, str(tmp_path / "w.npz"))
    assert_same_logits(src, ref)


def test_jax_npz_unknown_arrays_and_incomplete_attention_are_refused():
    arrays = to_jax_npz(source_model().state_dict(), num_heads=2)
    with pytest.raises(KeyError, match="MAPHead_0/probe"):
        from_jax_npz({**arrays, "MAPHead_0/probe": np.zeros((1, 1, 32), np.float32)})
    del arrays["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/key/kernel"]
    with pytest.raises(KeyError, match="encoderblock_0: attention kernel of key missing"):
        from_jax_npz(arrays)


# ----------------------------------------------------------------------------- fine-tuning adaptations


@pytest.mark.parametrize("zero_head", [True, False])
def test_head_swap_drops_pre_logits_and_follows_zero_head(tmp_path, zero_head):
    """Pre-trained with pre-logits and 5 classes, fine-tuned with 10: the model
    loses its pre-logits layer and keeps a new head, zero iff ``zero_head``."""
    src = source_model(representation_size=24)
    save_checkpoint(tmp_path / "best.pt", {"model": src.state_dict()})
    dst = VisionTransformer(**{**SMALL, "num_classes": 10}, representation_size=24, zero_head=zero_head)
    notes = load_init(dst, tmp_path / "best.pt")
    assert "pre-logits layer dropped" in notes
    assert any("head not loaded" in n and ("zero-initialised" in n) == zero_head for n in notes)
    assert dst.pre_logits is None and dst.head.in_features == 32 and dst.head.out_features == 10
    assert torch.equal(dst.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)
    out = logits(dst)
    assert out.shape == (3, 10)
    assert bool((out == 0).all()) == zero_head
    features = dst.forward_head(dst.forward_features(torch.randn(2, 3, 32, 32)), pre_logits=True)
    assert features.shape == (2, 32)  # the pooled representation, no tanh layer


def test_head_swap_without_pre_logits_keeps_the_built_zero_head(tmp_path):
    src = source_model(representation_size=24)
    torch.save(to_torchvision(src.state_dict()), tmp_path / "tv.pth")
    dst = VisionTransformer(**{**SMALL, "num_classes": 10}, zero_head=True)
    notes = load_pretrained(dst, f"torchvision:{tmp_path / 'tv.pth'}")
    assert notes == ["classification head not loaded (different classes or no pre-logits); "
                     "kept the model's new zero-initialised head"]
    assert not dst.head.weight.any() and torch.equal(dst.norm.weight, src.norm.weight)


def test_same_classes_load_the_head(tmp_path):
    src = source_model()
    save_checkpoint(tmp_path / "best.pt", {"model": src.state_dict()})
    dst = VisionTransformer(**SMALL, zero_head=True)
    assert load_init(dst, tmp_path / "best.pt") == []
    assert torch.equal(dst.head.weight, src.head.weight)


def test_higher_resolution_resizes_the_position_embedding(tmp_path):
    src = source_model()
    np.savez(tmp_path / "w.npz", **to_jax_npz(src.state_dict(), num_heads=2))
    dst = VisionTransformer(**{**SMALL, "img_size": 48, "num_classes": 10})
    notes = load_pretrained(dst, str(tmp_path / "w.npz"))
    assert any("resized from 4x4 to 6x6" in n for n in notes)
    assert dst.pos_embed.shape == (1, 1 + 36, 32)
    assert torch.equal(dst.pos_embed[:, 0], src.pos_embed[:, 0])
    assert logits(dst, img_size=48).shape == (3, 10)


def test_failed_load_leaves_the_model_as_it_was(tmp_path):
    src = source_model(representation_size=24)
    save_checkpoint(tmp_path / "best.pt", {"model": src.state_dict()})
    dst = VisionTransformer(**{**SMALL, "num_classes": 10, "depth": 3}, representation_size=24)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.2\."):
        load_init(dst, tmp_path / "best.pt")
    assert dst.pre_logits is not None  # the head swap waits until everything else fits
    after = dst.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_torchvision_download_failure_is_one_clear_error(monkeypatch):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match=r"could not fetch https://download\.pytorch\.org/models/vit_b_16"
                                              r".*Network is unreachable.*torchvision:PATH"):
        read_init("torchvision:ViT_B_16_Weights.IMAGENET1K_V1")


# ----------------------------------------------------------------------------- patch-size resampling (FlexiViT)


@pytest.mark.parametrize("new_size", [4, 8, 24, (6, 10)])
def test_resample_patch_embed_equals_timms(new_size):
    timm = pytest.importorskip("timm")
    w = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = resample_patch_embed(w, new_size)
    hw = [new_size] * 2 if isinstance(new_size, int) else list(new_size)
    ref = timm.layers.resample_patch_embed(w, hw)
    assert ours.shape == (8, 3, *hw) and ours.dtype == w.dtype
    assert (ours - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    assert resample_patch_embed(w, 16) is w


def test_pi_resize_keeps_the_token_of_an_upsampled_patch():
    """FlexiViT section 3.4: <x, w> = <resize(x), PI-resize(w)>, exact when
    the patch grows."""
    w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    x = torch.randn(7, 3, 4, 4, dtype=torch.float64)
    big = torch.nn.functional.interpolate(x.float(), size=(8, 8), mode="bicubic", antialias=True,
                                          align_corners=False).double()
    w8 = resample_patch_embed(w.float(), 8).double()
    assert torch.allclose(torch.einsum("nchw,dchw->nd", x, w), torch.einsum("nchw,dchw->nd", big, w8),
                          atol=1e-4)


def test_patch16_weights_load_into_a_32px_patch4_model(tmp_path):
    """ImageNet-style weights (patch 16, 4x4 grid at 64px) into a 32px patch-4
    model: every block as it is, the kernel PI-resized to 4x4 as timm resizes it,
    the position embedding to the 8x8 grid."""
    timm = pytest.importorskip("timm")
    src = source_model(img_size=64, patch_size=16)
    torch.save(to_timm(src.state_dict()), tmp_path / "p16.pth")
    dst = VisionTransformer(**{**SMALL, "patch_size": 4})
    notes = load_pretrained(dst, f"timm:{tmp_path / 'p16.pth'}")
    assert notes == ["position embedding resized from 4x4 to 8x8 patches",
                     "patch embedding resampled from 16x16 to 4x4 pixels (FlexiViT pseudo-inverse resize)"]
    ref = timm.layers.resample_patch_embed(src.patch_embed.proj.weight.detach(), [4, 4])
    assert (dst.patch_embed.proj.weight - ref).abs().max().item() <= 1e-6
    assert torch.equal(dst.patch_embed.proj.bias, src.patch_embed.proj.bias)
    assert torch.equal(dst.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    assert logits(dst).shape == (3, 5)


def test_bilinear_patch_resize_is_the_naive_kernel_resize(tmp_path):
    """init_patch_resize = "bilinear": the kernel itself resized (FlexiViT's
    baseline), everything else as with the pseudo-inverse."""
    src = source_model(img_size=64, patch_size=16)
    torch.save(to_timm(src.state_dict()), tmp_path / "p16.pth")
    dst = VisionTransformer(**{**SMALL, "patch_size": 4})
    notes = load_pretrained(dst, f"timm:{tmp_path / 'p16.pth'}", patch_resize="bilinear")
    assert notes[1] == "patch embedding resampled from 16x16 to 4x4 pixels (bilinear resize of the kernel)"
    w = src.patch_embed.proj.weight.detach()
    assert torch.equal(dst.patch_embed.proj.weight, F.interpolate(w, size=(4, 4), mode="bilinear"))
    assert not torch.allclose(dst.patch_embed.proj.weight, resample_patch_embed(w, 4))
    with pytest.raises(ConfigError, match=r"init_patch_resize = 'nearest' must be one of 'pinv', 'bilinear'"):
        resolve("quick", load_tables(DEFAULT_EXPERIMENTS), ["init_patch_resize=nearest"])
