"""``python -m vit16 predict`` and vit16.analysis.prediction: a folder of images
of different sizes and formats with a broken file, the evaluation transform,
class names with and without the data on disk, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fakedata import C10_NAMES, write_cifar10_pickles
from PIL import Image
from torchvision.transforms import v2

from vit16.analysis.prediction import dataset_traits, find_images, predict_transform
from vit16.checkpoint import save_checkpoint
from vit16.commands.predict import main
from vit16.config import DataConfig, from_dict
from vit16.data.augment import normalize
from vit16.data.sources import CIFAR10_STATS


@pytest.fixture
def run(tmp_path):
    from vit16.runtime import build_model

    cfg = from_dict({"name": "tiny", "model": {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 16,
                                               "num_heads": 2, "mlp_dim": 32}, "data": {"val_size": 10}})
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    with torch.no_grad():  # a head that is not zero: distinct probabilities
        model.head.weight.normal_(0, 1)
    save_checkpoint(tmp_path / "run" / "best.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                                   "num_classes": 10})
    return tmp_path / "run", model.eval()


def rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(rgb(32, 32, 0)).save(d / "a_cifar.png")
    Image.fromarray(rgb(300, 200, 1)).save(d / "sub" / "b_tall.JPG", quality=95)
    Image.fromarray(rgb(20, 90, 2)[..., 0]).save(d / "c_gray_wide.bmp")  # grayscale
    Image.fromarray(np.dstack([rgb(64, 64, 3), np.full((64, 64), 128, np.uint8)])).save(d / "d_rgba.webp")
    (d / "e_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / "notes.txt").write_text("not an image, not picked from a folder")
    return d


def predict_cli(args, capsys):
    code = main([*map(str, args), "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_folder_of_images_of_any_size_and_a_broken_file(run, images, tmp_path, capsys):
    path, model = run
    code, out, err = predict_cli([path, images, "--topk", "3", "--json", tmp_path / "p.json"], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skipped: ") and "e_broken.jpg" in lines[0], err
    report = json.loads((tmp_path / "p.json").read_text())
    files = [r["file"] for r in report["predictions"]]
    assert [f.rsplit("/", 1)[1] for f in files] == ["a_cifar.png", "c_gray_wide.bmp", "d_rgba.webp", "b_tall.JPG"]
    assert report["failed"] == [lines[0].removeprefix("skipped: ")]
    for r in report["predictions"]:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["class"] == C10_NAMES[t["index"]] for t in r["top"])
        assert r["file"].rsplit("/", 1)[1] in out  # the table
    # a 32x32 image is used whole, as the trainer evaluates CIFAR: probabilities of model(normalize(x))
    x = torch.from_numpy(rgb(32, 32, 0)).permute(2, 0, 1)[None]
    want = model(normalize(x, *CIFAR10_STATS)).softmax(dim=1)[0]
    first = report["predictions"][0]["top"]
    assert [t["index"] for t in first] == want.argsort(descending=True)[:3].tolist()
    assert [t["prob"] for t in first] == pytest.approx(want.sort(descending=True).values[:3].tolist(), abs=1e-6)
    assert f"{first[0]['class']} {100 * first[0]['prob']:.1f}%" in out


def test_the_transform_resizes_the_shorter_side_and_centre_crops():
    img = torch.from_numpy(rgb(300, 200, 1)).permute(2, 0, 1)
    cifar = predict_transform(32, decoded=True)(img)  # shorter side 200 -> 32, then the centre 32x32
    resized = v2.functional.resize(img, [48, 32], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    assert cifar.shape == (3, 32, 32) and torch.equal(cifar, resized[:, 8:40, :])
    files = predict_transform(224, decoded=False)(img)  # ImageNet: shorter side 256, centre 224
    resized = v2.functional.resize(img, [384, 256], antialias=True)
    assert files.shape == (3, 224, 224) and torch.equal(files, resized[:, 80:304, 16:240])
    assert torch.equal(predict_transform(32, decoded=True)(img[:, :32, :32]), img[:, :32, :32])


def test_a_non_image_file_named_on_the_command_line_is_one_line(run, images, capsys):
    path, _ = run
    code, out, err = predict_cli([path, images / "notes.txt", images / "a_cifar.png", images / "missing.png"], capsys)
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "missing.png: no such file or folder" in lines[0] and "notes.txt" in lines[1]
    assert "a_cifar.png" in out
    code, out, err = predict_cli([path, images / "e_broken.jpg", images / "notes.txt"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "e_broken.jpg" in lines[0] and "notes.txt" in lines[1]
    assert lines[2].startswith("error: no image could be predicted")


def test_bad_arguments_are_one_error_line(run, images, tmp_path, capsys):
    path, _ = run
    for args, needle in (([tmp_path / "nothing", images], "nothing"),
                         ([path, images, "--topk", "0"], "--topk"),
                         ([path, images, "--dataset", "imagenet"], "outputs 10 classes but the data set has 1000")):
        code, _, err = predict_cli(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and lines[-1].startswith("error: ") and needle in lines[-1], err


def test_find_images_walks_folders_case_insensitively(images, tmp_path):
    (tmp_path / "empty").mkdir()
    files, problems = find_images([images, images / "a_cifar.png", tmp_path / "empty", tmp_path / "gone"])
    assert [f.name for f in files] == ["a_cifar.png", "c_gray_wide.bmp", "d_rgba.webp", "e_broken.jpg",
                                       "b_tall.JPG"]  # sorted by path, each once, notes.txt left out
    assert problems == [f"{tmp_path / 'empty'}: a folder without image files (.jpg, .jpeg, .png, .bmp, .webp)",
                        f"{tmp_path / 'gone'}: no such file or folder"]


def test_class_names_from_the_data_or_built_in(tmp_path):
    write_cifar10_pickles(tmp_path / "data", per_batch=2, test=2)
    on_disk = dataset_traits(DataConfig(name="cifar10"), str(tmp_path / "data"))
    builtin = dataset_traits(DataConfig(name="cifar10"), str(tmp_path / "none"))
    assert on_disk.class_names == builtin.class_names == C10_NAMES and on_disk.decoded and builtin.decoded
    assert (builtin.mean, builtin.std) == CIFAR10_STATS and builtin.note == ""
    c100 = dataset_traits(DataConfig(name="cifar100"), str(tmp_path / "none"), num_classes=100)
    assert c100.class_names[:2] == ["class 0", "class 1"] and "--data-root" in c100.note
    imagenet = dataset_traits(DataConfig(name="imagenet"), str(tmp_path / "none"))
    assert len(imagenet.class_names) == 1000 and imagenet.class_names[0] == "tench" and not imagenet.decoded
