"""Atomic checkpoint writes, loud load failures, RNG round trips."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from vit16 import checkpoint
from vit16.checkpoint import (
    FORMAT_KEY,
    CheckpointError,
    git_commit,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "sub" / "last.pt", {"model": {"w": torch.arange(3.0)},
                                                           "epoch": 2, "config": {"a": [1, 2]}})
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.arange(3.0))
    assert state["epoch"] == 2 and state["config"] == {"a": [1, 2]}
    assert state[FORMAT_KEY] == checkpoint.FORMAT_VERSION
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_failed_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes")  # some bytes reach the disk...
        raise OSError("disk full")  # ...then the write fails

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left

    with monkeypatch.context() as m:  # and with no previous file: nothing at all
        m.setattr(torch, "save", broken_save)
        with pytest.raises(OSError):
            save_checkpoint(tmp_path / "new.pt", {"epoch": 1})
    assert not (tmp_path / "new.pt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.randn(1000)}})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated or corrupt" in msg and "--no-resume" in msg
    assert "\n" not in msg


def test_garbage_and_empty_files(tmp_path):
    for name, data in (("garbage.pt", b"not a checkpoint at all"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(tmp_path / name)


def test_foreign_file_is_a_clear_error(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a vit16 checkpoint.*--no-resume"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a vit16 checkpoint"):
        load_checkpoint(tmp_path / "list.pt", hint="check the init path")
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps(object(), protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "pickle.pt")


def test_newer_format_and_missing_file(tmp_path):
    torch.save({FORMAT_KEY: checkpoint.FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_git_commit_format():
    commit = git_commit()
    assert commit == "unknown" or commit.removesuffix("+dirty").isalnum()
