"""device.py: device choice, seeding, run modes, autocast."""
from __future__ import annotations

import pytest
import torch

from dalle_mini_core import device as dev


def test_get_device_defaults_to_an_available_device():
    d = dev.get_device()
    assert d.type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        assert d.type != "cuda"


def test_get_device_prefer_cpu_and_refuses_missing_cuda(monkeypatch):
    assert dev.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("DALLE_MINI_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            dev.get_device("cuda")


def test_seed_everything_repeats_and_differs():
    g = dev.seed_everything(3)
    a, ga = torch.randn(4), torch.randn(4, generator=g)
    g = dev.seed_everything(3)
    b, gb = torch.randn(4), torch.randn(4, generator=g)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    dev.seed_everything(4)
    assert not torch.equal(a, torch.randn(4))


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        dev.seed_everything(bad)


def test_run_mode_env(monkeypatch):
    monkeypatch.delenv("DALLE_MINI_MODE", raising=False)
    monkeypatch.setenv("DALLE_MINI_SMOKE", "1")
    assert dev.run_mode() == "smoke"
    assert dev.by_mode(smoke=1, cpu=2, gpu=3) == 1
    monkeypatch.setenv("DALLE_MINI_MODE", "gpu")
    assert dev.run_mode() == "gpu"
    assert dev.by_mode(smoke=1, cpu=2, gpu=3) == 3
    assert dev.by_mode(smoke=1, cpu=2) == 2  # gpu falls back to the cpu value
    monkeypatch.setenv("DALLE_MINI_MODE", "cpu")
    assert dev.by_mode(smoke=1, cpu=2, gpu=3) == 2
    monkeypatch.setenv("DALLE_MINI_MODE", "fast")
    with pytest.raises(ValueError, match="DALLE_MINI_MODE"):
        dev.run_mode()


def test_run_mode_without_env_follows_hardware(monkeypatch):
    monkeypatch.delenv("DALLE_MINI_MODE", raising=False)
    monkeypatch.delenv("DALLE_MINI_SMOKE", raising=False)
    assert dev.run_mode() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_autocast_is_fp32_on_cpu():
    a = torch.randn(4, 4)
    with dev.autocast("cpu"):
        assert (a @ a).dtype == torch.float32


def test_describe_lists_versions():
    info = dev.describe()
    for key in ("python", "torch", "device", "run_mode", "open_clip"):
        assert key in info
