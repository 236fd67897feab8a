"""Tests of vit16.data: sources, cache, splits, loaders, augmentation (CPU, small data)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import vit16.data as D
from vit16.config import ConfigError, ExperimentConfig
from vit16.data import augment, crop, decode, sampling, splits
from vit16.registry import DATASETS

from fakedata import C10_NAMES, data_image, write_cifar100_npz, write_cifar10_pickles, write_image_folder

SHARED = Path(__file__).resolve().parents[1] / "../shared/data"
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


# ---------------------------------------------------------------- helpers


def data_cfg(name: str = "cifar10", batch_size: int = 8, seed: int = 0, **data) -> ExperimentConfig:
    cfg = ExperimentConfig(name="exp", seed=seed, batch_size=batch_size)
    cfg.data.name = name
    cfg.data.val_size = 20
    cfg.data.num_workers = 0
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


@pytest.fixture
def data_c10_folder(tmp_path) -> Path:
    """A data root with cifar10/{train,test}: 10 classes x 12 train / 3 test PNGs."""
    root = tmp_path / "data"
    write_image_folder(root / "cifar10", C10_NAMES, {"train": 12, "test": 3})
    return root


def epoch_batches(loader, epoch: int, start_batch: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch, start_batch=start_batch)
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


# ---------------------------------------------------------------- sources


def test_registered_and_root_resolution(monkeypatch):
    assert {"cifar10", "cifar100", "imagenet"} <= set(DATASETS.names())
    assert D.resolve_data_root("cli", "cfg") == Path("cli")
    assert D.resolve_data_root(None, "cfg") == Path("cfg")
    monkeypatch.setenv("VIT16_DATA", "env")
    assert D.resolve_data_root(None, "") == Path("env")
    assert D.resolve_data_root("cli", "") == Path("cli")
    monkeypatch.delenv("VIT16_DATA")
    assert D.resolve_data_root(None, "") == Path("./data")


@pytest.mark.parametrize("name,expected", [
    ("cifar10", ["cifar-10-batches-py", "cifar10/train", "cifar10/test"]),
    ("cifar100", ["cifar-100-python", "cifar100.npz", "cifar100/train", "cifar100/test"]),
    ("imagenet", ["imagenet/train", "imagenet/val"]),
])
def test_missing_data_names_every_path(tmp_path, name, expected):
    cfg = data_cfg(name)
    with pytest.raises(D.DataNotFoundError) as err:
        D.build_data(cfg, "cpu", data_root=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "\n" not in msg
    for rel in expected:
        assert str((tmp_path / "nowhere" / rel).absolute()) in msg
    assert "--data-root" in msg and "VIT16_DATA" in msg
    if name != "imagenet":
        assert "set download = true in the [exp.data] table" in msg and "../shared/data" in msg


def test_env_root_used_and_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT16_DATA", str(tmp_path / "envroot"))
    with pytest.raises(D.DataNotFoundError, match="envroot"):
        D.build_data(data_cfg(), "cpu")


def test_image_folder_cifar10(data_c10_folder):
    src = DATASETS.build("cifar10", cfg=data_cfg().data, root=data_c10_folder)
    assert src.class_names == C10_NAMES
    assert src.train.images.shape == (120, 32, 32, 3) and src.train.images.dtype == np.uint8
    assert src.test.images.shape == (30, 32, 32, 3)
    assert src.train.labels.dtype == np.int64
    assert np.array_equal(src.train.labels, np.repeat(np.arange(10), 12))
    assert np.array_equal(src.train.images[12 * 3 + 5], data_image(3, 5))  # PNG: exact pixels
    assert "ImageFolder" in src.description and "JPEG" not in src.description
    assert src.autoaugment_policy == "cifar10"


def test_pickles_cifar10(tmp_path):
    written = write_cifar10_pickles(tmp_path)
    src = DATASETS.build("cifar10", cfg=data_cfg().data, root=tmp_path)
    assert src.class_names == C10_NAMES
    assert src.train.images.shape == (100, 32, 32, 3)
    assert np.array_equal(src.train.images, np.concatenate(written["x"][:5]))  # CHW planes -> HWC
    assert np.array_equal(src.test.images, written["x"][5])
    assert np.array_equal(src.train.labels, np.concatenate(written["y"][:5]))
    assert "python batches" in src.description


def test_pickles_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x = np.random.default_rng(1).integers(0, 256, (200, 3072), dtype=np.uint8)
    fine = list(range(100)) * 2
    for name, n in (("train", 200), ("test", 100)):
        with open(d / name, "wb") as f:
            pickle.dump({"data": x[:n], "fine_labels": fine[:n], "coarse_labels": [v // 5 for v in fine[:n]]}, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)],
                     "coarse_label_names": [f"c{i}" for i in range(20)]}, f)
    src = DATASETS.build("cifar100", cfg=data_cfg("cifar100").data, root=tmp_path)
    assert len(src.class_names) == 100 and src.class_names[7] == "f7"
    assert np.array_equal(src.train.labels, np.asarray(fine))
    assert np.array_equal(src.train.images[3].transpose(2, 0, 1).reshape(-1), x[3])
    coarse = DATASETS.build("cifar100", cfg=data_cfg("cifar100", label="coarse").data, root=tmp_path)
    assert coarse.class_names == [f"c{i}" for i in range(20)]
    assert src.autoaugment_policy == coarse.autoaugment_policy == "cifar10"
    assert np.array_equal(coarse.test.labels, np.arange(100) // 5)


def test_npz_cifar100_fine_and_coarse(tmp_path):
    write_cifar100_npz(tmp_path / "cifar100.npz")
    cfg = data_cfg("cifar100", val_size=100, batch_size=4)
    bundle = D.build_data(cfg, "cpu", data_root=str(tmp_path))
    assert bundle.num_classes == 100 and bundle.class_names[:2] == ["fine00", "fine01"]
    assert bundle.train.num_samples == 100 and bundle.val.num_samples == 100 and bundle.test.num_samples == 100
    assert "npz" in bundle.description
    cfg.data.label = "coarse"
    bundle = D.build_data(cfg, "cpu", data_root=str(tmp_path))
    assert bundle.num_classes == 20 and bundle.class_names[19] == "coarse19"
    labels = torch.cat([y for _, y in bundle.test])
    assert torch.equal(labels, torch.arange(100) // 5)


def test_cache_hit_does_not_decode(data_c10_folder, tmp_path, monkeypatch):
    first = DATASETS.build("cifar10", cfg=data_cfg().data, root=data_c10_folder)
    assert len(list((tmp_path / "cache").glob("cifar10-imagefolder-*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decode, "decode_images", boom)
    second = DATASETS.build("cifar10", cfg=data_cfg().data, root=data_c10_folder)
    assert np.array_equal(first.train.images, second.train.images)
    assert np.array_equal(first.test.labels, second.test.labels)
    assert second.class_names == first.class_names
    # a changed source misses the cache
    f = data_c10_folder / "cifar10" / "train" / "cat" / "0000.png"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        DATASETS.build("cifar10", cfg=data_cfg().data, root=data_c10_folder)


def test_npz_cache_hit(tmp_path, monkeypatch):
    write_cifar100_npz(tmp_path / "cifar100.npz")
    first = DATASETS.build("cifar100", cfg=data_cfg("cifar100").data, root=tmp_path)
    monkeypatch.setattr(decode, "read_cifar100_npz", lambda p: (_ for _ in ()).throw(AssertionError("read")))
    second = DATASETS.build("cifar100", cfg=data_cfg("cifar100", label="coarse").data, root=tmp_path)
    assert np.array_equal(first.train.images, second.train.images)
    assert len(second.class_names) == 20


def test_decode_jpeg_matches_pil(tmp_path):
    write_image_folder(tmp_path / "f", ["a", "b"], {"train": 3}, ext="jpg")
    files, labels, classes, _ = decode.list_image_folder(tmp_path / "f" / "train")
    x = decode.decode_images(files, workers=2)
    ref = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    assert classes == ["a", "b"] and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(x, ref)
    Image.fromarray(data_image(0, 0, 16)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="small.png is 16x16"):
        decode.decode_images([files[0], str(tmp_path / "small.png")])


# ---------------------------------------------------------------- splits


def test_val_split_balanced_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    full = D.Split(labels=labels, files=[str(i) for i in range(500)])
    t_idx, v_idx = _split_positions(full, 30)
    assert len(v_idx) == 30 and len(t_idx) == 470
    assert np.bincount(labels[v_idx], minlength=10).tolist() == [3] * 10
    assert not set(t_idx) & set(v_idx) and len(set(t_idx) | set(v_idx)) == 500
    assert _split_positions(full, 30) == (t_idx, v_idx)  # fixed split seed


def _split_positions(full, val_size, **kw):
    ids = D.Split(labels=full.labels, files=[str(i) for i in range(len(full))])
    t, v = splits.split_train(ids, val_size=val_size, **kw)
    return [int(f) for f in t.files], [int(f) for f in v.files]


def test_val_split_same_across_experiment_seeds(data_c10_folder):
    vals = []
    for seed in (0, 1):
        b = D.build_data(data_cfg(seed=seed), "cpu", data_root=str(data_c10_folder))
        vals.append(torch.cat([x for x, _ in b.val]))
        assert b.val.num_samples == 20 and b.train.num_samples == 100
    assert torch.equal(vals[0], vals[1])


def test_train_limit_and_fraction_are_class_balanced():
    labels = np.repeat(np.arange(4), [30, 30, 30, 60])
    full = D.Split(labels=labels, files=[str(i) for i in range(len(labels))])
    t_idx, v_idx = _split_positions(full, 8, train_limit=12)
    assert np.bincount(labels[t_idx], minlength=4).tolist() == [3, 3, 3, 3]
    assert not set(t_idx) & set(v_idx)
    t_idx, _ = _split_positions(full, 8, fraction=0.5)
    assert np.bincount(labels[t_idx], minlength=4).tolist() == [14, 14, 14, 29]
    with pytest.raises(ValueError, match="train_limit"):
        _split_positions(full, 8, train_limit=10_000)
    with pytest.raises(ValueError, match="val_size"):
        _split_positions(full, 150)


def test_imagenet_file_lists_fraction_and_transforms(tmp_path):
    classes = ["n01", "n02", "n03"]
    write_image_folder(tmp_path / "imagenet", classes, {"train": 6, "val": 2}, ext="jpg", size=(40, 48))
    cfg = data_cfg("imagenet", batch_size=3, img_size=24, val_size=3, fraction=0.5, device_resident=True,
                   auto_augment="autoaugment")
    src = DATASETS.build("imagenet", cfg=cfg.data, root=tmp_path)
    assert src.train.images is None and len(src.train.files) == 18 and src.class_names == classes
    assert src.autoaugment_policy == "imagenet"
    b = D.build_data(cfg, "cpu", data_root=str(tmp_path))
    assert b.train.num_samples == 6  # (18 - 3 val) -> half of 5 per class, rounded
    assert isinstance(b.train, D.loaders.WorkerTrainLoader)
    assert b.train.dataset.transform.transforms[-1].policy == v2.AutoAugmentPolicy.IMAGENET
    b.train.set_epoch(0)
    x, y = next(iter(b.train))
    assert x.shape == (3, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs = [x for x, _ in b.test]
    assert sum(len(x) for x in xs) == 6 and xs[0].shape[1:] == (3, 24, 24)
    assert b.description.startswith("ImageNet")


# ---------------------------------------------------------------- loaders


def test_loader_contract_and_normalisation(data_c10_folder):
    cfg = data_cfg(crop_padding=0, hflip=False)
    b = D.build_data(cfg, "cpu", data_root=str(data_c10_folder))
    assert isinstance(b.train, D.loaders.DeviceTrainLoader)
    assert len(b.train) == 100 // 8 and b.num_classes == 10 and b.class_names == C10_NAMES
    assert len(b.test) == 4 and b.test.num_samples == 30
    assert "CIFAR-10" in b.description
    # without augmentation a batch is exactly the normalised images in the epoch's order
    src = DATASETS.build("cifar10", cfg=cfg.data, root=data_c10_folder)
    train, _ = splits.split_train(src.train, 20)
    order = b.train.sampler.batches(0)
    x, y = epoch_batches(b.train, 0)[0]
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    ref = (torch.from_numpy(train.images[order[0].numpy()]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(x, ref, atol=1e-5)
    assert torch.equal(y, torch.from_numpy(train.labels[order[0].numpy()]))
    # eval: fixed order, test labels in file order
    assert torch.equal(torch.cat([y for _, y in b.test]), torch.arange(10).repeat_interleave(3))
    with pytest.raises(RuntimeError, match="set_epoch"):
        iter(b.train)


AUG = dict(auto_augment="randaugment", random_erasing=0.5, mixup_alpha=0.8, cutmix_alpha=1.0)


@pytest.mark.parametrize("path", ["device", "workers"])
def test_same_seed_epoch_same_batches(data_c10_folder, path):
    kw = dict(AUG, device_resident=path == "device")
    a = D.build_data(data_cfg(**kw), "cpu", data_root=str(data_c10_folder)).train
    b = D.build_data(data_cfg(**kw), "cpu", data_root=str(data_c10_folder)).train
    e0a, e0b = epoch_batches(a, 0), epoch_batches(b, 0)
    assert same_batches(e0a, e0b)
    assert not same_batches(e0a, epoch_batches(a, 1))
    c = D.build_data(data_cfg(seed=1, **kw), "cpu", data_root=str(data_c10_folder)).train
    assert not same_batches(e0a, epoch_batches(c, 0))
    x, t = e0a[0]
    assert t.shape == (8, 10) and t.dtype == torch.float32  # soft targets when mixing
    assert torch.allclose(t.sum(1), torch.ones(8))


@pytest.mark.parametrize("aug", [dict(AUG, auto_augment="autoaugment"), dict(crop_padding=0, hflip=True),
                                 dict(crop_padding=4, hflip=False)], ids=["all", "flip-only", "crop-only"])
def test_resident_crops_equal_gathered_batches(data_c10_folder, aug):
    """The device loader reads its crops from the padded, mirrored set
    (CropSource); each micro-batch equals BatchAugment on the gathered
    images with the same generator, bit for bit."""
    b = D.build_data(data_cfg(**aug), "cpu", data_root=str(data_c10_folder)).train
    assert b.source is not None and b.source.padded.shape[0] == (2 if b.source.mirror else 1) * 100
    plain = D.build_data(data_cfg(crop_padding=0, hflip=False), "cpu", data_root=str(data_c10_folder)).train
    assert plain.source is None and torch.equal(b.images, plain.images)  # the view holds the images as given
    for i, (x, y) in enumerate(epoch_batches(b, 0)[:3]):
        idx = b.sampler.batches(0)[i]
        rx, ry = b.augment(b.images[idx], b.labels[idx], b.sampler.batch_generator(0, i))
        assert torch.equal(x, rx) and torch.equal(y, ry)


@pytest.mark.parametrize("path", ["device", "workers"])
def test_start_batch_equals_tail_of_full_pass(data_c10_folder, path):
    cfg = data_cfg(device_resident=path == "device", **AUG)
    loader = D.build_data(cfg, "cpu", data_root=str(data_c10_folder)).train
    full = epoch_batches(loader, 3)
    assert same_batches(epoch_batches(loader, 3, start_batch=5), full[5:])
    # a fresh loader resumed after 4 batches, as the trainer resumes
    fresh = D.build_data(cfg, "cpu", data_root=str(data_c10_folder)).train
    assert same_batches(epoch_batches(fresh, 3, start_batch=4), full[4:])
    with pytest.raises(ValueError, match="start_batch"):
        loader.set_epoch(0, start_batch=len(loader) + 1)


def test_worker_count_does_not_change_batches(data_c10_folder):
    kw = dict(device_resident=False, auto_augment="trivialaugment")
    a = D.build_data(data_cfg(**kw), "cpu", data_root=str(data_c10_folder)).train
    cfg = data_cfg(**kw)
    cfg.data.num_workers = 2
    b = D.build_data(cfg, "cpu", data_root=str(data_c10_folder)).train
    assert same_batches(epoch_batches(a, 0)[:4], epoch_batches(b, 0)[:4])


@pytest.mark.parametrize("path", ["device", "workers"])
def test_global_rng_untouched(data_c10_folder, path):
    b = D.build_data(data_cfg(device_resident=path == "device", **AUG), "cpu", data_root=str(data_c10_folder))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    epoch_batches(b.train, 0)
    list(b.val)
    assert torch.equal(torch.get_rng_state(), state)


def test_upsampled_cifar_worker_path(data_c10_folder):
    cfg = data_cfg(img_size=64, crop_padding=4, batch_size=4, device_resident=False)
    cfg.eval_batch_size = 16
    b = D.build_data(cfg, "cpu", data_root=str(data_c10_folder))
    assert isinstance(b.train, D.loaders.WorkerTrainLoader)
    x, y = epoch_batches(b.train, 0)[0]
    assert x.shape == (4, 3, 64, 64) and y.shape == (4,) and y.dtype == torch.int64
    xs = [x for x, _ in b.val]
    assert [len(x) for x in xs] == [16, 4] and xs[0].shape == (16, 3, 64, 64)


def test_upsampled_cifar_on_the_device_matches_the_worker_path(data_c10_folder):
    """CIFAR at 64 (as at 224): the 32px set stays on the device, is cropped and
    flipped at 32 and upsampled there. Evaluation equals the worker path's
    v2.Resize(BICUBIC, antialias) within one grey level (both round to uint8
    levels; torchvision's uint8 kernel is fixed-point, ours float: 8 % of
    pixels differ by one level on these images); a training batch without crop or flip
    is the same upsampling of its 32px images."""
    kw = dict(img_size=64, batch_size=4, crop_padding=0, hflip=False)
    cfg = data_cfg(**kw)
    cfg.eval_batch_size = 16
    dev = D.build_data(cfg, "cpu", data_root=str(data_c10_folder))
    assert isinstance(dev.train, D.loaders.DeviceTrainLoader)
    cfg_w = data_cfg(device_resident=False, **kw)
    cfg_w.eval_batch_size = 16
    workers = D.build_data(cfg_w, "cpu", data_root=str(data_c10_folder))
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    for (xd, yd), (xw, yw) in zip(dev.test, workers.test, strict=True):
        assert xd.shape == xw.shape and xd.shape[1:] == (3, 64, 64) and torch.equal(yd, yw)
        levels = ((xd - xw) * std * 255).abs()
        assert levels.max() <= 1.0 + 1e-3 and levels.mean() < 0.1  # 1 level on < 10 % of pixels
    (xd, yd), (xw, yw) = epoch_batches(dev.train, 0)[0], epoch_batches(workers.train, 0)[0]
    assert torch.equal(yd, yw) and ((xd - xw) * std * 255).abs().max() <= 1.0 + 1e-3


def test_upsample_kernels_agree_within_one_grey_level():
    """The GPU's float kernel against the CPU's uint8 kernel, on smooth images
    (photograph-like; on white noise bicubic overshoots [0, 255] between the
    two passes, which the uint8 kernel clips and the float one does not)."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    x = torch.stack([127.5 + 120 * torch.sin(xx / f + c) * torch.cos(yy / (f + 1))
                     for f in (2.0, 3.0, 5.0, 8.0) for c in range(3)]).view(4, 3, 32, 32).round().to(torch.uint8)
    a, b = augment.upsample(x, 224, "uint8"), augment.upsample(x, 224, "float")
    assert a.dtype == b.dtype == torch.uint8 and a.shape == (4, 3, 224, 224)
    assert a.is_contiguous(memory_format=torch.channels_last)  # the uint8 kernel's layout, not copied
    assert (a.int() - b.int()).abs().max() <= 1
    x = augment.normalize(a, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # reads any layout, writes NCHW
    assert x.is_contiguous()
    assert torch.allclose(x, (a.contiguous().float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_upsampled_device_path_crops_in_stored_pixels(data_c10_folder):
    """crop_padding = 8 at 64px is 4 stored pixels: the batch is
    upsample(crop_flip(x, padding 4)) of the 32px images, with the same draws."""
    from vit16.data.augment import normalize, upsample
    from vit16.data.crop import crop_flip, draw_crop_flip

    cfg = data_cfg(img_size=64, batch_size=4, crop_padding=8)
    b = D.build_data(cfg, "cpu", data_root=str(data_c10_folder))
    assert b.train.augment.crop_padding == 4 and b.train.augment.out_size == 64
    x, _ = epoch_batches(b.train, 0)[0]
    idx = b.train.sampler.batches(0)[0]
    offsets, flips = draw_crop_flip(4, 4, True, b.train.sampler.batch_generator(0, 0))
    ref = normalize(upsample(crop_flip(b.train.images[idx], offsets, flips, 4), 64),
                    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    torch.testing.assert_close(x, ref)
    with pytest.raises(ConfigError, match=r"^\[exp.data\]: crop_padding = 5 at img_size = 64 is not a whole "
                       r"number of the stored 32px pixels .*use a multiple of 2 \(e.g. 4\)"):
        D.build_data(data_cfg(img_size=64, crop_padding=5), "cpu", data_root=str(data_c10_folder))


def test_ddp_shards_disjoint_and_covering():
    n, mb, world = 103, 5, 3
    samplers = [sampling.EpochSampler(n, mb, seed=7, rank=r, world_size=world) for r in range(world)]
    assert {len(s) for s in samplers} == {103 // 15}
    shards = [s.batches(2).reshape(-1).tolist() for s in samplers]
    used = sum(shards, [])
    assert len(used) == len(set(used)) == len(samplers[0]) * mb * world
    assert sorted(used) == sorted(samplers[0].permutation(2)[: len(used)].tolist())
    assert n - len(used) < mb * world  # only the incomplete remainder is dropped
    evals = [splits.eval_shard(n, r, world) for r in range(world)]
    assert sorted(np.concatenate(evals).tolist()) == list(range(n))
    assert max(map(len, evals)) - min(map(len, evals)) <= 1


def test_ddp_eval_loaders_cover_test_set(data_c10_folder):
    cfg = data_cfg(batch_size=8)
    parts = [D.build_data(cfg, "cpu", rank=r, world_size=2, data_root=str(data_c10_folder)) for r in range(2)]
    assert all(len(p.train) == 100 // 8 for p in parts)  # micro batch 4 per rank
    assert sum(p.test.num_samples for p in parts) == 30
    labels = torch.cat([y for p in parts for _, y in p.test])
    assert torch.equal(labels, torch.arange(10).repeat_interleave(3))


def test_repeated_augmentation_keeps_epoch_length():
    s = sampling.EpochSampler(40, 8, seed=0, repeats=3)
    perm = s.permutation(0)
    assert len(perm) == 40 and len(s) == 5
    assert len(set(perm.tolist())) == 14  # ceil(40 / 3)
    assert torch.equal(perm[0:3], perm[0].repeat(3))


# ---------------------------------------------------------------- augmentation


def test_crop_flip_exact():
    img = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6)
    out = crop.crop_flip(img, torch.zeros(2, 2, dtype=torch.long), torch.tensor([True, False]), padding=0)
    assert torch.equal(out[0], img[0].flip(-1)) and torch.equal(out[1], img[1])
    p = 2
    offsets = torch.tensor([[0, 4], [3, 1]])
    out = crop.crop_flip(img, offsets, torch.tensor([False, True]), padding=p)
    padded = torch.nn.functional.pad(img, (p,) * 4)
    assert torch.equal(out[0], padded[0, :, 0:6, 4:10])
    assert torch.equal(out[1], padded[1, :, 3:9, 1:7].flip(-1))
    assert (out[0, :, :2, :] == 0).all() and (out[0, :, :, 4:] == 0).all()  # zero padding shows


def test_random_crop_flip_statistics():
    img = torch.randint(1, 256, (400, 3, 8, 8), dtype=torch.uint8)
    out = crop.random_crop_flip(img, 0, True, torch.Generator().manual_seed(0))
    flipped = (out == img.flip(-1)).flatten(1).all(1)
    same = (out == img).flatten(1).all(1)
    assert (flipped | same).all() and 150 < int(flipped.sum()) < 250
    out = crop.random_crop_flip(img, 4, False, torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).any(1).float().mean()
    assert 0.5 < zeros < 1.0  # most crops reach into the padding, some do not (offset 4, 4)


def test_mixup_soft_targets():
    x = torch.randn(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    rng = np.random.default_rng(0)
    mx, t, lam = augment.mix_batch(x, y, 7, mixup_alpha=0.8, cutmix_alpha=0.0, mix_prob=1.0, rng=rng)
    onehot = torch.nn.functional.one_hot(y, 7).float()
    assert 0 < lam < 1 and torch.allclose(t.sum(1), torch.ones(6))
    assert torch.allclose(t, lam * onehot + (1 - lam) * onehot.flip(0))
    assert torch.allclose(mx, lam * x + (1 - lam) * x.flip(0))
    cx, t, lam = augment.mix_batch(x, y, 7, mixup_alpha=0.0, cutmix_alpha=1.0, mix_prob=1.0,
                                   rng=np.random.default_rng(3))
    from_other = (cx == x.flip(0)) & (cx != x)
    assert torch.isclose(from_other[0].float().mean(), torch.tensor(1 - lam), atol=1e-6)
    assert torch.allclose(t, lam * onehot + (1 - lam) * onehot.flip(0))
    same, t, lam = augment.mix_batch(x, y, 7, 0.8, 1.0, mix_prob=0.0, rng=rng)
    assert lam == 1.0 and torch.equal(same, x) and torch.equal(t, onehot)


def test_random_erasing():
    x = torch.ones(64, 3, 16, 16)
    out = augment.random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    erased = (out == 0).all(1)  # all channels of a pixel erased together
    frac = erased.flatten(1).float().mean(1)
    assert (frac > 0).float().mean() > 0.9 and (frac <= 0.34).all()
    rows = erased.any(2).sum(1)
    cols = erased.any(1).sum(1)
    assert torch.equal(erased.flatten(1).sum(1), rows * cols)  # a rectangle
    assert torch.equal(augment.random_erasing(x, 0.0, torch.Generator()), x)


def test_config_validation(data_c10_folder):
    with pytest.raises(ConfigError, match=r"\[exp.data\]: auto_augment = 'randaug'"):
        D.build_data(data_cfg(auto_augment="randaug"), "cpu", data_root=str(data_c10_folder))
    with pytest.raises(ValueError, match="fewer than one global micro-batch"):
        D.build_data(data_cfg(batch_size=512), "cpu", data_root=str(data_c10_folder))


def test_cifar_autoaugment_uses_the_sources_policy(data_c10_folder):
    b = D.build_data(data_cfg(auto_augment="autoaugment"), "cpu", data_root=str(data_c10_folder))
    assert b.train.augment.policy.transform.policy == v2.AutoAugmentPolicy.CIFAR10


def test_micro_batch_follows_batch_geometry(data_c10_folder):
    cfg = data_cfg()  # batch 8, 100 training images
    cfg.micro_batch_size = 4
    assert len(D.build_data(cfg, "cpu", data_root=str(data_c10_folder)).train) == 100 // 4
    assert len(D.build_data(cfg, "cpu", data_root=str(data_c10_folder), micro_batch_size=2).train) == 100 // 2
    cfg.micro_batch_size = 3
    with pytest.raises(ValueError, match="micro_batch_size"):
        D.build_data(cfg, "cpu", data_root=str(data_c10_folder))


def test_data_throughput(data_c10_folder):
    """Images/s and the calls of one micro-batch: the resident path's whole
    augmentation makes one host-device copy (its packed draws), at any
    micro-batch size. (The aten-op count depends on which policy ops a batch
    this small happens to draw; at 512 and more every op is drawn and the count
    is fixed: results/BENCH_CPU.md.)"""
    for batch in (8, 16):
        r = D.data_throughput(data_cfg(crop_padding=4, auto_augment="randaugment", batch_size=batch), "cpu",
                              batches=1, data_root=str(data_c10_folder))  # counted: mid-epoch 1
        assert r["images_per_s"] > 0 and r["copies"] == 1 and r["aten_ops"] > 10


# ---------------------------------------------------------------- the shared copy


@pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason="shared CIFAR-10 not present")
def test_shared_cifar10_layout():
    files, labels, classes, _ = decode.list_image_folder(SHARED / "cifar10" / "train")
    assert classes == C10_NAMES and len(files) == 50_000
    assert np.bincount(labels).tolist() == [5000] * 10
    assert len(decode.list_image_folder(SHARED / "cifar10" / "test")[0]) == 10_000
    x = decode.decode_images(files[::5000])
    assert x.shape == (10, 32, 32, 3) and x.dtype == np.uint8 and x.std() > 10


@pytest.mark.skipif(not (SHARED / "cifar100.npz").is_file(), reason="shared CIFAR-100 not present")
def test_shared_cifar100_npz_keys():
    with np.load(SHARED / "cifar100.npz") as z:
        assert {"x_train", "y_train", "y_train_coarse", "x_test", "fine_names", "coarse_names"} <= set(z.files)
        assert len(z["fine_names"]) == 100 and len(z["coarse_names"]) == 20
        assert z["y_test"].shape == (10_000,)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason="shared CIFAR-10 not present")
def test_shared_cifar10_full_build(monkeypatch):
    monkeypatch.delenv("VIT16_CACHE")  # the user's real cache: decoded once, then fast
    b = D.build_data(ExperimentConfig(name="shared", batch_size=256), "cpu", data_root=str(SHARED))
    assert b.train.num_samples == 45_000 and b.val.num_samples == 5_000 and b.test.num_samples == 10_000
    assert b.num_classes == 10 and "JPEG" in b.description


def test_download_only_when_no_copy_and_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def offline(root, train=True, download=False):
        calls.append(root)
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    present = tmp_path / "present"
    write_image_folder(present / "cifar10", C10_NAMES, {"train": 3, "test": 1})
    cfg = data_cfg(val_size=10, download=True)
    D.build_data(cfg, torch.device("cpu"), data_root=str(present))
    assert calls == []  # a copy was found: nothing is downloaded
    with pytest.raises(D.DataNotFoundError) as err:
        D.build_data(cfg, torch.device("cpu"), data_root=str(tmp_path / "empty"))
    msg = str(err.value)
    assert calls == [str(tmp_path / "empty")] and "\n" not in msg
    assert "downloading it to" in msg and "Network is unreachable" in msg and "--data-root" in msg
