"""The hybrid R50+ViT-B/16 (vit16.models.hybrid, paper section 3.1): weight for
weight timm's ``vit_base_r50_s16_224`` / ``_384`` (logits within 1e-4 after
``from_timm`` on random weights), other stage counts against timm's ResNetV2,
TF "SAME" padding against timm's StdConv2dSame, the original JAX
``R50+ViT-B_16.npz`` layout written from a timm model and read back, and the
builder's errors."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from vit16 import MODELS
from vit16.models import VisionTransformer, from_jax_npz, from_timm, load_pretrained, to_jax_npz, to_timm
from vit16.models.hybrid import StdConv2d

timm = pytest.importorskip("timm")


def randomize(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random values everywhere (default inits zero biases, heads and the last
    GroupNorm of every unit, which would hide a wrong mapping)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def max_logit_diff(ref: torch.nn.Module, ours: torch.nn.Module, img_size: int, batch: int = 2) -> float:
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref.eval()(x), ours.eval()(x)
    assert a.abs().max() > 0.05  # not a comparison between zeros
    return (a - b).abs().max().item()


def converted(ref: torch.nn.Module, name: str, **overrides) -> VisionTransformer:
    ours = MODELS.build(name, **overrides)
    ours.load_state_dict(from_timm(ref.state_dict()))
    assert to_timm(ours.state_dict()).keys() == ref.state_dict().keys()
    return ours


def timm_hybrid(layers: tuple[int, ...], patch_size: int = 1, img_size: int = 64):
    """A small timm hybrid of the public parts that ``vit_base_r50_s16_224`` is
    built of (ResNetV2, non-pre-activation, "same" stem, StdConv2dSame eps 1e-8)."""
    from timm.layers import HybridEmbed, StdConv2dSame
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    backbone = ResNetV2(layers=layers, num_classes=0, global_pool="", preact=False, stem_type="same",
                        conv_layer=partial(StdConv2dSame, eps=1e-8))
    return TimmViT(img_size=img_size, patch_size=patch_size, embed_dim=32, depth=2, num_heads=2,
                   mlp_ratio=2.0, num_classes=5, embed_layer=partial(HybridEmbed, backbone=backbone))


# ----------------------------------------------------------------------------- timm parity


def test_r50_b16_224_equals_timm():
    ref = randomize(timm.create_model("vit_base_r50_s16_224", pretrained=False, num_classes=1000))
    ours = converted(ref, "vit_r50_b16")
    assert ours.patch_embed.grid_size == 14 and ours.patch_embed.proj.kernel_size == (1, 1)
    assert max_logit_diff(ref, ours, 224) <= 1e-4


def test_r50_b16_384_equals_timm():
    """The 384px model at depth 2 (the blocks are the 224 model's; the CPU time
    goes to the 24x24 grid)."""
    ref = randomize(timm.create_model("vit_base_r50_s16_384", pretrained=False, depth=2))
    ours = converted(ref, "vit_r50_b16_384", depth=2)
    assert ours.pos_embed.shape == (1, 1 + 24 * 24, 768)
    assert max_logit_diff(ref, ours, 384, batch=1) <= 1e-4


@pytest.mark.parametrize("layers, timm_patch, patch_size", [
    ((1, 1), 1, 8),  # stride 8, 1x1 patches of the feature map
    ((1, 1), 2, 16),  # 2x2 patches of the stride-8 map: 16px patches
    ((1, 2, 1, 1), 1, 32),  # four stages (a ResNet-50's layout), stride 32
])
def test_other_stage_counts_equal_timms_resnetv2(layers, timm_patch, patch_size):
    ref = randomize(timm_hybrid(layers, timm_patch))
    ours = VisionTransformer(img_size=64, patch_size=patch_size, hybrid_layers=layers, embed_dim=32,
                             depth=2, num_heads=2, mlp_dim=64, num_classes=5)
    ours.load_state_dict(from_timm(ref.state_dict()))
    assert ours.patch_embed.num_patches == ref.patch_embed.num_patches
    assert max_logit_diff(ref, ours, 64) <= 1e-4


@pytest.mark.parametrize("kernel, stride", [(7, 2), (3, 2), (3, 1), (1, 2), (1, 1)])
@pytest.mark.parametrize("size", [7, 8, 15])
def test_same_padding_equals_timms_std_conv(kernel, stride, size):
    from timm.layers import StdConv2dSame

    ref = StdConv2dSame(4, 6, kernel, stride=stride, eps=1e-8)
    ours = StdConv2d(4, 6, kernel, stride=stride)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, size, size)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert b.shape[-1] == -(-size // stride)  # ceil(size / stride): TF "SAME"
    assert (a - b).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------- JAX .npz


def _r50_at_64px():
    """The paper's R50 (units 3, 4, 9) under a 1-block ViT, at 64px (4x4 patches)."""
    ref = randomize(timm.create_model("vit_base_r50_s16_224", pretrained=False, img_size=64, depth=1,
                                      embed_dim=64, num_heads=2, num_classes=5))
    return ref, dict(img_size=64, depth=1, embed_dim=64, num_heads=2, mlp_dim=256, num_classes=5)


def test_jax_npz_layout_of_the_hybrid():
    """The original code's names (vit_jax: ``conv_root``, ``gn_root``,
    ``blockS/unitU/{conv,gn}{1,2,3}``, ``conv_proj``/``gn_proj`` in each stage's
    first unit; HWIO kernels), checked against timm's tensors directly."""
    ref, _ = _r50_at_64px()
    arrays = to_jax_npz(from_timm(ref.state_dict()), num_heads=2)
    bb = {k[len("patch_embed.backbone."):]: v for k, v in ref.state_dict().items()
          if k.startswith("patch_embed.backbone.")}

    def hwio(t):
        return t.permute(2, 3, 1, 0).numpy()

    assert arrays["conv_root/kernel"].shape == (7, 7, 3, 64)
    assert np.array_equal(arrays["conv_root/kernel"], hwio(bb["stem.conv.weight"]))
    assert np.array_equal(arrays["gn_root/scale"], bb["stem.norm.weight"].numpy())
    assert np.array_equal(arrays["gn_root/bias"], bb["stem.norm.bias"].numpy())
    for s, units in enumerate((3, 4, 9)):
        for u in range(units):
            unit, ours = f"block{s + 1}/unit{u + 1}/", f"stages.{s}.blocks.{u}."
            for r in (1, 2, 3):
                assert np.array_equal(arrays[f"{unit}conv{r}/kernel"], hwio(bb[f"{ours}conv{r}.weight"]))
                assert np.array_equal(arrays[f"{unit}gn{r}/scale"], bb[f"{ours}norm{r}.weight"].numpy())
                assert np.array_equal(arrays[f"{unit}gn{r}/bias"], bb[f"{ours}norm{r}.bias"].numpy())
            assert (f"{unit}conv_proj/kernel" in arrays) == (u == 0)
            if u == 0:
                assert np.array_equal(arrays[f"{unit}conv_proj/kernel"], hwio(bb[f"{ours}downsample.conv.weight"]))
                assert np.array_equal(arrays[f"{unit}gn_proj/scale"], bb[f"{ours}downsample.norm.weight"].numpy())
    assert arrays["block3/unit9/conv3/kernel"].shape == (1, 1, 256, 1024)
    assert arrays["block2/unit1/conv2/kernel"].shape == (3, 3, 128, 128)
    assert arrays["embedding/kernel"].shape == (1, 1, 1024, 64)
    backbone = [k for k in arrays if not k.startswith(("Transformer/", "embedding/", "cls", "head/"))]
    assert len(backbone) == 3 + 16 * 9 + 3 * 3  # root, 9 arrays per unit, 3 per projection


@pytest.mark.parametrize("prefix", ["", "opt/target/"])
def test_jax_npz_written_from_timm_loads_with_timms_logits(tmp_path, prefix):
    ref, kw = _r50_at_64px()
    arrays = to_jax_npz(from_timm(ref.state_dict()), num_heads=2)
    np.savez(tmp_path / "R50+ViT-B_16.npz", **{prefix + k: v for k, v in arrays.items()})
    ours = MODELS.build("vit_r50_b16", **kw)
    assert load_pretrained(ours, f"jax:{tmp_path / 'R50+ViT-B_16.npz'}") == []
    assert max_logit_diff(ref, ours, 64) <= 1e-4


def test_jax_npz_unknown_hybrid_arrays_are_refused():
    ref, _ = _r50_at_64px()
    arrays = to_jax_npz(from_timm(ref.state_dict()), num_heads=2)
    with pytest.raises(KeyError, match="block1/unit1/conv4/kernel"):
        from_jax_npz({**arrays, "block1/unit1/conv4/kernel": np.zeros((1, 1, 4, 4), np.float32)})


# ----------------------------------------------------------------------------- shapes and errors


def test_stem_only_hybrid_for_32px_trains():
    """``hybrid_layers=()``: the ResNet stem alone (stride 4) under a small ViT,
    an 8x8 grid of 4px patches at 32px."""
    model = VisionTransformer(img_size=32, patch_size=4, hybrid_layers=(), embed_dim=32, depth=1,
                              num_heads=2, mlp_dim=64, num_classes=3)
    assert model.patch_embed.num_patches == 64 and model.pos_embed.shape == (1, 65, 32)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_units_start_as_their_shortcut():
    """The original code's init: the last GroupNorm of every unit has zero scale."""
    model = VisionTransformer(img_size=32, patch_size=8, hybrid_layers=(2, 1), embed_dim=32, depth=1,
                              num_heads=2, num_classes=3)
    norms = [m.norm3.weight for stage in model.patch_embed.backbone.stages for m in stage.blocks]
    assert len(norms) == 3 and all(not w.any() for w in norms)


def test_hybrid_errors_are_clear():
    with pytest.raises(ValueError, match="patch_size 4 is not a multiple of the hybrid backbone's stride 8"):
        VisionTransformer(img_size=32, patch_size=4, hybrid_layers=(1, 1))
    with pytest.raises(ValueError, match="positive unit counts"):
        VisionTransformer(img_size=32, patch_size=4, hybrid_layers=(0,))
    with pytest.raises(ValueError, match="img_size 40 is not a multiple of patch_size 16"):
        VisionTransformer(img_size=40, patch_size=16, hybrid_layers=(1, 1, 1))
    model = VisionTransformer(img_size=32, patch_size=4, hybrid_layers=(), depth=1, embed_dim=32, num_heads=2)
    with pytest.raises(ValueError, match=r"expects \(32, 32\).*data.img_size"):
        model(torch.randn(1, 3, 64, 64))
