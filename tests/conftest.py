"""Fixtures shared by several test files (the root conftest.py sets smoke mode and the threads)."""
from __future__ import annotations

import pytest
import torch

from tiny_models import TINY_CLIP


@pytest.fixture(scope="module")
def tiny():
    """The tiny CLIP of tiny_models.TINY_CLIP, seeded, in eval mode (one per test module)."""
    from dalle_mini_core.clip import CLIPModel

    torch.manual_seed(0)
    return CLIPModel.from_config(TINY_CLIP).eval()


@pytest.fixture(scope="session")
def emoji_smoke_weights(tmp_path_factory):
    """A whole emoji pipeline trained by the smoke recipes (a few steps per stage), made once per test
    session with the command's own path: ``stages.train_all(dataset="emoji", mode="smoke")``.

    The pictures it draws are noise; the tests check the machinery (keys, ranges, seeding, loading).
    """
    from dalle_mini_core.stages import train_all

    out = tmp_path_factory.mktemp("emoji_smoke_weights")
    train_all(dataset="emoji", mode="smoke", out_dir=out, progress=False, log=lambda line: None)
    return out
