"""Models: exact parameter counts, registry errors, weight-for-weight parity
with torchvision and timm, position-embedding resizing, shapes."""

import pytest
import torch
import torchvision

import vit16
from vit16 import MODELS, Registry, UnknownNameError
from vit16.models import (
    VisionTransformer, WeightLoadError, from_timm, from_torchvision, load_weights,
    resize_pos_embed, to_timm, to_torchvision,
)

timm = pytest.importorskip("timm")

EXPECTED_PARAMS = {
    "vit_small_cifar": (10, 10_695_562),
    "vit_tiny": (10, 2_697_610),
    "vit_quick": (10, 558_474),
    "vit_small": (10, 21_342_346),
    "vit_base": (10, 85_152_010),
    "vit_s16": (1000, 22_050_664),
    "vit_small_imagenet": (1000, 22_050_664),
    "vit_b16": (1000, 86_567_656),
    "vit_base_imagenet": (1000, 86_567_656),
    "vit_l16": (1000, 304_326_632),
    "vit_large_imagenet": (1000, 304_326_632),
    "vit_r50_b16": (1000, 98_659_112),  # timm's vit_base_r50_s16_224 with a 1000-class head
    "vit_r50_b16_384": (1000, 98_950_952),  # timm's vit_base_r50_s16_384
    "resnet50": (1000, 25_557_032),
    "resnet50_cifar": (10, 23_520_842),
    "resnet20_cifar": (10, 272_474),  # He et al.'s 269,722 (option A) + 2,752 of option B shortcuts
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomize(model, seed=1):
    """Fill every parameter with random values: default inits zero the heads,
    which would hide a wrong mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts_exact(name):
    classes, expected = EXPECTED_PARAMS[name]
    assert n_params(MODELS.build(name, num_classes=classes)) == expected


def test_every_registered_model_is_counted():
    assert set(MODELS.names()) == set(EXPECTED_PARAMS)


def test_unknown_model_message_names_close_matches_and_all_known():
    with pytest.raises(KeyError) as err:
        MODELS.build("vit_b_16")
    msg = str(err.value)
    assert isinstance(err.value, UnknownNameError)
    assert "\n" not in msg
    assert "unknown model 'vit_b_16'" in msg
    assert "did you mean vit_b16" in msg
    for name in MODELS.names():
        assert name in msg


def test_registry_duplicate_name_or_alias_raises():
    reg = Registry("thing")
    reg.register("a", aliases=("alias_a",))(lambda: 1)
    with pytest.raises(ValueError, match="'a' is already registered"):
        reg.register("a")(lambda: 2)
    with pytest.raises(ValueError, match="'alias_a' is already registered"):
        reg.register("b", aliases=("alias_a",))(lambda: 2)
    assert reg.names() == ["a", "alias_a"] and "alias_a" in reg and "b" not in reg
    assert reg.build("alias_a") == 1 and reg.canonical("alias_a") == "a"


def test_builtin_registries_filled_on_import():
    assert "vit_b16" in vit16.MODELS and "vit_base_imagenet" in vit16.MODELS
    assert MODELS.canonical("vit_base_imagenet") == "vit_b16"


def test_unknown_model_option_lists_valid_ones():
    with pytest.raises(TypeError, match="no option 'dept'.*valid options: img_size"):
        MODELS.build("vit_tiny", dept=3)
    with pytest.raises(TypeError, match="no option 'depth'"):
        MODELS.build("resnet50_cifar", depth=3)


def test_torchvision_vit_b16_parity():
    torch.manual_seed(0)
    tv = randomize(torchvision.models.vit_b_16())
    ours = MODELS.build("vit_b16").eval()
    ours.load_state_dict(from_torchvision(tv.state_dict()))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref, out = tv(x), ours(x)
    assert ref.abs().max() > 0.05  # the comparison is not between zeros
    assert (ref - out).abs().max().item() <= 1e-4
    assert to_torchvision(ours.state_dict()).keys() == tv.state_dict().keys()


def test_torchvision_pre_logits_parity():
    tv = randomize(torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5, representation_size=48))
    ours = VisionTransformer(img_size=32, patch_size=8, depth=2, num_heads=2, embed_dim=32,
                             mlp_dim=64, num_classes=5, representation_size=48).eval()
    ours.load_state_dict(from_torchvision(tv.state_dict()))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (tv(x) - ours(x)).abs().max().item() <= 1e-5


TIMM_SMALL_CIFAR = dict(img_size=32, patch_size=4, depth=6, num_classes=10)


@pytest.mark.parametrize("timm_kwargs, our_kwargs", [
    ({}, {}),
    ({"global_pool": "avg"}, {"pool": "gap"}),
    ({"global_pool": "avg", "class_token": False, "fc_norm": False},
     {"pool": "gap", "class_token": False, "fc_norm": False}),
])
def test_timm_small_cifar_parity(timm_kwargs, our_kwargs):
    ref_model = randomize(timm.create_model("vit_small_patch16_224", **TIMM_SMALL_CIFAR, **timm_kwargs))
    ours = MODELS.build("vit_small_cifar", **our_kwargs).eval()
    ours.load_state_dict(from_timm(ref_model.state_dict()))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref, out = ref_model(x), ours(x)
    assert ref.abs().max() > 0.05
    assert (ref - out).abs().max().item() <= 1e-4
    back = to_timm(ours.state_dict(), fc_norm=ours.fc_norm)
    assert back.keys() == ref_model.state_dict().keys()


def test_timm_variant_with_extra_parts_is_refused():
    ref_model = timm.create_model("vit_small_patch16_224", **TIMM_SMALL_CIFAR, init_values=1e-5)
    with pytest.raises(KeyError, match="ls1.gamma"):
        from_timm(ref_model.state_dict())


def test_explicit_attention_path_equals_sdpa_and_rows_sum_to_one():
    model = randomize(MODELS.build("vit_tiny", depth=2))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, maps = model.forward_attention(x)
        assert torch.allclose(tokens, model.forward_features(x), atol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (2, 3, 65, 65)
    assert torch.allclose(maps[1].sum(-1), torch.ones(2, 3, 65), atol=1e-5)


def test_resize_pos_embed_identity_on_equal_grid():
    pe = torch.randn(1, 1 + 14 * 14, 16)
    assert resize_pos_embed(pe, 14) is pe


def test_resize_pos_embed_keeps_class_token_and_constant_grid():
    pe = torch.cat([torch.randn(1, 1, 8), torch.full((1, 4 * 4, 8), 0.5)], dim=1)
    out = resize_pos_embed(pe, (6, 6))
    assert out.shape == (1, 1 + 36, 8)
    assert torch.equal(out[:, 0], pe[:, 0])
    assert torch.allclose(out[:, 1:], torch.full((1, 36, 8), 0.5), atol=1e-6)


def test_resize_pos_embed_rejects_non_square():
    with pytest.raises(ValueError, match="not a square grid"):
        resize_pos_embed(torch.randn(1, 1 + 15, 4), 4)


def test_224_weights_load_into_384_model_and_new_head():
    small = dict(patch_size=16, depth=1, embed_dim=32, num_heads=2, mlp_dim=64)
    src = randomize(VisionTransformer(img_size=224, num_classes=1000, representation_size=32, **small))
    dst = VisionTransformer(img_size=384, num_classes=10, **small)
    notes = load_weights(dst, src.state_dict())
    assert dst.pos_embed.shape == (1, 1 + 24 * 24, 32)
    assert any("resized from 14x14 to 24x24" in n for n in notes)
    assert any("head not loaded" in n for n in notes)
    assert torch.equal(dst.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    with torch.no_grad():
        assert dst(torch.randn(1, 3, 384, 384)).shape == (1, 10)


def test_load_weights_reports_missing_and_shape_mismatch():
    src = VisionTransformer(img_size=32, patch_size=4, depth=2, embed_dim=32, num_heads=2, num_classes=10)
    dst = VisionTransformer(img_size=32, patch_size=4, depth=3, embed_dim=32, num_heads=2, num_classes=10)
    with pytest.raises(WeightLoadError, match=r"missing keys: blocks\.2\."):
        load_weights(dst, src.state_dict())
    wide = VisionTransformer(img_size=32, patch_size=4, depth=2, embed_dim=64, num_heads=2, num_classes=10)
    with pytest.raises(WeightLoadError, match="shape mismatches"):
        load_weights(wide, src.state_dict())


@pytest.mark.parametrize("name", ["vit_small_cifar", "vit_tiny", "vit_quick", "vit_small", "vit_base",
                                  "resnet50_cifar", "resnet20_cifar"])
def test_forward_backward_cifar_sized(name):
    overrides = {} if name.startswith("resnet") else {"depth": 1}
    model = MODELS.build(name, num_classes=7, **overrides)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["vit_s16", "vit_b16", "vit_l16", "resnet50"])
def test_forward_imagenet_sized(name):
    overrides = {} if name.startswith("resnet") else {"depth": 1}
    model = MODELS.build(name, num_classes=3, **overrides).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 3)


def test_wrong_input_size_is_a_clear_error():
    model = MODELS.build("vit_tiny", depth=1)
    with pytest.raises(ValueError, match=r"expects \(32, 32\).*data.img_size"):
        model(torch.randn(1, 3, 64, 64))


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="pool must be 'cls' or 'gap'"):
        VisionTransformer(pool="max")
    with pytest.raises(ValueError, match="needs class_token=True"):
        VisionTransformer(class_token=False)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        VisionTransformer(img_size=30, patch_size=4)


def test_drop_path_and_dropout_active_only_in_training():
    model = MODELS.build("vit_tiny", depth=2, drop_path=0.5, dropout=0.1)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    b = model(x)
    assert not torch.equal(a, b)


def test_zero_head_and_reset_classifier():
    model = MODELS.build("vit_tiny", depth=1, zero_head=True, representation_size=16)
    assert model.head.weight.abs().sum() == 0 and model.head.in_features == 16
    model.reset_classifier(5)
    assert model.pre_logits is None and model.head.out_features == 5
    assert model.head.in_features == 192 and model.get_classifier() is model.head


def test_position_embedding_variants_are_not_weight_decayed():
    from vit16.config import OptimConfig
    from vit16.optim import param_groups

    for variant, names in [("learned_2d", {"pos_embed_x", "pos_embed_y"}), ("relative", {"rel_pos"})]:
        model = MODELS.build("vit_tiny", depth=2, pos_embed=variant)
        decayed = {n.rsplit(".", 1)[-1] for g in param_groups(model, OptimConfig()) if g["weight_decay"] > 0
                   for n in g["param_names"]}
        assert not names & decayed


def test_default_weights_into_other_pos_embed_variant_is_a_load_error():
    src = MODELS.build("vit_tiny", depth=1)
    dst = MODELS.build("vit_tiny", depth=1, pos_embed="learned_2d")
    with pytest.raises(WeightLoadError, match="unexpected keys: pos_embed"):
        load_weights(dst, src.state_dict())


@pytest.mark.parametrize("overrides", [{}, {"drop_path": 0.3, "dropout": 0.1, "hybrid_layers": ()}])
def test_grad_checkpointing_gives_the_plain_models_gradients(overrides):
    """Same weights, same input, same seed: the recomputed blocks give the same
    gradients (non-reentrant checkpointing restores the RNG, so even dropout
    and stochastic depth repeat)."""
    kw = dict(depth=3, **overrides)
    plain = randomize(MODELS.build("vit_tiny", **kw)).train()
    ckpt = MODELS.build("vit_tiny", grad_checkpointing=True, **kw).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    for model in (plain, ckpt):
        torch.manual_seed(0)
        model(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert a.grad.abs().max() > 0, name
        assert (a.grad - b.grad).abs().max().item() <= 1e-6, name


def test_grad_checkpointing_only_in_training_with_gradients(monkeypatch):
    import vit16.models.vit as vit

    calls = []
    real = vit.checkpoint
    monkeypatch.setattr(vit, "checkpoint", lambda fn, *a, **kw: calls.append(kw) or real(fn, *a, **kw))
    model = MODELS.build("vit_tiny", depth=2, grad_checkpointing=True)
    x = torch.randn(1, 3, 32, 32)
    model.train()
    model(x).sum().backward()
    assert calls == [{"use_reentrant": False}] * 2
    with torch.no_grad():
        model(x)
    model.eval()
    model(x)
    assert len(calls) == 2


def test_resnet20_cifar_is_he_et_al_layout_of_torchvision_blocks():
    from torchvision.models.resnet import BasicBlock

    model = MODELS.build("resnet20_cifar").eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.out_channels == 16
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(s) for s in stages] == [3, 3, 3]
    assert all(isinstance(b, BasicBlock) for s in stages for b in s)
    assert [s[0].conv1.stride for s in stages] == [(1, 1), (2, 2), (2, 2)]
    # option B shortcuts exactly where the channels and the map size change
    assert [b.downsample is not None for s in stages for b in s] == [False] * 3 + [True, False, False] * 2
    assert model.layer2[0].downsample[0].kernel_size == (1, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.layer1(model.relu(model.bn1(model.conv1(x))))
        assert maps.shape == (2, 16, 32, 32)
        maps = model.layer2(maps)
        assert maps.shape == (2, 32, 16, 16)
        assert model.layer3(maps).shape == (2, 64, 8, 8)
        assert model.forward_features(x).shape == (2, 64)
    assert model.fc.in_features == 64 and model.fc.out_features == 10


def test_resnet_cifar_depth_and_width_options():
    # n = 5 blocks per stage: He et al.'s ResNet-32 (0.46M with option A)
    resnet32 = MODELS.build("resnet20_cifar", depth=32)
    assert [len(resnet32.layer1), len(resnet32.layer3)] == [5, 5]
    assert n_params(resnet32) == 466_906
    wide = MODELS.build("resnet20_cifar", width=32, num_classes=100)
    assert wide.layer3[0].conv1.out_channels == 128 and wide.fc.out_features == 100
    with pytest.raises(ValueError, match=r"depth = 21 is not 6n \+ 2 \(n >= 1\); use 8, 14, 20"):
        MODELS.build("resnet20_cifar", depth=21)
    with pytest.raises(ValueError, match="width = 0 must be a positive integer"):
        MODELS.build("resnet20_cifar", width=0)
    with pytest.raises(TypeError, match="no option 'embed_dim'; valid options: num_classes, depth, width"):
        MODELS.build("resnet20_cifar", embed_dim=3)


def test_resnet20_forward_backward_and_train_mode_batch_norm():
    model = MODELS.build("resnet20_cifar", num_classes=7)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 7)
    out.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.bn1.num_batches_tracked.item() == 1


def test_forward_flops_are_counted_multiply_adds_times_two():
    from vit16.models.flops import forward_flops, model_gflops, native_img_size

    # ResNet-20 by hand (multiply-adds): stem, stage 1, stages 2 and 3 (first conv,
    # 5 more, 1x1 projection), head
    stage = lambda c, hw: (c * 9 * c // 2 + 5 * c * 9 * c + c * c // 2) * hw * hw  # noqa: E731
    macs = 16 * 27 * 32**2 + 6 * 16 * 144 * 32**2 + stage(32, 16) + stage(64, 8) + 64 * 10
    assert forward_flops(MODELS.build("resnet20_cifar")) == 2 * macs == 81_626_368
    # vit_quick by hand: 16 patches of 8x8x3 and the class token, 4 blocks (qkv, QK^T,
    # AV, proj, MLP), head
    n, d, mlp = 17, 128, 256
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * mlp
    assert model_gflops("vit_quick") == 2 * (16 * 192 * d + 4 * block + d * 10) / 1e9 == 0.019206656
    assert native_img_size(MODELS.build("vit_quick")) == 32
    assert native_img_size(MODELS.build("resnet20_cifar")) == 32


def test_forward_flops_size_and_mode():
    from vit16.models.flops import forward_flops, model_gflops

    toy = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    assert forward_flops(toy, img_size=4) == 2 * 48 * 5 and toy.training
    with pytest.raises(ValueError, match="Sequential takes any input size and names none; pass img_size"):
        forward_flops(toy)
    # a torchvision ResNet-50 at 224px: 4.09 G multiply-adds (torchvision's table)
    assert round(model_gflops("resnet50", img_size=224) / 2, 2) == 4.09
