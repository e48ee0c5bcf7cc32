"""`make demo`'s emoji part (`demo_emoji.demo_emoji`, called by `cli._cmd_demo`), on the smoke emoji weights of tests/conftest.py.

The emoji weights do not ship yet, so the demo itself is checked twice: as it runs today (one
line says the weights are not shipped and how to train them, and the rest of the demo is
unchanged) and with the smoke weights standing in for shipped ones (its summary lists the
emoji pictures).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dalle_mini_core.cli import main
from dalle_mini_core.demo_emoji import (DEMO_EMOJI_FRAMES, DEMO_EMOJI_INTERPOLATION, DEMO_EMOJI_N_VARIATIONS,
                                        DEMO_EMOJI_NAMES, DEMO_EMOJI_VARIATIONS, demo_emoji)

FAST = {"prior_steps": 2, "decoder_steps": 2, "upsampler_steps": 2}
PNGS = ("emoji_text_to_image.png", "emoji_variations.png", "emoji_interpolation.png")


@pytest.fixture(scope="module")
def pipe(emoji_smoke_weights):
    from dalle_mini_core.pipeline import UnCLIP

    return UnCLIP.from_pretrained("emoji", folder=emoji_smoke_weights)


def _grid_size(columns: int, rows: int, side: int = 64, scale: int = 2) -> tuple[int, int]:
    """The PNG size of `viz.save_grid`: 1-pixel padding around every picture, then enlarged `scale` times."""
    return (columns * (side + 1) + 1) * scale, (rows * (side + 1) + 1) * scale


def _real_emoji(name: str) -> np.ndarray:
    """The real emoji as the grid shows it: uint8 (128, 128, 3), each pixel doubled."""
    from dalle_mini_core.data.emoji import EmojiDataset

    data = EmojiDataset("all", image_size=64, templates=False)
    return data.images[data.clean_names.index(name)].repeat(2, axis=0).repeat(2, axis=1)


def test_emoji_demo_writes_three_grids_with_their_captions(pipe, tmp_path):
    lines = demo_emoji(pipe, tmp_path, seed=0, steps=FAST)
    assert len(lines) == 3
    for name, line in zip(PNGS, lines):
        assert (tmp_path / name).is_file() and line.startswith(str(tmp_path / name)), (name, line)
        assert " s)" in line  # each line says how long its pictures took
    assert pipe.output_size == 64
    sizes = {name: Image.open(tmp_path / name).size for name in PNGS}
    assert sizes == {"emoji_text_to_image.png": _grid_size(len(DEMO_EMOJI_NAMES), 2),  # real row, drawn row
                     "emoji_variations.png": _grid_size(1 + DEMO_EMOJI_N_VARIATIONS, 1),  # the real emoji, variations
                     "emoji_interpolation.png": _grid_size(DEMO_EMOJI_FRAMES + 2, 1)}  # A, the frames, B
    # the real emoji sit where the captions say: top row of the text grid, first picture of the others
    grid = np.asarray(Image.open(tmp_path / "emoji_text_to_image.png").convert("RGB"))
    for k, name in enumerate(DEMO_EMOJI_NAMES):
        left = 2 + k * 130
        assert np.array_equal(grid[2:130, left:left + 128], _real_emoji(name)), name
    variations = np.asarray(Image.open(tmp_path / "emoji_variations.png").convert("RGB"))
    assert np.array_equal(variations[2:130, 2:130], _real_emoji(DEMO_EMOJI_VARIATIONS))
    interpolation = np.asarray(Image.open(tmp_path / "emoji_interpolation.png").convert("RGB"))
    a, b = DEMO_EMOJI_INTERPOLATION
    assert np.array_equal(interpolation[2:130, 2:130], _real_emoji(a))
    left = 2 + (DEMO_EMOJI_FRAMES + 1) * 130
    assert np.array_equal(interpolation[2:130, left:left + 128], _real_emoji(b))

    captions = (tmp_path / "emoji_text_to_image_captions.txt").read_text(encoding="utf-8").splitlines()
    assert len(captions) == 1 + len(DEMO_EMOJI_NAMES)
    assert captions[1] == "column 1: 😻 smiling cat with heart-eyes (train split)"
    assert captions[-1] == f"column {len(DEMO_EMOJI_NAMES)}: 🍎 red apple (test split)"  # a name never trained on
    assert "🐙 octopus" in (tmp_path / "emoji_variations_captions.txt").read_text(encoding="utf-8")
    text = (tmp_path / "emoji_interpolation_captions.txt").read_text(encoding="utf-8")
    assert "🐱 cat face" in text and "🐶 dog face" in text and "θ = 0, 0.25, 0.5, 0.75, 1" in text


def test_same_seed_same_bytes_another_seed_other_pictures(pipe, tmp_path):
    for folder, seed in (("a", 4), ("b", 4), ("c", 5)):
        demo_emoji(pipe, tmp_path / folder, seed=seed, steps=FAST)
    for name in PNGS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name


def test_unknown_steps_are_refused_before_any_work(pipe, tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        demo_emoji(pipe, tmp_path / "x", steps={"decoder_step": 2})
    with pytest.raises(ValueError, match="decoder_steps"):
        demo_emoji(pipe, tmp_path / "x", steps={"decoder_steps": 0})
    assert not (tmp_path / "x").exists()


def test_demo_without_emoji_weights_says_so_in_one_line_and_succeeds(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "emoji" in line and "not shipped" in line]
    assert len(notes) == 1, out
    assert "dalle-mini train all --dataset emoji" in notes[0]
    for name in PNGS:
        assert not (tmp_path / name).exists(), name
    for name in ("text_to_image.png", "emoji.png", "samples.png"):  # the rest of the demo as before
        assert (tmp_path / name).is_file(), name


def test_demo_with_emoji_weights_lists_the_emoji_pictures(emoji_smoke_weights, tmp_path, capsys, monkeypatch):
    from dalle_mini_core.pipeline import UnCLIP

    load = UnCLIP.from_pretrained

    def as_if_shipped(cls, dataset="shapes", **kwargs):  # the smoke weights stand in for shipped emoji weights
        if dataset == "emoji":
            return load("emoji", folder=emoji_smoke_weights)
        raise FileNotFoundError("shapes left out of this test")

    monkeypatch.setattr(UnCLIP, "from_pretrained", classmethod(as_if_shipped))
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "not shipped" not in out
    for name in PNGS:
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out, name
