"""Every test runs isolated from the machine it runs on: one intra-op thread
(the tensors are tiny; on a busy 2-core machine OpenMP barriers made them
10-300x slower), a private decode cache, no data root or distributed
settings from the outside environment, and no network: a download attempt
fails at once instead of reaching out (tests must never download)."""

import urllib.request
from pathlib import Path

import pytest
import torch

from fakedata import write_cifar10_pickles


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # child processes too
    monkeypatch.setenv("VIT16_CACHE", str(tmp_path / "cache"))
    for key in ("VIT16_DATA", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)

    def no_network(url, *args, **kwargs):
        raise OSError(f"tests must not download ({getattr(url, 'full_url', url)})")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cifar10_root(tmp_path) -> Path:
    """A data root with a tiny CIFAR-10 in torchvision's pickle layout (100 train, 20 test)."""
    root = tmp_path / "data"
    write_cifar10_pickles(root, per_batch=20, test=20)
    return root
