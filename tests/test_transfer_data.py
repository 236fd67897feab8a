"""The transfer data sets (vit16.data.transfer_sources): a user's ImageFolder,
Oxford-IIIT Pets and Oxford Flowers-102 read from small copies the tests
write in each data set's own on-disk layout (torchvision's), their splits,
labels and class names, the one-line errors, the download wiring (torchvision
stubbed: no network) and linear few-shot evaluation on them."""

from __future__ import annotations

import json
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from fakedata import PETS_BREEDS, write_flowers102, write_image_folder, write_oxford_pets
from vit16.checkpoint import save_checkpoint
from vit16.config import ConfigError, DataConfig, ExperimentConfig, from_dict
from vit16.data import DataNotFoundError, build_data
from vit16.data.roots import BadDataError
from vit16.data.sources import IMAGENET_STATS
from vit16.registry import DATASETS

pytestmark = [pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")]


def source(name: str, root: Path, **data):
    return DATASETS.build(name, cfg=DataConfig(name=name, **data), root=root, experiment="exp")


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def loaders(name: str, root: Path, val_size: int, img_size: int = 24, batch_size: int = 4):
    cfg = ExperimentConfig(name="exp", batch_size=batch_size)
    cfg.data = DataConfig(name=name, img_size=img_size, val_size=val_size, num_workers=0)
    data = build_data(cfg, torch.device("cpu"), data_root=str(root))
    data.train.set_epoch(0)
    return data


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_reads_train_and_val_as_file_lists(tmp_path):
    classes = ["zebra", "ant", "moth"]
    write_image_folder(tmp_path, classes, {"train": 4, "val": 2}, ext="jpg", size=(40, 52))
    src = source("imagefolder", tmp_path)
    assert src.class_names == ["ant", "moth", "zebra"]  # sorted folder names
    assert not src.decoded and src.image_size is None
    assert (src.mean, src.std) == IMAGENET_STATS and src.autoaugment_policy == "imagenet"
    assert len(src.train) == 12 and len(src.test) == 6
    for split, folder in ((src.train, "train"), (src.test, "val")):
        for path, label in zip(split.files, split.labels):
            assert Path(path).parent == tmp_path / folder / src.class_names[label]
    assert "val/" in src.description


def test_imagefolder_loaders_hold_out_a_balanced_val_split_at_any_image_size(tmp_path):
    write_image_folder(tmp_path, ["a", "b", "c"], {"train": 5, "test": 2}, ext="jpg", size=(40, 52))
    data = loaders("imagefolder", tmp_path, val_size=3)
    assert data.num_classes == 3 and data.class_names == ["a", "b", "c"]
    val = [y for _, ys in data.val for y in ys.tolist()]
    assert sorted(val) == [0, 1, 2]  # one image per class
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 24, 24) and y.shape == (4,)
    assert sum(len(ys) for _, ys in data.test) == 6


def test_imagefolder_prefers_test_over_val(tmp_path):
    write_image_folder(tmp_path, ["a", "b"], {"train": 2, "val": 1, "test": 3})
    src = source("imagefolder", tmp_path)
    assert len(src.test) == 6 and all("/test/" in f for f in src.test.files)
    assert "val/ not read" in src.description


def test_imagefolder_class_folders_must_match(tmp_path):
    write_image_folder(tmp_path, ["a", "b", "c"], {"train": 1})
    write_image_folder(tmp_path, ["a", "b", "d"], {"val": 1})
    with pytest.raises(BadDataError) as err:
        source("imagefolder", tmp_path)
    assert "only in train/: c; only in val/: d" in one_line(err)


def test_imagefolder_empty_class_folder_is_named(tmp_path):
    write_image_folder(tmp_path, ["a", "b"], {"train": 1, "test": 1})
    for f in (tmp_path / "train" / "b").iterdir():
        f.unlink()
    with pytest.raises(BadDataError) as err:
        source("imagefolder", tmp_path)
    assert str(tmp_path / "train" / "b") in one_line(err) and "holds no images" in str(err.value)


def test_imagefolder_not_found_names_the_paths_and_data_root(tmp_path):
    write_image_folder(tmp_path, ["a"], {"train": 1})  # no val/ or test/
    with pytest.raises(DataNotFoundError) as err:
        source("imagefolder", tmp_path)
    text = one_line(err)
    assert str((tmp_path / "test").absolute()) in text and str((tmp_path / "val").absolute()) in text
    assert "data.root" in text


# ---------------------------------------------------------------- Oxford-IIIT Pets


def test_pets_official_splits_labels_and_class_names(tmp_path):
    written = write_oxford_pets(tmp_path, trainval=2, test=1)
    src = source("oxford_pets", tmp_path)
    assert len(src.class_names) == 37 and src.class_names[0] == "Abyssinian"
    assert src.class_names[1] == "American Bulldog" and src.class_names[-1] == "Yorkshire Terrier"
    # the same names as torchvision's public OxfordIIITPet.classes, read from the same files
    assert src.class_names == torchvision.datasets.OxfordIIITPet(str(tmp_path), split="trainval").classes
    images = tmp_path / "oxford-iiit-pet" / "images"
    for split, key in ((src.train, "trainval"), (src.test, "test")):
        assert split.files == [str(images / f"{i}.jpg") for i, _ in written[key]]
        assert split.labels.tolist() == [label for _, label in written[key]]
        assert len(split) == len(torchvision.datasets.OxfordIIITPet(str(tmp_path), split=key))
    assert np.bincount(src.train.labels).tolist() == [2] * 37 and np.bincount(src.test.labels).tolist() == [1] * 37
    assert PETS_BREEDS[5] == "Bengal" and src.class_names[5] == "Bengal"
    assert not src.decoded and src.autoaugment_policy == "imagenet"


def test_pets_loaders(tmp_path):
    write_oxford_pets(tmp_path, trainval=3, test=1)
    data = loaders("oxford_pets", tmp_path, val_size=37, batch_size=8)
    assert data.num_classes == 37
    assert sorted(y for _, ys in data.val for y in ys.tolist()) == list(range(37))
    assert next(iter(data.train))[0].shape == (8, 3, 24, 24)


def test_pets_not_found_names_where_it_looked_and_the_download_switch(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        source("oxford_pets", tmp_path)
    text = one_line(err)
    assert str((tmp_path / "oxford-iiit-pet" / "images").absolute()) in text
    assert "annotations/trainval.txt" in text and "--set data.download=true" in text


def test_pets_missing_image_and_bad_line_are_one_line_errors(tmp_path):
    written = write_oxford_pets(tmp_path, trainval=1, test=1)
    gone = tmp_path / "oxford-iiit-pet" / "images" / f"{written['test'][3][0]}.jpg"
    gone.unlink()
    with pytest.raises(BadDataError) as err:
        source("oxford_pets", tmp_path)
    assert str(gone) in one_line(err) and "annotations/test.txt" in str(err.value)
    ann = tmp_path / "oxford-iiit-pet" / "annotations" / "trainval.txt"
    ann.write_text(ann.read_text() + "Bengal_99 38 1 2\n")
    with pytest.raises(BadDataError) as err:
        source("oxford_pets", tmp_path)
    assert "trainval.txt, line 38" in one_line(err)


def test_pets_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    def fake_pets(root, split="trainval", download=False, **kw):
        calls.append((root, split, download))
        write_oxford_pets(Path(root), trainval=1, test=1)

    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", fake_pets)
    src = source("oxford_pets", tmp_path, download=True)
    assert calls == [(str(tmp_path), "trainval", True)] and len(src.train) == 37
    source("oxford_pets", tmp_path, download=True)  # present: not downloaded again
    assert len(calls) == 1


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", offline)
    with pytest.raises(DataNotFoundError) as err:
        source("oxford_pets", tmp_path, download=True)
    assert "downloading it with torchvision" in one_line(err) and "no network" in str(err.value)


# ---------------------------------------------------------------- Oxford Flowers-102


def test_flowers_train_plus_val_and_test(tmp_path):
    pytest.importorskip("scipy")
    written = write_flowers102(tmp_path, train=1, val=2, test=1)
    src = source("flowers102", tmp_path)
    assert src.class_names == list(torchvision.datasets.Flowers102.classes) and len(src.class_names) == 102
    assert src.class_names[0] == "pink primrose"
    jpg = tmp_path / "flowers-102" / "jpg"
    train = sorted(written["train"] + written["val"])  # train + val, by image id
    assert src.train.files == [str(jpg / f"image_{i:05d}.jpg") for i, _ in train]
    assert src.train.labels.tolist() == [label for _, label in train]
    assert src.test.files == [str(jpg / f"image_{i:05d}.jpg") for i, _ in written["test"]]
    assert src.test.labels.tolist() == [label for _, label in written["test"]]
    assert np.bincount(src.train.labels).tolist() == [3] * 102 and len(src.test) == 102
    data = loaders("flowers102", tmp_path, val_size=102, batch_size=8)
    assert data.num_classes == 102 and next(iter(data.train))[0].shape == (8, 3, 24, 24)


def test_flowers_not_found_and_bad_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    with pytest.raises(DataNotFoundError) as err:
        source("flowers102", tmp_path)
    assert "imagelabels.mat" in one_line(err) and "--set data.download=true" in str(err.value)
    write_flowers102(tmp_path)
    labels = tmp_path / "flowers-102" / "imagelabels.mat"
    scipy_io.savemat(labels, {"labels": np.full((1, 306), 103, dtype=np.uint8)})
    with pytest.raises(BadDataError) as err:
        source("flowers102", tmp_path)
    assert "labels must be 1..102, found 103..103" in one_line(err)
    labels.write_bytes(b"not a mat file")
    with pytest.raises(BadDataError) as err:
        source("flowers102", tmp_path)
    assert str(labels) in one_line(err) and "download it again" in str(err.value)


def test_flowers_without_scipy_says_how_to_get_it(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    write_flowers102(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # "import scipy.io" now raises ImportError
    with pytest.raises(ConfigError) as err:
        source("flowers102", tmp_path)
    assert "pip install scipy" in one_line(err)


def test_flowers_download_goes_through_torchvision(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    calls = []

    def fake_flowers(root, split="train", download=False, **kw):
        calls.append((root, split, download))
        write_flowers102(Path(root))

    monkeypatch.setattr(torchvision.datasets, "Flowers102", fake_flowers)
    monkeypatch.setattr(fake_flowers, "classes", [f"f{i}" for i in range(102)], raising=False)
    src = source("flowers102", tmp_path, download=True)
    assert calls == [(str(tmp_path), "test", True)] and len(src.train) == 204
    assert src.class_names[3] == "f3"


# ---------------------------------------------------------------- few-shot on them


def test_fewshot_command_on_pets(tmp_path, capsys):
    from vit16.commands.fewshot import main
    from vit16.runtime import build_model

    write_oxford_pets(tmp_path / "data", trainval=3, test=1)
    cfg = from_dict({"name": "tiny", "model": {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 16,
                                               "num_heads": 2, "mlp_dim": 32},
                     "data": {"name": "cifar10", "val_size": 10}})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "best.pt", {"model": build_model(cfg, 10).state_dict(),
                                                   "config": cfg.to_dict()})
    out = tmp_path / "fs"
    argv = [str(tmp_path / "run"), "--dataset", "oxford_pets", "--shots", "1,2", "--seeds", "2", "--holdout", "1",
            "--data-root", str(tmp_path / "data"), "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "fewshot.json").read_text())
    assert report["num_classes"] == 37 and report["test_images"] == 37
    assert report["data"].startswith("Oxford-IIIT Pets")
    assert [r["shots"] for r in report["results"]] == [1, 2]
    assert all(0 <= s["test_top1"] <= 100 for r in report["results"] for s in r["seeds"])
    # an absent data set: exit 2 and one error line naming the download switch
    assert main(argv[:2] + ["flowers102", "--data-root", str(tmp_path / "none"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "--set data.download=true" in err


# ---------------------------------------------------------------- the experiment tables


@pytest.mark.parametrize("name, trainval, writer", [("vitb16_finetune_pets", 3680, write_oxford_pets),
                                                    ("vitb16_finetune_flowers", 2040, write_flowers102)])
def test_finetune_tables_follow_the_paper_and_load_their_data(tmp_path, name, trainval, writer):
    from vit16.config import load_tables, resolve
    from vit16.experiment import DEFAULT_EXPERIMENTS

    if writer is write_flowers102:
        pytest.importorskip("scipy")
    cfg = resolve(name, load_tables(DEFAULT_EXPERIMENTS))
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.clip_grad_norm) == ("sgd", 0.9, 0, 1)
    assert cfg.batch_size == 512 and cfg.max_steps == 500 and cfg.schedule.name == "warmup_cosine"
    assert cfg.model.img_size == cfg.data.img_size == 384 and cfg.optim.lr in (0.001, 0.003, 0.01, 0.03)
    # on the real data set: 10 % held out, the cosine spans >= 500 steps, 100 warmup steps
    assert cfg.data.val_size == trainval // 10
    per_epoch = (trainval - cfg.data.val_size) // cfg.batch_size
    assert 500 <= cfg.epochs * per_epoch < 500 + per_epoch
    assert round(cfg.schedule.warmup_epochs * per_epoch) == 100
    # its loaders on a small written copy, at the table's resolution
    writer(tmp_path)
    small = resolve(name, load_tables(DEFAULT_EXPERIMENTS),
                    ["batch_size=4", "micro_batch_size=2", "data.num_workers=0", "data.val_size=0"])
    data = build_data(small, torch.device("cpu"), data_root=str(tmp_path))
    data.train.set_epoch(0)
    assert data.num_classes == {"oxford_pets": 37, "flowers102": 102}[cfg.data.name]
    assert next(iter(data.train))[0].shape == (2, 3, 384, 384)


def test_hybrid_quick_matches_quick_in_tokens_and_stays_within_2x_its_flops():
    from vit16.config import load_tables, resolve
    from vit16.experiment import DEFAULT_EXPERIMENTS
    from vit16.models.flops import forward_flops
    from vit16.runtime import build_model

    tables = load_tables(DEFAULT_EXPERIMENTS)
    hybrid, quick = (build_model(resolve(n, tables), 10) for n in ("hybrid_quick", "quick"))
    assert resolve("hybrid_quick", tables).data == resolve("quick", tables).data
    assert hybrid.patch_embed.num_patches == quick.patch_embed.num_patches == 16
    assert hasattr(hybrid.patch_embed, "backbone") and not hasattr(quick.patch_embed, "backbone")
    ratio = forward_flops(hybrid, 32) / forward_flops(quick, 32)
    assert 1.5 < ratio < 2.0
    assert sum(p.numel() for p in hybrid.parameters()) == 749_514  # the table's comment
    assert hybrid(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
