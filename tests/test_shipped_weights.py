"""Shipped weights in data/weights: manifest checksums hold and each file loads into its model."""
from __future__ import annotations

import json

import pytest
import torch

from dalle_mini_core.checkpoints import read_checkpoint_json
from dalle_mini_core.paths import data_dir
from dalle_mini_core.weights import load_pretrained, verify_manifest

WEIGHTS = data_dir() / "weights"
NAMES = sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))


def test_every_shipped_file_is_in_the_manifest():
    manifest = json.loads((WEIGHTS / "MANIFEST.json").read_text())
    for name in NAMES:
        assert f"{name}.safetensors" in manifest and f"{name}.json" in manifest, name
    verify_manifest(WEIGHTS / "MANIFEST.json")  # raises on any checksum mismatch


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_load_and_record_how_they_were_trained(name):
    model = load_pretrained(name)
    meta = read_checkpoint_json(WEIGHTS / name)
    assert meta["num_parameters"] == sum(p.numel() for p in model.parameters())
    extra = meta["extra"]
    assert extra.get("device") or extra.get("machine"), "shipped weights must say where they were trained"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_uncond_denoiser_runs_on_a_batch():
    if "shapes_uncond" not in NAMES:
        pytest.skip("shapes_uncond not shipped")
    net = load_pretrained("shapes_uncond").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = net(x, torch.tensor([10, 900]))
    assert eps.shape == x.shape
    # at t=900 almost all of x_t is noise, so the predicted noise is close to x_t itself
    assert torch.nn.functional.cosine_similarity(eps[1].flatten(), x[1].flatten(), dim=0) > 0.9
