"""The section 4.5 analyses (vit16.analysis) on constructed cases with known
answers, the position-embedding variants of the model (appendix D.4), and
``python -m vit16 inspect`` end to end on a tiny checkpoint and fake CIFAR-10."""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest
import torch
from fakedata import C10_NAMES, write_image_folder

from vit16.analysis import (
    attention_distance_over_images,
    attention_rollout,
    mean_attention_distance,
    patch_distances,
    patch_embedding_pca,
    position_embedding_similarity,
    rollout_maps,
)
from vit16.checkpoint import save_checkpoint
from vit16.config import from_dict
from vit16.commands.inspect import main
from vit16.models import VisionTransformer
from vit16.models.layers import relative_position_index

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

HAS_MPL = True
try:
    import matplotlib  # noqa: F401
except ImportError:
    HAS_MPL = False


def brute_mean_distance(g: int, p: float) -> float:
    """Mean over all ordered pairs of patches of a g x g grid of the centre distance, pixels."""
    cells = [(r, c) for r in range(g) for c in range(g)]
    return sum(p * math.hypot(a[0] - b[0], a[1] - b[1]) for a in cells for b in cells) / len(cells) ** 2


def tiny_vit(**kw) -> VisionTransformer:
    args = dict(img_size=16, patch_size=8, depth=2, embed_dim=16, num_heads=2, mlp_dim=32, num_classes=3)
    return VisionTransformer(**{**args, **kw}).eval()


# ----------------------------------------------------------------------------- attention distance


def test_patch_distances_closed_form():
    d = patch_distances(2, 16)  # patches (0,0) (0,1) (1,0) (1,1)
    s = 16 * math.sqrt(2)
    expected = torch.tensor([[0, 16, 16, s], [16, 0, s, 16], [16, s, 0, 16], [s, 16, 16, 0]], dtype=torch.float64)
    assert torch.allclose(d, expected)


def test_identity_attention_has_zero_distance():
    attn = torch.eye(1 + 9).expand(2, 3, 10, 10)
    assert torch.equal(mean_attention_distance(attn, 3, 16), torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("g, p", [(2, 16), (3, 8), (4, 4)])
def test_uniform_attention_distance_closed_form(g, p):
    t = 1 + g * g
    attn = torch.full((2, 4, t, t), 1.0 / t)  # the class token's share is dropped and renormalised
    d = mean_attention_distance(attn, g, p)
    assert d.shape == (2, 4)
    assert torch.allclose(d, torch.full((2, 4), brute_mean_distance(g, p), dtype=torch.float64))
    if g == 2:
        assert d[0, 0].item() == pytest.approx(p * (0.5 + math.sqrt(2) / 4))


def test_class_token_weight_is_excluded_and_rows_renormalised():
    # every query: 0.5 on the class token, 0.5 on the patch to its right (or left in the last
    # column): after dropping the class token, all weight sits one patch (P pixels) away
    g, p = 3, 10
    attn = torch.zeros(1, 1, 1 + g * g, 1 + g * g)
    attn[..., :, 0] = 0.5
    for r in range(g):
        for c in range(g):
            cc = c + 1 if c + 1 < g else c - 1
            attn[0, 0, 1 + r * g + c, 1 + r * g + cc] = 0.5
    assert mean_attention_distance(attn, g, p).item() == pytest.approx(p)


def test_attention_to_one_patch_without_class_token():
    attn = torch.zeros(1, 1, 4, 4)
    attn[..., 0] = 1.0  # every patch of a 2x2 grid reads patch (0, 0)
    expected = 5 * (0 + 1 + 1 + math.sqrt(2)) / 4
    assert mean_attention_distance(attn, 2, 5, num_prefix_tokens=0).item() == pytest.approx(expected)


def test_attention_distance_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="does not fit 1 prefix token"):
        mean_attention_distance(torch.rand(1, 2, 10, 10), 2, 8)


def test_model_with_uniform_attention_gives_the_closed_form_at_every_layer_and_head():
    model = tiny_vit(img_size=32, patch_size=8)  # 4x4 grid
    with torch.no_grad():
        for block in model.blocks:  # q = k = 0: every attention row is uniform
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
    batches = [torch.randn(3, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    dist, n = attention_distance_over_images(model, batches)
    assert n == 5 and dist.shape == (2, 2)
    assert torch.allclose(dist, torch.full((2, 2), brute_mean_distance(4, 8), dtype=torch.float64))


# ----------------------------------------------------------------------------- rollout


def test_rollout_of_identity_attention_is_identity():
    maps = [torch.eye(5).expand(2, 3, 5, 5)] * 4
    r = attention_rollout(maps)
    assert torch.allclose(r, torch.eye(5, dtype=torch.float64).expand(2, 5, 5))
    assert torch.equal(rollout_maps(r, 2), torch.zeros(2, 2, 2, dtype=torch.float64))


@pytest.mark.parametrize("layers", [1, 2, 5])
def test_rollout_of_uniform_attention_closed_form(layers):
    # A = (U + I) / 2 with U uniform (U^2 = U): A^L = 2^-L I + (1 - 2^-L) U
    t = 10
    r = attention_rollout([torch.full((1, 2, t, t), 1.0 / t)] * layers)
    a = 2.0**-layers
    expected = a * torch.eye(t, dtype=torch.float64) + (1 - a) / t
    assert torch.allclose(r[0], expected)
    cls_map = rollout_maps(r, 3)
    assert cls_map.shape == (1, 3, 3) and torch.allclose(cls_map, torch.full((1, 3, 3), (1 - a) / t, dtype=torch.float64))


def test_rollout_one_layer_averages_heads_adds_identity_and_renormalises():
    torch.manual_seed(0)
    attn = torch.rand(2, 3, 5, 5).softmax(-1)
    r = attention_rollout([attn])
    assert torch.allclose(r, ((attn.mean(1) + torch.eye(5)) / 2).double(), atol=1e-7)
    r2 = attention_rollout([attn, attn])
    assert torch.allclose(r2, r @ r) and torch.allclose(r2.sum(-1), torch.ones(2, 5, dtype=torch.float64))


def test_rollout_map_without_class_token_is_mean_patch_row():
    r = torch.rand(1, 4, 4, dtype=torch.float64)
    assert torch.allclose(rollout_maps(r, 2, num_prefix_tokens=0)[0].flatten(), r[0].mean(0))


# ----------------------------------------------------------------------------- embeddings


def row_col_embedding(g: int, d: int) -> torch.Tensor:
    """Patch (r, c) -> e_r + e_{g + c}: cosine similarity 0.5 [r = r'] + 0.5 [c = c']."""
    pe = torch.zeros(g * g, d)
    for r in range(g):
        for c in range(g):
            pe[r * g + c, r] = 1.0
            pe[r * g + c, g + c] = 1.0
    return pe


def expected_row_col(g: int) -> torch.Tensor:
    r = torch.arange(g)
    same_r = (r[:, None, None, None] == r[None, None, :, None]).double()
    same_c = (r[None, :, None, None] == r[None, None, None, :]).double()
    return 0.5 * same_r + 0.5 * same_c


def test_position_embedding_similarity_known_structure():
    sim = position_embedding_similarity(3.0 * row_col_embedding(3, 8), 3)  # scale does not matter
    assert sim.shape == (3, 3, 3, 3)
    assert torch.allclose(sim, expected_row_col(3))
    ortho = position_embedding_similarity(torch.eye(4), 2)
    assert torch.allclose(ortho.reshape(4, 4), torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="not \\(N, D\\) with N = 9"):
        position_embedding_similarity(torch.eye(4), 3)


def test_learned_2d_embedding_is_concat_of_x_and_y_in_row_major_order():
    model = tiny_vit(img_size=24, pos_embed="learned_2d")  # 3x3 grid, D/2 = 8
    with torch.no_grad():
        model.pos_embed_x.zero_()
        model.pos_embed_y.zero_()
        for i in range(3):
            model.pos_embed_x[0, i, i] = 1.0  # X[c] = e_c in the first half
            model.pos_embed_y[0, i, i] = 1.0  # Y[r] = e_r in the second half
    pe = model.patch_pos_embed()
    assert pe.shape == (9, 16)
    assert torch.equal(pe[1 * 3 + 2, :8], torch.eye(8)[2]) and torch.equal(pe[1 * 3 + 2, 8:], torch.eye(8)[1])
    assert torch.allclose(position_embedding_similarity(pe, 3), expected_row_col(3))


def test_patch_embedding_pca_recovers_constructed_components():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3 * 4 * 4, 2, dtype=torch.float64))
    u1, u2 = q[:, 0], q[:, 1]
    a = 3.0 * torch.tensor([1, -1, 1, -1, 1, -1, 1, -1], dtype=torch.float64)  # variance 9
    b = torch.tensor([1, 1, -1, -1, 1, 1, -1, -1], dtype=torch.float64)  # variance 1, a . b = 0
    mean_filter = torch.randn(48, dtype=torch.float64)
    weight = (mean_filter + a[:, None] * u1 + b[:, None] * u2).reshape(8, 3, 4, 4).float()
    comps, explained = patch_embedding_pca(weight, k=28)
    assert comps.shape == (8, 3, 4, 4) and explained.shape == (8,)  # k capped at the 8 filters
    assert torch.allclose(explained[:2], torch.tensor([0.9, 0.1], dtype=torch.float64), atol=1e-5)
    assert explained[2:].abs().max() < 1e-6
    flat = comps.reshape(8, -1)
    assert abs(float(flat[0] @ u1)) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(flat[1] @ u2)) == pytest.approx(1.0, abs=1e-5)
    for c in flat[:2]:  # sign convention: the entry of largest magnitude is positive
        assert c[c.abs().argmax()] > 0


# ----------------------------------------------------------------------------- model variants


def test_pos_embed_variants_parameters():
    names = {pe: {n for n, _ in tiny_vit(pos_embed=pe).named_parameters() if "pos" in n}
             for pe in ("learned_1d", "none", "learned_2d", "relative")}
    assert names["learned_1d"] == {"pos_embed"}
    assert names["none"] == set()
    assert names["learned_2d"] == {"pos_embed_x", "pos_embed_y"}
    assert names["relative"] == {"blocks.0.attn.rel_pos", "blocks.1.attn.rel_pos"}
    assert tiny_vit(pos_embed="relative").blocks[0].attn.rel_pos.shape == (2 * 4, 8)
    default = tiny_vit()
    assert default.pos_embed_type == "learned_1d" and default.pos_embed.shape == (1, 5, 16)
    assert "rel_index" not in tiny_vit(pos_embed="relative").state_dict().keys() - {"blocks.0.attn.rel_pos"}


def test_pos_embed_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="pos_embed must be one of 'learned_1d'"):
        tiny_vit(pos_embed="sinusoidal")
    with pytest.raises(ValueError, match="even embed_dim"):
        tiny_vit(pos_embed="learned_2d", embed_dim=15, num_heads=3)


def test_relative_position_index():
    idx = relative_position_index(3, 1)
    assert idx.shape == (4, 4)
    assert (idx[0] == 5).all() and (idx[:, 0] == 5).all()  # pairs with the class token: 2N - 1
    assert torch.equal(idx[1:, 1:], torch.tensor([[2, 1, 0], [3, 2, 1], [4, 3, 2]]))  # (i - j) + N - 1
    assert torch.equal(relative_position_index(2, 0), torch.tensor([[1, 0], [2, 1]]))


@pytest.mark.parametrize("pe", ["learned_1d", "none", "learned_2d", "relative"])
def test_every_variant_explicit_attention_equals_sdpa(pe):
    torch.manual_seed(0)
    model = tiny_vit(pos_embed=pe)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens, maps = model.forward_attention(x)
        assert torch.allclose(tokens, model.forward_features(x), atol=1e-5)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, 5), atol=1e-5)


def test_relative_logits_enter_the_attention():
    model = tiny_vit(pos_embed="relative")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = model.forward_attention(x)[1][0]
        model.blocks[0].attn.rel_pos.add_(torch.randn(8, 8))
        after = model.forward_attention(x)[1][0]
    assert not torch.allclose(before, after)
    # the fused path (the bias as SDPA's attn_mask) trains rel_pos like the explicit one
    model(x).sum().backward()
    fused = model.blocks[0].attn.rel_pos.grad.clone()
    model.zero_grad()
    tokens, _ = model.forward_attention(x)
    model.forward_head(tokens).sum().backward()
    assert fused.abs().max() > 0 and torch.allclose(fused, model.blocks[0].attn.rel_pos.grad, atol=1e-6)


def test_no_position_embedding_is_a_bag_of_patches():
    # swapping two patches of the image leaves the class token output unchanged without
    # position information, and changes it with the learned 1-D embedding
    x = torch.randn(1, 3, 16, 16)
    y = x.clone()
    y[..., :8, :8], y[..., 8:, 8:] = x[..., 8:, 8:], x[..., :8, :8]
    for pe, invariant in (("none", True), ("learned_1d", False)):
        torch.manual_seed(0)
        model = tiny_vit(pos_embed=pe)
        with torch.no_grad():
            same = torch.allclose(model(x), model(y), atol=1e-5)
        assert same is invariant


def test_pos_embed_is_a_config_key():
    cfg = from_dict({"model": {"name": "vit_tiny", "depth": 1, "pos_embed": "learned_2d"}})
    from vit16.runtime import build_model

    assert build_model(cfg, 10).pos_embed_type == "learned_2d"


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "cifar10", C10_NAMES, {"train": 3, "test": 2})
    return root


def write_checkpoint(path, uniform: bool = True, **model):
    """A vit16 checkpoint of a 2-block ViT on 32x32 (patch 8: a 4x4 grid, D=16); with
    ``uniform`` its attention is uniform (q = k = 0) and its position embedding has
    the row/column structure of :func:`row_col_embedding`."""
    from vit16.runtime import build_model

    cfg = from_dict({"name": "tiny", "model": {"name": "vit_tiny", "patch_size": 8, "depth": 2,
                                               "embed_dim": 16, "num_heads": 2, "mlp_dim": 32, **model},
                     "data": {"name": "cifar10", "val_size": 10}})
    torch.manual_seed(0)
    net = build_model(cfg, 10)
    if uniform:
        with torch.no_grad():
            for block in net.blocks:
                block.attn.qkv.weight.zero_()
                block.attn.qkv.bias.zero_()
            if net.pos_embed is not None:
                net.pos_embed[0, 1:] = row_col_embedding(4, 16)
    save_checkpoint(path, {"model": net.state_dict(), "config": cfg.to_dict(), "num_classes": 10})
    return path


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_inspect_command_numbers_without_plots(tmp_path, fake_cifar, capsys):
    ckpt = write_checkpoint(tmp_path / "run" / "best.pt")
    out = tmp_path / "out"
    argv = [str(tmp_path / "run"), "--out", str(out), "--data-root", str(fake_cifar), "--images", "0",
            "--rollout-images", "3", "--components", "5", "--device", "cpu", "--no-plots"]
    assert main(argv) == 0, capsys.readouterr().err
    assert ckpt.is_file() and not list(out.glob("*.png"))
    rows = read_csv(out / "attention_distance.csv")
    assert len(rows) == 2 * 2
    for row in rows:  # uniform attention on a 4x4 grid of 8-pixel patches
        assert float(row["mean_distance_px"]) == pytest.approx(brute_mean_distance(4, 8), rel=1e-5)
    sim = {(int(r["query_row"]), int(r["query_col"]), int(r["key_row"]), int(r["key_col"])): float(r["cosine"])
           for r in read_csv(out / "pos_embed_similarity.csv")}
    assert len(sim) == 4**4
    assert sim[(1, 2, 1, 2)] == pytest.approx(1) and sim[(1, 2, 1, 0)] == pytest.approx(0.5)
    assert sim[(1, 2, 3, 2)] == pytest.approx(0.5) and sim[(1, 2, 0, 0)] == pytest.approx(0)
    pca = json.loads((out / "patch_embed_pca.json").read_text())
    assert pca["shape"] == [5, 3, 8, 8] and len(pca["explained_variance_ratio"]) == 5
    rollout = json.loads((out / "attention_rollout.json").read_text())
    assert len(rollout["images"]) == 3 and len(rollout["images"][0]["map"]) == 4
    assert rollout["images"][0]["predicted_name"] in C10_NAMES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attention_distance"]["images"] == 20 and summary["pos_embed"] == "learned_1d"
    assert "layer  1" in capsys.readouterr().out


def test_inspect_skips_similarity_without_absolute_embedding(tmp_path, fake_cifar):
    write_checkpoint(tmp_path / "best.pt", uniform=False, pos_embed="relative")
    out = tmp_path / "out"
    assert main([str(tmp_path / "best.pt"), "--out", str(out), "--data-root", str(fake_cifar),
                 "--images", "10", "--device", "cpu", "--no-plots"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "relative" in summary["pos_embed_similarity"]["skipped"]
    assert not (out / "pos_embed_similarity.csv").exists()


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib (the plots extra) is not installed")
def test_inspect_command_writes_figures(tmp_path, fake_cifar):
    write_checkpoint(tmp_path / "best.pt", uniform=False)
    out = tmp_path / "out"
    assert main([str(tmp_path / "best.pt"), "--out", str(out), "--data-root", str(fake_cifar),
                 "--images", "10", "--rollout-images", "2", "--device", "cpu"]) == 0
    for stem in ("attention_distance", "pos_embed_similarity", "patch_embed_pca", "attention_rollout"):
        png = out / f"{stem}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_inspect_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and 'pip install -e ".[plots]"' in err


def test_state_dict_weights_need_model(tmp_path, fake_cifar, capsys):
    net = VisionTransformer(img_size=32, patch_size=8, depth=1, embed_dim=16, num_heads=2, mlp_dim=32, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    assert main([str(tmp_path / "weights.pth"), "--out", str(tmp_path / "o"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err
    assert main(["timm:vit_base_patch16_224", "--out", str(tmp_path / "o"), "--no-plots"]) == 2
    assert "--model" in capsys.readouterr().err
    # with a model that does not fit the weights: one line naming the mismatch
    assert main([str(tmp_path / "weights.pth"), "--model", "vit_tiny", "--out", str(tmp_path / "o"),
                 "--no-plots", "--data-root", str(fake_cifar)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "do not fit" in err


def test_missing_run_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without best.pt or last.pt" in err
