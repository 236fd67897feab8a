"""Pruning (vit16/prune): mask choice on constructed weights with known answers,
masks that stay zero through rewinding, training, checkpoints and resume,
export to a smaller model with equal logits, and whole pruning runs through
train.py on data the tests write (single process and 2 gloo ranks)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from fakedata import set_args

from vit16 import MODELS
from vit16.checkpoint import load_checkpoint
from vit16.commands.export_pruned import main as export_main
from vit16.commands.train import main
from vit16.config import ConfigError, load_tables, resolve
from vit16.prune import (
    apply_masks,
    fold_masks,
    imp_masks,
    masked_weights,
    next_masks,
    ones_masks,
    prunable_linears,
    refill_masks,
    rsst_lambda,
    sparsity,
)
from vit16.prune.export import export_model, export_state, load_exported
from vit16.prune.structures import head_sides, units_alive
from vit16.results import PRUNE_COLUMNS, read_rows

# A 2-block ViT of width 16 with 4 heads of 4 and MLP 8 on 32x32 images, patch 8.
SMALL = dict(img_size=32, patch_size=8, num_classes=4, embed_dim=16, depth=2, num_heads=4, mlp_dim=8)
# train.py overrides of the same size; batch 20 on 100 fake CIFAR-10 images = 4 steps/epoch.
TINY = ["model.depth=2", "model.embed_dim=16", "model.num_heads=4", "model.mlp_dim=8", "model.patch_size=8",
        "epochs=2", "batch_size=20", "data.val_size=20", "data.num_workers=0", "checkpoint_minutes=0",
        "schedule.warmup_epochs=1", "prune.rounds=3", "prune.rate=0.5"]


def small_vit(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MODELS.build("vit_tiny", **{**SMALL, **kw})
    with torch.no_grad():  # non-zero everywhere (default init zeroes biases), so nothing hides
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


# ----------------------------------------------------------------------------- choosing masks


def test_imp_removes_the_exact_share_of_smallest_unmasked_weights():
    w = {"a": torch.tensor([[0.1, -0.5], [2.0, 0.3]]), "b": torch.tensor([[-0.2, 1.0, 0.05, 3.0]])}
    m = {"a": torch.tensor([[1.0, 1.0], [1.0, 0.0]]), "b": torch.ones(1, 4)}  # 0.3 already masked
    # 7 unmasked -> remove round(3.5) = 4 (Python's rounding, as torch.nn.utils.prune's amount)
    out = imp_masks(w, m, rate=0.5, scope="global")
    assert out["a"].tolist() == [[0.0, 0.0], [1.0, 0.0]]  # 0.1, -0.5 gone; masked 0.3 stays masked
    assert out["b"].tolist() == [[0.0, 1.0, 0.0, 1.0]]  # -0.2 and 0.05 gone
    layer = imp_masks(w, m, rate=0.5, scope="layer")  # a: 3 -> remove 2; b: 4 -> remove 2
    assert layer["a"].tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert layer["b"].tolist() == [[0.0, 1.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="prune.rate"):
        imp_masks(w, m, rate=1.0)
    with pytest.raises(ValueError, match="global, layer"):
        imp_masks(w, m, rate=0.2, scope="row")


def test_refill_keeps_the_heads_and_neurons_with_most_surviving_magnitude():
    model = small_vit()
    layers = prunable_linears(model)
    weights = {n: torch.ones_like(m.weight) for n, m in layers.items()}
    qkv = weights["blocks.0.attn.qkv"].view(3, 4, 4, 16)
    qkv[:, 2] = 5.0  # head 2 has the most magnitude, then head 0
    qkv[:, 0] = 3.0
    weights["blocks.0.mlp.fc1"][5] = 4.0  # neuron 5 first
    masks = ones_masks(model)
    # an IMP mask keeping half of block 0's head weights and 1/4 of its neuron weights
    imp = {n: m.clone() for n, m in masks.items()}
    imp["blocks.0.attn.qkv"].view(3, 4, 4, 16)[..., :8] = 0
    imp["blocks.0.attn.proj"][:, :] = torch.tensor([1.0] * 8 + [0.0] * 8)  # heads 0, 1 keep proj
    imp["blocks.0.mlp.fc1"][:, 4:] = 0  # fc1 half kept, fc2 none: 1/4 of the neuron weights
    imp["blocks.0.mlp.fc2"][:, :] = 0
    out = refill_masks(weights, imp, masks, depth=2, head_dim=4)
    heads, neurons = units_alive({k.split(".", 2)[2]: v for k, v in out.items() if k.startswith("blocks.0.")}, 4)
    # head weight density 0.5 -> 2 of 4 heads: 2 (most magnitude) and 0; neurons 1/8 -> round(1) = 1: #5
    assert heads.tolist() == [True, False, True, False]
    assert neurons.nonzero().flatten().tolist() == [5]
    hin, hout = head_sides({k.split(".", 2)[2]: v for k, v in out.items() if k.startswith("blocks.0.")}, 4)
    assert bool((hin[heads] == 1).all() and (hout[heads] == 1).all() and (hin[~heads] == 0).all())
    assert all(bool((out[n] == 1).all()) for n in out if n.startswith("blocks.1."))  # untouched block


def test_structured_masks_never_revive_a_pruned_structure():
    model = small_vit()
    masks = ones_masks(model)
    weights = masked_weights(model)
    alive_before = None
    for _ in range(4):
        masks = next_masks("refill", weights, masks, 0.4, "global", depth=2, head_dim=4)
        block0 = {k.split(".", 2)[2]: v for k, v in masks.items() if k.startswith("blocks.0.")}
        heads, neurons = units_alive(block0, 4)
        alive = torch.cat([heads, neurons])
        if alive_before is not None:
            assert not bool((alive & ~alive_before).any())
        alive_before = alive
        weights = {n: w * masks[n] for n, w in weights.items()}
    assert sparsity({n: w * masks[n] for n, w in weights.items()}) > 50.0


def test_rsst_lambda_grows_from_zero_to_reg():
    n = 100
    values = [rsst_lambda(i, n, reg=2.0, exponent=4) for i in range(n)]
    assert values[-1] == pytest.approx(2.0)
    assert values[0] == pytest.approx(2.0 * (math.exp(1e-8) - 1) / (math.e - 1))
    assert all(b > a for a, b in zip(values, values[1:]))
    assert rsst_lambda(49, n, 1.0, 4) == pytest.approx((math.exp(0.5**4) - 1) / (math.e - 1))


# ----------------------------------------------------------------------------- masks in training


def test_masked_weights_stay_zero_through_rewinding_training_and_resume(tmp_path):
    """Rewind a trained model to its initial weights, mask half of them, train
    with AdamW and weight decay (which moves every weight_orig), checkpoint and
    resume: the masked entries of the effective weights are exactly 0 all along."""
    from test_trainer import make_bundle, make_cfg

    from vit16.trainer import train

    fake = dict(img_size=8, patch_size=4)  # test_trainer's fake bundle: 8x8 images, 4 classes
    init = small_vit(seed=1, **fake).state_dict()
    model = small_vit(seed=2, **fake)  # "trained" weights, then rewound:
    model.load_state_dict(init)
    masks = imp_masks(masked_weights(model), ones_masks(model), rate=0.5)
    apply_masks(model, masks)
    for name, w in masked_weights(model).items():
        assert bool((w[masks[name] == 0] == 0).all()) and bool((w[masks[name] == 1] != 0).all())
    cfg = make_cfg(epochs=3, max_steps=12)  # stop mid-epoch 2, resume below
    cfg.optim.weight_decay = 0.5
    orig_before = {n: m.weight_orig.detach().clone() for n, m in prunable_linears(model).items()}
    data = make_bundle()
    train(cfg, tmp_path / "run", model=model, data=data, device="cpu", results_file=None)
    for name, m in prunable_linears(model).items():
        assert not torch.equal(m.weight_orig[masks[name] == 0], orig_before[name][masks[name] == 0])
    assert sparsity(masked_weights(model)) == pytest.approx(50.0, abs=0.1)
    state, saved = fold_masks(load_checkpoint(tmp_path / "run" / "last.pt")["model"])
    for name, mask in masks.items():
        assert torch.equal(saved[name], mask)
        assert bool((state[f"{name}.weight"][mask == 0] == 0).all())
    # resume into a fresh masked model and train further: still zero
    cfg.max_steps = 0
    resumed = small_vit(seed=3, **fake)
    apply_masks(resumed, ones_masks(resumed))  # any masks: last.pt restores the saved ones
    summary = train(cfg, tmp_path / "run", model=resumed, data=data, device="cpu", results_file=None)
    assert summary["steps"] == 24
    for name, w in masked_weights(resumed).items():
        assert torch.equal(prunable_linears(resumed)[name].weight_mask, masks[name])
        assert bool((w[masks[name] == 0] == 0).all())


def test_apply_masks_refuses_bad_masks():
    model = small_vit()
    masks = ones_masks(model)
    bad = dict(masks, **{"blocks.0.attn.qkv": torch.ones(3, 3)})
    with pytest.raises(ValueError, match=r"mask for blocks.0.attn.qkv is \(3, 3\)"):
        apply_masks(model, bad)
    with pytest.raises(ValueError, match="miss"):
        apply_masks(model, {k: v for k, v in masks.items() if "fc2" not in k})
    apply_masks(model, masks)
    with pytest.raises(ValueError, match="already masked"):
        apply_masks(model, masks)
    with pytest.raises(TypeError, match="vit_\\*"):
        prunable_linears(MODELS.build("resnet50_cifar"))


# ----------------------------------------------------------------------------- export


def _ckpt(model: torch.nn.Module) -> dict:
    cfg = resolve("imp_quick", load_tables("experiments.toml"),
                  [f"model.{k}={v}" for k, v in SMALL.items() if k != "num_classes"])
    return {"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": 4}


def test_export_removes_dead_structures_with_equal_logits():
    model = small_vit()
    masks = ones_masks(model)
    qkv = masks["blocks.0.attn.qkv"].view(3, 4, 4, 16)
    qkv[:, 1] = 0  # head 1 of block 0: whole head masked (both sides)
    masks["blocks.0.attn.proj"][:, 1 * 4:2 * 4] = 0
    qkv[:, 3] = 0  # head 3: only its q, k, v rows -> outputs its value bias, folded into proj
    masks["blocks.1.attn.proj"][:, :] = 0  # block 1: every head's output side -> no attention
    masks["blocks.0.mlp.fc1"][[0, 2]] = 0  # neurons 0, 2: input side only -> GELU(bias) folded
    masks["blocks.1.mlp.fc2"][:, 7] = 0  # neuron 7 of block 1: output side only
    masks["blocks.1.attn.qkv"].view(3, 4, 4, 16)[0, 0, 0, 0] = 0  # an isolated zero changes nothing
    apply_masks(model, masks)
    small, arch = export_model(_ckpt(model))
    assert arch["kwargs"]["block_heads"] == [2, 0] and arch["kwargs"]["block_mlp_dims"] == [6, 7]
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), small(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    n_dense = sum(p.numel() for p in small_vit().parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert n_dense - n_small == (
        (2 + 4) * (3 * 4 * 16 + 3 * 4 + 16 * 4)  # 6 heads: q,k,v rows (+bias), proj columns
        + 3 * (16 + 1 + 16)  # 3 neurons: fc1 row + bias, fc2 column
    )


def test_export_of_a_dense_model_is_the_same_model():
    model = small_vit()
    small, arch = export_model(_ckpt(model))
    assert arch["kwargs"]["block_heads"] == [4, 4] and arch["kwargs"]["block_mlp_dims"] == [8, 8]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(small(x), model(x))
    state, heads, neurons = export_state(model.state_dict(), 2, 4)
    assert (heads, neurons) == ([4, 4], [8, 8])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_export_cli_writes_a_smaller_model_and_reports_speed(tmp_path, capsys, cifar10_root):
    from vit16.checkpoint import save_checkpoint

    model = small_vit()
    masks = ones_masks(model)
    for i in range(2):
        masks[f"blocks.{i}.attn.qkv"].view(3, 4, 4, 16)[:, :2] = 0
        masks[f"blocks.{i}.attn.proj"][:, :8] = 0
        masks[f"blocks.{i}.mlp.fc1"][:4] = 0
        masks[f"blocks.{i}.mlp.fc2"][:, :4] = 0
    apply_masks(model, masks)
    save_checkpoint(tmp_path / "pruned.pt", _ckpt(model))
    assert export_main([str(tmp_path / "pruned.pt"), "--out", str(tmp_path / "small.pt"),
                        "--batch-size", "8", "--steps", "2", "--data-root", str(cifar10_root)]) == 0
    out = capsys.readouterr().out
    assert "heads per block 2 2 | MLP neurons per block 4 4" in out
    test = re.search(r"test set \(20 images\): masked top-1 ([\d.]+)%, exported top-1 ([\d.]+)%", out)
    assert test and test.group(1) == test.group(2), out
    assert "images/s" in out and "max |logit difference|" in out
    small = load_exported(tmp_path / "small.pt")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=0, atol=1e-5)
    assert export_main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- whole runs


@pytest.mark.parametrize("method", ["imp", "refill", "rsst"])
def test_pruning_run_appends_one_row_per_round_and_resumes(method, tmp_path, cifar10_root):
    out, results = tmp_path / "run", tmp_path / "P.md"
    argv = [f"{method}_quick", "--data-root", str(cifar10_root), "--out", str(out), "--results",
            str(results), "--device", "cpu", *set_args(TINY)]
    assert main(argv) == 0
    rows = read_rows(results, PRUNE_COLUMNS)
    assert [r["round"] for r in rows] == ["0", "1", "2"]
    assert [r["method"] for r in rows] == [method] * 3
    rounds = [json.loads((out / f"round_{r:02d}" / "round.json").read_text()) for r in range(3)]
    # the row's sparsity is measured on the saved round checkpoint
    for r, info in enumerate(rounds):
        state, masks = fold_masks(load_checkpoint(out / f"round_{r:02d}" / "pruned.pt")["model"])
        weights = {k.removesuffix(".weight"): v for k, v in state.items()
                   if k.startswith("blocks.") and k.endswith(("qkv.weight", "proj.weight", "fc1.weight", "fc2.weight"))}
        assert info["sparsity"] == pytest.approx(sparsity(weights))
        assert rows[r]["sparsity"] == f"{info['sparsity']:.2f}"
    s = [info["sparsity"] for info in rounds]
    assert s[0] == 0.0 and 0 < s[1] < s[2]
    if method == "imp":
        assert s[1] == pytest.approx(50.0, abs=0.01) and s[2] == pytest.approx(75.0, abs=0.01)
    else:  # whole heads and neurons: every row of qkv/fc1 is all zero or all non-zero
        state, _ = fold_masks(load_checkpoint(out / "round_02" / "pruned.pt")["model"])
        for i in range(2):
            rows_nz = state[f"blocks.{i}.mlp.fc1.weight"].ne(0).sum(dim=1)
            assert set(rows_nz.tolist()) <= {0, 16}
        assert sum(rounds[2]["heads"]) < 8
    if method == "rsst":  # the penalty shrank the weights it was applied to
        assert rounds[1]["penalised_norm_end"] < rounds[1]["penalised_norm_start"]
    # the rewind point is the initial model: round 1 started from it under its masks
    rewind = load_checkpoint(out / "rewind.pt")
    assert rewind["epoch"] == 0
    # started again: every round is done, nothing is trained or appended
    assert main(argv) == 0
    assert len(read_rows(results, PRUNE_COLUMNS)) == 3


def test_an_interrupted_round_resumes_to_the_same_result(tmp_path, cifar10_root):
    """Delete round 2's result files (as if killed after training it, before its
    row): the rerun resumes from its last.pt and gives the same round."""
    out, results = tmp_path / "run", tmp_path / "P.md"
    argv = ["refill_quick", "--data-root", str(cifar10_root), "--out", str(out), "--results",
            str(results), "--device", "cpu", *set_args(TINY)]
    assert main(argv) == 0
    before = json.loads((out / "round_02" / "round.json").read_text())
    (out / "round_02" / "round.json").unlink()
    (out / "round_02" / "pruned.pt").unlink()
    assert main(argv) == 0
    after = json.loads((out / "round_02" / "round.json").read_text())
    for key in ("sparsity", "heads", "neurons", "val_top1", "test_top1", "params"):
        assert after[key] == before[key], key
    assert len(read_rows(results, PRUNE_COLUMNS)) == 4


def test_rewind_epoch_saves_the_weights_of_that_epoch(tmp_path, cifar10_root):
    """rewind_epoch = 1: rewind.pt holds round 0's weights at the end of epoch 1
    (4 steps), the same as round 0 of a run stopped there."""
    common = ["imp_quick", "--data-root", str(cifar10_root), "--results", str(tmp_path / "P.md"),
              "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "a"),
                 *set_args([*TINY, "prune.rounds=2", "prune.rewind_epoch=1"])]) == 0
    assert main([*common, "--out", str(tmp_path / "b"),
                 *set_args([*TINY, "prune.rounds=1", "max_steps=4"])]) == 0
    rewind = load_checkpoint(tmp_path / "a" / "rewind.pt")
    at_epoch_1 = load_checkpoint(tmp_path / "b" / "round_00" / "last.pt")
    init = load_checkpoint(tmp_path / "b" / "rewind.pt")
    assert (rewind["epoch"], at_epoch_1["step"], init["epoch"]) == (1, 4, 0)
    for key, value in rewind["model"].items():
        assert torch.equal(value, at_epoch_1["model"][key]), key
    assert not torch.equal(rewind["model"]["blocks.0.attn.qkv.weight"], init["model"]["blocks.0.attn.qkv.weight"])


@pytest.mark.slow
def test_two_gloo_ranks_prune_like_one_process(tmp_path, cifar10_root):
    """torchrun with 2 ranks: the masks go through DDP and the rounds agree
    with one process (SGD and no augmentation, as tests/test_distributed.py)."""
    from test_distributed import TINY as DDP_TINY
    from test_distributed import torchrun

    items = [*DDP_TINY, *TINY, "data.crop_padding=0", "data.hflip=false", "optim.name=sgd",
             "optim.lr=0.1", "batch_size=8", "prune.rounds=2"]
    common = ["refill_quick", "--device", "cpu", "--data-root", str(cifar10_root), *set_args(items)]
    assert main([*common, "--out", str(tmp_path / "one"), "--results", str(tmp_path / "one.md")]) == 0
    proc = torchrun(["train.py", *common, "--set", "micro_batch_size=2", "--out", str(tmp_path / "two"),
                     "--results", str(tmp_path / "two.md")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = read_rows(tmp_path / "one.md", PRUNE_COLUMNS)
    two = read_rows(tmp_path / "two.md", PRUNE_COLUMNS)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("round", "sparsity", "heads", "neurons", "params"):
            assert a[key] == b[key], key
        assert abs(float(a["test_top1"]) - float(b["test_top1"])) <= 5.0  # 20 images: 1 image = 5 %
    m1 = load_checkpoint(tmp_path / "one" / "round_01" / "pruned.pt")["model"]
    m2 = load_checkpoint(tmp_path / "two" / "round_01" / "pruned.pt")["model"]
    for k in m1:
        torch.testing.assert_close(m2[k], m1[k], rtol=1e-3, atol=1e-4, msg=k)


@pytest.mark.parametrize("item, message", [
    ("prune.method=obd", "[imp_quick.prune]: method = 'obd' must be one of '', 'imp', 'refill', 'rsst'"),
    ("prune.rate=1.5", "[imp_quick.prune]: rate = 1.5 must be in [0, 1)"),
    ("prune.scope=row", "[imp_quick.prune]: scope = 'row' must be one of 'global', 'layer'"),
    ("prune.rewind_epoch=9", "[imp_quick.prune]: rewind_epoch = 9 must be in [0, epochs = 2]"),
    ("model.name=resnet50_cifar", "[imp_quick.prune]: pruning works on ViT models"),
])
def test_bad_prune_tables_are_one_error_line(item, message, tmp_path, cifar10_root, capsys):
    argv = ["imp_quick", "--data-root", str(cifar10_root), "--out", str(tmp_path / "r"),
            "--device", "cpu", *set_args([*TINY, item])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "r").exists()


def test_every_pruning_table_resolves():
    tables = load_tables("experiments.toml")
    names = [n for n in tables if resolve(n, tables).prune.method]
    for required in ("imp_vit_tiny_cifar10", "refill_vit_tiny_cifar10", "rsst_vit_tiny_cifar10",
                     "rsst_vit_small_cifar100", "rsst_vit_base_cifar100", "rsst_vit_small_imagenet",
                     "rsst_vit_base_imagenet"):
        assert required in names
    rsst = resolve("rsst_vit_tiny_cifar10", tables)
    assert (rsst.prune.rounds, rsst.prune.rate, rsst.prune.reg, rsst.prune.reg_exponent, rsst.epochs) == (16, 0.2, 1.0, 4.0, 80)
    assert resolve("rsst_vit_base_imagenet", tables).init == "timm:vit_base_patch16_224"
    for method in ("imp", "refill", "rsst"):  # RSST's pretrained = true: ImageNet weights, patch 16 -> 4
        for size in ("small", "base"):
            for data in ("cifar10", "cifar100"):
                cfg = resolve(f"{method}_vit_{size}_{data}", tables)
                assert (cfg.init, cfg.init_patch_resize, cfg.model.name, cfg.data.name, cfg.prune.method) == (
                    f"timm:vit_{size}_patch16_224.augreg_in21k_ft_in1k", "pinv", f"vit_{size}", data, method)
        assert resolve(f"{method}_vit_small_cifar10", tables, ["init="]).init == ""  # pretrained = false
    with pytest.raises(ConfigError, match="unknown key 'rouds'"):
        resolve("imp_quick", tables, ["prune.rouds=3"])


def test_a_pruned_checkpoint_loads_as_init_with_its_zeros(tmp_path):
    """``init = runs/.../pruned.pt`` (and the analysis tools) read a masked
    checkpoint as plain weights with the pruned entries zero."""
    from vit16.checkpoint import save_checkpoint
    from vit16.runtime import load_init

    model = small_vit()
    masks = imp_masks(masked_weights(model), ones_masks(model), rate=0.6)
    apply_masks(model, masks)
    save_checkpoint(tmp_path / "pruned.pt", _ckpt(model))
    plain = small_vit(seed=5)
    load_init(plain, tmp_path / "pruned.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-6)
    assert sparsity(masked_weights(plain)) == pytest.approx(60.0, abs=0.01)


def test_every_round_starts_from_the_rewind_point_under_its_masks(tmp_path, cifar10_root, monkeypatch):
    """What each round's training starts from: round 0 the initial weights, later
    rounds rewind.pt's weights times that round's masks (not the trained ones)."""
    import vit16.prune.run

    real_train = vit16.prune.run.train
    starts = []

    def recording_train(cfg, out_dir, **kw):
        starts.append({k: v.detach().clone() for k, v in fold_masks(kw["model"].state_dict())[0].items()})
        return real_train(cfg, out_dir, **kw)

    monkeypatch.setattr(vit16.prune.run, "train", recording_train)
    out = tmp_path / "run"
    assert main(["imp_quick", "--data-root", str(cifar10_root), "--out", str(out), "--results",
                 str(tmp_path / "P.md"), "--device", "cpu", *set_args(TINY)]) == 0
    rewind = load_checkpoint(out / "rewind.pt")["model"]
    assert len(starts) == 3
    for key, value in rewind.items():
        assert torch.equal(starts[0][key], value), key
    for r in (1, 2):
        _, masks = fold_masks(load_checkpoint(out / f"round_{r:02d}" / "pruned.pt")["model"])
        trained = fold_masks(load_checkpoint(out / f"round_{r - 1:02d}" / "last.pt")["model"])[0]
        for key, value in rewind.items():
            layer = key.removesuffix(".weight")
            expected = value * masks[layer] if layer in masks else value
            assert torch.equal(starts[r][key], expected), (r, key)
        assert not torch.equal(starts[r]["blocks.0.mlp.fc1.weight"], trained["blocks.0.mlp.fc1.weight"])
