"""viz.py: grids and conversions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dalle_mini_core import viz


def test_to_uint8_maps_range_ends():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    arr = viz.to_uint8(x)
    assert arr.shape == (1, 2, 2, 3) and arr.dtype == np.uint8
    assert arr[0, :, :, 0].ravel().tolist() == [0, 128, 255, 255]  # 0 → 127.5 rounds to 128; 2 clamps


def test_to_uint8_rejects_bad_shapes():
    with pytest.raises(ValueError, match="CHW"):
        viz.to_uint8(torch.zeros(3))


def test_image_grid_places_images_in_rows():
    imgs = torch.stack([torch.full((3, 4, 4), float(i) / 10) for i in range(5)])
    grid = viz.image_grid(imgs, nrow=3, pad=1)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 5 + 1)
    assert torch.all(grid[:, 1:5, 1:5] == 0.0)
    assert torch.allclose(grid[:, 6:10, 6:10], torch.tensor(0.4))  # 5th image: row 1, column 1


def test_save_grid_writes_png(tmp_path):
    imgs = torch.rand(4, 3, 8, 8) * 2 - 1
    path = viz.save_grid(imgs, tmp_path / "sub" / "g.png", nrow=2, scale=2)
    img = Image.open(path)
    assert img.size == ((2 * 9 + 1) * 2, (2 * 9 + 1) * 2)
