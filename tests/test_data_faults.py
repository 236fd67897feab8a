"""Faults in the data a user points vit16 at (issue 13, items 3, 4 and 6):
corrupt images name their file, the decode cache never serves data that
differs from the folder, and array inputs (cifar100.npz, CIFAR pickles) are
checked at load, each problem one line naming the file, the array and the fix.

Errors are asserted as ``ValueError`` (what the CLI reports as one line);
the data is written by the tests themselves (tests/fakedata.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from vit16.config import ExperimentConfig
from vit16.data import cache, decode
from vit16.data.sources import Split
from vit16.data.transforms import SplitDataset
from vit16.registry import DATASETS

from fakedata import (C10_NAMES, damaged_image_bytes, rewrite_pickle, write_cifar10_pickles, write_cifar100_npz,
                      write_cifar100_npz_with, write_cifar100_pickles, write_image_folder)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def data_cfg(name: str = "cifar10", **data):
    cfg = ExperimentConfig(name="exp", batch_size=4)
    cfg.data.name = name
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg.data


def build(name: str, root: Path, **data):
    return DATASETS.build(name, cfg=data_cfg(name, **data), root=root)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def cache_entries(tmp_path: Path, pattern: str = "*.npz") -> list[Path]:
    return sorted((tmp_path / "cache").glob(pattern))


@pytest.fixture
def c10_jpegs(tmp_path) -> Path:
    """A data root with cifar10/{train,test}: 10 classes x 3 train / 1 test JPEGs."""
    root = tmp_path / "data"
    write_image_folder(root / "cifar10", C10_NAMES, {"train": 3, "test": 1}, ext="jpg")
    return root


# ---------------------------------------------------------------- item 3: corrupt images


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_image_in_folder_names_the_file(c10_jpegs, tmp_path, kind):
    bad = c10_jpegs / "cifar10" / "train" / "dog" / "0001.jpg"
    bad.write_bytes(damaged_image_bytes(kind))
    with pytest.raises(ValueError) as err:
        build("cifar10", c10_jpegs)
    msg = one_line_error(err)
    assert msg.startswith(f"{bad} ") and "replace or delete the file" in msg
    assert {"random": "cannot be decoded", "truncated": "cannot be decoded", "empty": "is empty (0 bytes)"}[kind] in msg
    assert cache_entries(tmp_path) == []  # nothing cached from a failed decode


def test_cli_reports_a_corrupt_image_as_one_error_line(c10_jpegs, tmp_path):
    bad = c10_jpegs / "cifar10" / "test" / "ship" / "0000.jpg"
    bad.write_bytes(damaged_image_bytes("random"))
    cmd = [sys.executable, str(ROOT / "train.py"), "quick", "--data-root", str(c10_jpegs), "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [line for line in proc.stderr.splitlines() if "Warning" not in line and not line.startswith("  ")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad} cannot be decoded (not an image format"), lines


def test_bulk_decode_tries_every_file_then_reports_count_and_first_three(c10_jpegs):
    files, _, _, _ = decode.list_image_folder(c10_jpegs / "cifar10" / "train")
    bad = [files[i] for i in (2, 7, 11, 19, 23)]
    for kind, path in zip(["random", "truncated", "empty", "random", "truncated"], bad):
        Path(path).write_bytes(damaged_image_bytes(kind))
    for workers in (1, 2):
        with pytest.raises(ValueError) as err:
            decode.decode_images(files, workers=workers)
        msg = one_line_error(err)
        assert msg.startswith(f"5 of {len(files)} images cannot be used: {bad[0]} cannot be decoded")
        assert all(p in msg for p in bad[:3]) and bad[3] not in msg and bad[4] not in msg
        assert msg.endswith("and 2 more; replace or delete these files")


def test_bulk_decode_names_unreadable_and_wrongly_sized_files(c10_jpegs, tmp_path):
    files, _, _, _ = decode.list_image_folder(c10_jpegs / "cifar10" / "test")
    gone = tmp_path / "gone.jpg"
    small = tmp_path / "small.png"
    from PIL import Image
    Image.fromarray(np.zeros((16, 8, 3), np.uint8)).save(small)
    with pytest.raises(ValueError) as err:
        decode.decode_images([*files, str(gone), str(small)], workers=1)
    msg = one_line_error(err)
    assert f"{gone} cannot be read (No such file or directory)" in msg
    assert f"{small} is 8x16, expected 32x32" in msg and msg.startswith("2 of 12 images")


@pytest.mark.skipif(not decode.HAVE_TV_DECODE, reason="libjpeg-turbo messages come from torchvision's decoder")
def test_jpeg_that_decodes_with_libjpeg_messages_names_its_file(c10_jpegs, tmp_path, capfd):
    noisy = c10_jpegs / "cifar10" / "train" / "cat" / "0002.jpg"
    noisy.write_bytes(damaged_image_bytes("noisy"))
    files, _, _, _ = decode.list_image_folder(c10_jpegs / "cifar10" / "train")
    for workers in (1, 2):
        with pytest.warns(UserWarning, match="Corrupt JPEG data") as record:
            x = decode.decode_images(files, workers=workers)
        named = [str(w.message) for w in record if "Corrupt JPEG" in str(w.message)]
        assert len(named) == 1 and named[0].startswith(f"{noisy}: the image decoder reported"), named
        assert x.shape == (30, 32, 32, 3)
    with pytest.warns(UserWarning, match="Corrupt JPEG data") as record:
        img = decode.load_image(str(noisy))
    assert img.shape == (3, 32, 32) and any(str(w.message).startswith(str(noisy)) for w in record)
    assert "Corrupt JPEG" not in capfd.readouterr().err  # libjpeg's own, nameless line is not printed
    with warnings.catch_warnings():  # an intact image: no warning, and stderr works again afterwards
        warnings.simplefilter("error", UserWarning)
        decode.load_image(files[0])
        decode.decode_images(files[:5])
    os.write(2, b"still-stderr\n")
    assert "still-stderr" in capfd.readouterr().err


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "missing"])
def test_lazy_file_list_names_the_file(tmp_path, kind):
    write_image_folder(tmp_path / "f", ["a", "b"], {"train": 2}, ext="jpg")
    files, labels, _, _ = decode.list_image_folder(tmp_path / "f" / "train")
    bad = Path(files[3])
    if kind == "missing":
        bad.unlink()
    else:
        bad.write_bytes(damaged_image_bytes(kind))
    ds = SplitDataset(Split(labels, files=files), v2.Compose([v2.Resize(16, antialias=True)]))
    assert ds[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError) as err:
        ds[3]
    msg = one_line_error(err)
    assert msg.startswith(f"{bad} ") and ("cannot be read" if kind == "missing" else "delete it") in msg


def test_lazy_file_list_in_a_dataloader_worker_is_one_line(tmp_path):
    write_image_folder(tmp_path / "f", ["a", "b"], {"train": 2}, ext="jpg")
    files, labels, _, _ = decode.list_image_folder(tmp_path / "f" / "train")
    Path(files[1]).write_bytes(damaged_image_bytes("random"))
    ds = SplitDataset(Split(labels, files=files), v2.Compose([v2.Identity()]))
    loader = DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(ValueError) as err:
        list(loader)
    msg = one_line_error(err)
    assert msg.startswith(f"{files[1]} cannot be decoded") and msg.endswith("(in DataLoader worker process 0)")


# ---------------------------------------------------------------- item 4: the decode cache


def test_extra_empty_class_folder_does_not_poison_the_cache(c10_jpegs, tmp_path):
    pristine = build("cifar10", c10_jpegs)
    shutil.rmtree(tmp_path / "cache")  # the user's first run is the one with the extra folder
    extras = [c10_jpegs / "cifar10" / split / "zebra" for split in ("train", "test")]
    for extra in extras:
        extra.mkdir()
    with pytest.raises(ValueError) as err:
        build("cifar10", c10_jpegs)
    msg = one_line_error(err)
    assert "cifar10 needs 10 classes, found 11" in msg
    assert cache_entries(tmp_path) == []  # written only after validation
    for extra in extras:
        extra.rmdir()
    again = build("cifar10", c10_jpegs)  # c7c09a3: "needs 10 classes, found 11" from the poisoned entry
    assert again.class_names == pristine.class_names == C10_NAMES
    assert np.array_equal(again.train.images, pristine.train.images)
    assert len(cache_entries(tmp_path, "cifar10-imagefolder-*.npz")) == 1
    assert "found 11 class folders, 2 of them empty (train/zebra, test/zebra); remove the folders" in msg


@pytest.mark.parametrize("where", ["train", "test"])
def test_extra_class_folder_with_images_or_an_empty_one_is_rejected_uncached(c10_jpegs, tmp_path, where):
    write_image_folder(c10_jpegs / "cifar10", ["zebra"], {where: 1}, ext="jpg")
    with pytest.raises(ValueError) as err:
        build("cifar10", c10_jpegs)
    msg = one_line_error(err)
    other = "test" if where == "train" else "train"
    assert {"train": "only in train/: zebra; only in test/: none",
            "test": "only in train/: none; only in test/: zebra"}[where] in msg
    (c10_jpegs / "cifar10" / other / "zebra").mkdir()
    with pytest.raises(ValueError) as err:
        build("cifar10", c10_jpegs)
    assert "needs 10 classes, found 11 class folders, 1 of them empty" in one_line_error(err)
    for split in ("train", "test"):
        shutil.rmtree(c10_jpegs / "cifar10" / split / "zebra")
    for image in (c10_jpegs / "cifar10" / where / "dog").iterdir():
        image.unlink()  # 10 class folders again, one of them empty
    with pytest.raises(ValueError) as err:
        build("cifar10", c10_jpegs)
    assert one_line_error(err).startswith(f"{c10_jpegs / 'cifar10' / where / 'dog'} holds no images")
    assert cache_entries(tmp_path) == []


def test_renamed_class_folder_is_never_served_from_the_cache(c10_jpegs):
    first = build("cifar10", c10_jpegs)
    for split in ("train", "test"):
        (c10_jpegs / "cifar10" / split / "cat").rename(c10_jpegs / "cifar10" / split / "kitten")
    renamed = build("cifar10", c10_jpegs)
    assert renamed.class_names == sorted([*set(C10_NAMES) - {"cat"}, "kitten"])
    assert renamed.class_names != first.class_names


def test_cache_entry_that_differs_from_the_folder_is_rebuilt(c10_jpegs, tmp_path):
    first = build("cifar10", c10_jpegs)
    (entry,) = cache_entries(tmp_path)
    with np.load(entry) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["names"] = np.asarray([f"wrong{i}" for i in range(10)])
    arrays["y_train"] = arrays["y_train"][::-1].copy()
    np.savez(entry, **arrays)
    with pytest.warns(UserWarning, match="does not hold valid data") as record:
        again = build("cifar10", c10_jpegs)
    assert str(entry) in str(record[0].message) and "delete" in str(record[0].message)
    assert again.class_names == first.class_names and np.array_equal(again.train.labels, first.train.labels)
    with np.load(entry) as z:  # replaced by the rebuilt entry
        assert list(z["names"]) == C10_NAMES


@pytest.mark.parametrize("damage", [b"not a zip at all", b""])
def test_unreadable_cache_entry_warns_naming_it_and_how_to_clear_it(c10_jpegs, tmp_path, damage):
    first = build("cifar10", c10_jpegs)
    (entry,) = cache_entries(tmp_path)
    entry.write_bytes(damage)
    with pytest.warns(UserWarning, match="is unreadable") as record:
        again = build("cifar10", c10_jpegs)
    message = str(record[0].message)
    assert str(entry) in message and f"delete {entry}" in message and str(tmp_path / "cache") in message
    assert np.array_equal(again.train.images, first.train.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        build("cifar10", c10_jpegs)  # the rebuilt entry reads cleanly


def test_cache_key_covers_the_decoder_and_the_format_version(c10_jpegs, tmp_path, monkeypatch):
    build("cifar10", c10_jpegs)
    monkeypatch.setattr(decode, "DECODER", "another decoder 9.9")
    build("cifar10", c10_jpegs)
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    build("cifar10", c10_jpegs)
    assert len(cache_entries(tmp_path, "cifar10-imagefolder-*.npz")) == 3


def test_cache_write_is_atomic(c10_jpegs, tmp_path, monkeypatch):
    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.warns(UserWarning, match="could not write the decode cache"):
        src = build("cifar10", c10_jpegs)
    assert src.class_names == C10_NAMES
    assert list((tmp_path / "cache").iterdir()) == []  # no entry, no temporary file left


# ---------------------------------------------------------------- item 6: array inputs


def _labels_plus(n):
    return lambda y: y + n


NPZ_CASES = {
    "missing x_test": (dict(x_test=None), "fine", "has no array 'x_test', needed for every label"),
    "missing y_train": (dict(y_train=None), "fine", "has no array 'y_train', needed for label = 'fine'"),
    "missing coarse, coarse label": (dict(y_train_coarse=None), "coarse",
                                     "has no array 'y_train_coarse', needed for label = 'coarse'"),
    "float images": (dict(x_train=lambda x: x.astype(np.float32) / 255), "fine",
                     "array 'x_train' is float32; expected uint8 pixel values 0-255"),
    "channels first": (dict(x_test=lambda x: x.transpose(0, 3, 1, 2)), "fine",
                       "array 'x_test' has shape (100, 3, 32, 32), channels first"),
    "grey images": (dict(x_train=lambda x: x[..., 0]), "fine", "array 'x_train' has shape (200, 32, 32); expected"),
    "label out of range": (dict(y_train=_labels_plus(1)), "fine",
                           "array 'y_train' holds labels 1..100; expected 0..99 (100 classes)"),
    "negative coarse label": (dict(y_test_coarse=_labels_plus(-1)), "coarse",
                              "array 'y_test_coarse' holds labels -1..18; expected 0..19 (20 classes)"),
    "length mismatch": (dict(y_test=lambda y: y[:-1]), "fine",
                        "array 'y_test' has 99 labels but 'x_test' has 100 images"),
    "float labels": (dict(y_train=lambda y: y.astype(np.float64)), "fine",
                     "array 'y_train' is float64 of shape (200,); expected integer class indices"),
    "short name list": (dict(fine_names=lambda n: n[:-1]), "fine", "'fine_names' holds 99 <U6 values; expected 100"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_cifar100_npz_is_one_line_naming_file_array_and_fix(tmp_path, case):
    changes, label, expected = NPZ_CASES[case]
    npz = tmp_path / "cifar100.npz"
    write_cifar100_npz_with(npz, **changes)
    with pytest.raises(ValueError) as err:
        build("cifar100", tmp_path, label=label)
    msg = one_line_error(err)
    assert msg.startswith(str(npz)) and expected in msg, msg
    if not case.startswith("missing"):  # a bad file is never cached (a partial one is, as it is)
        assert cache_entries(tmp_path) == []


def test_cifar100_npz_without_coarse_arrays_serves_fine_labels(tmp_path):
    npz = tmp_path / "cifar100.npz"
    write_cifar100_npz_with(npz, y_train_coarse=None, y_test_coarse=None, coarse_names=None)
    src = build("cifar100", tmp_path)
    assert len(src.class_names) == 100 and np.array_equal(src.test.labels, np.arange(100))
    with pytest.raises(ValueError) as err:  # coarse from the cached entry: the same one line
        build("cifar100", tmp_path, label="coarse")
    msg = one_line_error(err)
    assert msg.startswith(f"{npz} has no array 'y_train_coarse'") and "use label = 'fine'" in msg


def test_unreadable_cifar100_npz_names_the_file(tmp_path):
    npz = tmp_path / "cifar100.npz"
    npz.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ValueError) as err:
        build("cifar100", tmp_path)
    assert one_line_error(err).startswith(f"{npz} is not a readable .npz")


def test_good_cifar100_npz_still_loads_both_labels(tmp_path):
    write_cifar100_npz(tmp_path / "cifar100.npz")
    assert build("cifar100", tmp_path).train.labels.dtype == np.int64
    assert len(build("cifar100", tmp_path, label="coarse").class_names) == 20


PICKLE_CASES = {
    "truncated batch": ("data_batch_2", "truncate", "data_batch_2 is not a readable CIFAR python batch file"),
    "missing labels": ("data_batch_3", dict(labels=None), "data_batch_3 has no 'labels' entry"),
    "float data": ("test_batch", dict(data=lambda d: d.astype(np.float64)),
                   "test_batch: 'data' is float64 of shape (20, 3072); expected uint8 (N, 3072)"),
    "wrong data shape": ("data_batch_1", dict(data=lambda d: d.reshape(20, 3, 32, 32)),
                         "data_batch_1: 'data' is uint8 of shape (20, 3, 32, 32)"),
    "label out of range": ("data_batch_4", dict(labels=lambda y: [v + 1 for v in y]),
                           "data_batch_4: array 'labels' holds labels 1..10; expected 0..9 (10 classes)"),
    "length mismatch": ("data_batch_5", dict(labels=lambda y: y[:-2]),
                        "data_batch_5: array 'labels' has 18 labels but 'data' has 20 images"),
    "short name list": ("batches.meta", dict(label_names=lambda n: n[:9]),
                        "batches.meta: 'label_names' holds 9 <U10 values; expected 10 class names"),
    "missing batch": ("data_batch_3", "delete", "lacks data_batch_3 of the CIFAR python batches"),
}


@pytest.mark.parametrize("case", sorted(PICKLE_CASES))
def test_bad_cifar10_pickles_are_one_line_naming_file_and_key(tmp_path, case):
    name, change, expected = PICKLE_CASES[case]
    write_cifar10_pickles(tmp_path, per_batch=20, test=20)
    path = tmp_path / "cifar-10-batches-py" / name
    if change == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif change == "delete":
        path.unlink()
    else:
        rewrite_pickle(path, **change)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        build("cifar10", tmp_path)
    msg = one_line_error(err)
    assert expected in msg, msg
    assert cache_entries(tmp_path) == []


def test_good_cifar10_pickles_are_cached_and_served_equal(cifar10_root, tmp_path, monkeypatch):
    first = build("cifar10", cifar10_root)
    assert len(cache_entries(tmp_path, "cifar10-pickle-*.npz")) == 1
    monkeypatch.setattr(decode, "read_cifar_batches", lambda *a, **k: pytest.fail("read again"))
    second = build("cifar10", cifar10_root)
    assert np.array_equal(first.train.images, second.train.images)
    assert torch.equal(torch.from_numpy(first.test.labels), torch.from_numpy(second.test.labels))


def test_cifar100_pickles_need_coarse_labels_only_for_coarse(tmp_path):
    write_cifar100_pickles(tmp_path, coarse=False)
    src = build("cifar100", tmp_path)
    assert src.class_names[7] == "f7" and np.array_equal(src.test.labels, np.arange(100))
    with pytest.raises(ValueError) as err:
        build("cifar100", tmp_path, label="coarse")
    msg = one_line_error(err)
    assert msg.startswith(str(tmp_path / "cifar-100-python")) and "have no coarse_labels" in msg
    assert "label = 'coarse'" in msg


def test_cifar100_pickle_fine_label_out_of_range(tmp_path):
    write_cifar100_pickles(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    rewrite_pickle(train, fine_labels=lambda y: [100] + y[1:])
    with pytest.raises(ValueError) as err:
        build("cifar100", tmp_path)
    assert one_line_error(err).startswith(f"{train}: array 'fine_labels' holds labels 0..100; expected 0..99")
    assert cache_entries(tmp_path) == []


def test_every_registered_data_set_has_a_layout_entry():
    import vit16.data  # noqa: F401  (registers every data set)
    from vit16.data.presence import LAYOUTS
    from vit16.registry import DATASETS

    assert sorted(LAYOUTS) == sorted(DATASETS.canonical_names())
