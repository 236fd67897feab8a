"""``python -m vit16 export`` and vit16.export: exported logits within 1e-4 of
PyTorch's for a ViT (TorchScript, torch.export, ONNX when the extra is
installed), a pruned checkpoint exported as the smaller ViT, ResNet-50; a
dynamic batch size (exported with 2, run with 3 and 1); one line for a model
a format cannot hold and for a missing extra."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from vit16 import MODELS
from vit16.checkpoint import save_checkpoint
from vit16.commands.export import main
from vit16.config import load_tables, resolve
from vit16.export import ExportError, export_to_file, load_exported_file, max_logit_difference

SUFFIX = {"onnx": "onnx", "torchscript": "ts", "exported": "pt2"}
SMALL = dict(img_size=32, patch_size=8, num_classes=4, embed_dim=16, depth=2, num_heads=4, mlp_dim=8)


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


NEEDS_EXTRA = pytest.mark.skipif(not all(_importable(m) for m in ("onnx", "onnxscript", "onnxruntime")),
                                 reason='the export extra is not installed (pip install -e ".[export]")')


def formats(*onnx_marks):
    """Every format; onnx only with the export extra (onnx, onnxscript, onnxruntime)."""
    return ["torchscript", "exported", pytest.param("onnx", marks=[NEEDS_EXTRA, *onnx_marks])]


def small_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = MODELS.build("vit_tiny", **SMALL)
    with torch.no_grad():  # non-zero everywhere: nothing hides behind zero-initialised heads
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


@pytest.mark.parametrize("fmt", formats())
def test_a_vit_exports_with_a_dynamic_batch(fmt, tmp_path):
    model = small_vit()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    path = export_to_file(model, fmt, tmp_path / f"vit.{SUFFIX[fmt]}", x[:2])  # traced with a batch of 2
    run = load_exported_file(fmt, path)
    assert run(x).shape == (3, 4) and run(x[:1]).shape == (1, 4)  # run with 3 and with 1
    assert max_logit_difference(run, model, x) <= 1e-4
    assert max_logit_difference(run, model, x[:1]) <= 1e-4
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path))
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
        assert proto.graph.input[0].name == "images" and proto.graph.output[0].name == "logits"
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


@pytest.mark.parametrize("fmt", formats(pytest.mark.slow))  # ONNX of ResNet-50: ~15 s on a busy CPU
def test_resnet50_exports_with_equal_logits(fmt, tmp_path):
    torch.manual_seed(0)
    model = MODELS.build("resnet50_cifar", num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    path = export_to_file(model, fmt, tmp_path / f"r50.{SUFFIX[fmt]}", x[:2])
    diff = max_logit_difference(load_exported_file(fmt, path), model, x)
    assert diff <= 1e-4


def pruned_checkpoint(path):
    """A vit16 pruning checkpoint of the SMALL ViT: half the heads and MLP neurons of each block masked."""
    from vit16.prune.masks import apply_masks, ones_masks

    model = small_vit()
    masks = ones_masks(model)
    for i in range(2):
        masks[f"blocks.{i}.attn.qkv"].view(3, 4, 4, 16)[:, :2] = 0
        masks[f"blocks.{i}.attn.proj"][:, :8] = 0
        masks[f"blocks.{i}.mlp.fc1"][:4] = 0
        masks[f"blocks.{i}.mlp.fc2"][:, :4] = 0
    apply_masks(model, masks)
    cfg = resolve("imp_quick", load_tables("experiments.toml"),
                  [f"model.{k}={v}" for k, v in SMALL.items() if k != "num_classes"])
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": 4})
    return model


@pytest.mark.parametrize("fmt", formats())
def test_a_pruned_checkpoint_exports_the_smaller_vit(fmt, tmp_path, cifar10_root, capsys):
    masked = pruned_checkpoint(tmp_path / "pruned.pt")
    out = tmp_path / f"small.{SUFFIX[fmt]}"
    code = main([str(tmp_path / "pruned.pt"), "--format", fmt, "--out", str(out), "--check-batch", "3",
                 "--data-root", str(cifar10_root)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    dense = sum(p.numel() for p in masked.parameters())
    assert "pruned checkpoint: exporting the physically smaller ViT" in stdout
    assert "heads per block 2 2, MLP neurons per block 4 4" in stdout
    small = int(stdout.split(f"{dense:,} -> ")[1].split(" ")[0].replace(",", ""))
    assert small < dense
    assert "on 3 cifar10 test images" in stdout and ": ok" in stdout
    if fmt == "onnx":
        assert "ONNX opset 18" in stdout
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert max_logit_difference(load_exported_file(fmt, out), masked, x) <= 1e-4
    if fmt == "exported":  # the file holds the smaller model's weights
        program = torch.export.load(str(out))
        assert sum(t.numel() for t in program.state_dict.values()) == small


def test_a_run_checkpoint_through_the_command(tmp_path, cifar10_root, capsys):
    model = small_vit()
    cfg = resolve("quick", load_tables("experiments.toml"),
                  [f"model.{k}={v}" for k, v in SMALL.items() if k != "num_classes"])
    save_checkpoint(tmp_path / "run" / "best.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                                   "num_classes": 4})
    out = tmp_path / "vit.ts"
    assert main([str(tmp_path / "run"), "--format", "torchscript", "--out", str(out), "--check-batch", "5",
                 "--data-root", str(cifar10_root)]) == 0
    stdout = capsys.readouterr().out
    assert "(B, 3, 32, 32)" in stdout and "B dynamic" in stdout and "on 5 cifar10 test images" in stdout
    assert "pruned" not in stdout
    x = torch.randn(7, 3, 32, 32)
    assert max_logit_difference(load_exported_file("torchscript", out), model, x) <= 1e-4
    # no data set under the data root: checked on random inputs, said on stderr
    assert main([str(tmp_path / "run"), "--format", "torchscript", "--out", str(out),
                 "--data-root", str(tmp_path / "nodata")]) == 0
    stdout, err = capsys.readouterr()
    assert "on 8 random inputs" in stdout and err.startswith("note: cifar10 is not under the data root")


class DataDependent(nn.Module):
    """Branches on the values of its input: torch.export and ONNX cannot trace that."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        if pooled.sum() > 0:
            return self.head(pooled)
        return -self.head(pooled)


@pytest.mark.parametrize("fmt", formats()[1:])
def test_an_impossible_export_is_one_error_line(fmt, tmp_path, monkeypatch, capsys):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ExportError, match=rf"^{fmt} export failed \(.+\); try --format \w+$"):
        export_to_file(DataDependent(), fmt, tmp_path / f"m.{SUFFIX[fmt]}", x)
    assert not (tmp_path / f"m.{SUFFIX[fmt]}").exists()

    from vit16.analysis import loading
    from vit16.config import DataConfig

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loading.LoadedModel(
        DataDependent(), DataConfig(img_size=8), "branchy", "test"))
    code = main(["branchy", "--format", fmt, "--out", str(tmp_path / f"m.{SUFFIX[fmt]}"),
                 "--data-root", str(tmp_path / "nodata")])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {fmt} export failed"), err
    assert "try --format" in err[0]


def test_a_missing_extra_and_bad_names_are_one_line(tmp_path, monkeypatch, capsys):
    save_checkpoint(tmp_path / "w.pt", {"model": small_vit().state_dict()})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    cases = [(["--format", "onnx", "--out", str(tmp_path / "m.onnx")], 'pip install -e ".[export]"'),
             (["--format", "exported", "--out", str(tmp_path / "m.pt")], "name the file m.pt2"),
             (["--format", "torchscript", "--out", str(tmp_path / "m.ts")], "--model"),
             (["--format", "torchscript", "--out", str(tmp_path / "m.ts"), "--check-batch", "0"], "--check-batch")]
    for args, needle in cases:
        assert main([str(tmp_path / "w.pt"), *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    with pytest.raises(ExportError, match="export extra|pip install"):
        export_to_file(small_vit(), "onnx", tmp_path / "m.onnx", torch.randn(2, 3, 32, 32))
