"""The dalle-mini command: demo and generate write their pictures, train and bench validate their options."""
from __future__ import annotations

import pytest
from PIL import Image

from dalle_mini_core.cli import build_parser, main


def test_demo_writes_pictures_and_captions(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("shapes.png", "emoji.png", "noising.png", "samples.png"):
        assert (tmp_path / name).is_file(), name
        assert str(tmp_path / name) in out
    assert Image.open(tmp_path / "noising.png").size[0] > Image.open(tmp_path / "noising.png").size[1]
    captions = (tmp_path / "shapes_captions.txt").read_text().splitlines()
    assert len(captions) == 16 and all(captions)


def test_demo_is_reproducible(tmp_path):
    main(["demo", "--out", str(tmp_path / "a"), "--seed", "3"])
    main(["demo", "--out", str(tmp_path / "b"), "--seed", "3"])
    for name in ("shapes.png", "samples.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_info_prints_device_and_mode(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "run_mode" in out and "device" in out


def test_train_rejects_a_bad_budget(capsys):
    assert main(["train", "clip", "--mode", "smoke", "--budget", "decoder=5"]) == 2
    assert "not being trained" in capsys.readouterr().err


def test_parser_refuses_unknown_stage():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "everything"])


# --- generate: the main job's own command ------------------------------------------------------

FAST = ["--prior-steps", "2", "--decoder-steps", "2", "--upsampler-steps", "2"]


def test_generate_writes_one_row_per_prompt_and_is_reproducible(tmp_path, capsys):
    prompts = ["a small red circle at the top left", "a large blue square in the centre"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["generate", *prompts, "--n", "3", "--seed", "5", "--out", str(a), *FAST]) == 0
    out = capsys.readouterr().out
    assert str(a) in out and "s per image" in out and prompts[1] in out
    grid = Image.open(a)
    # 64×64 images enlarged ×2, 3 per row, 2 rows, with the grid's padding between them
    assert grid.size[0] > grid.size[1] and grid.size[0] >= 3 * 128 and grid.size[1] >= 2 * 128
    main(["generate", *prompts, "--n", "3", "--seed", "5", "--out", str(b), *FAST])
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["generate", "   ", "--out", "x.png"], "empty"),
    (["generate", "a red circle", "--out", "grid.gif"], ".png or .jpg"),
    (["generate", "a red circle", "--n", "0", "--out", "x.png"], "--n must be"),
    (["generate", "a red circle", "--decoder-guidance", "-1", "--out", "x.png"], "guidance"),
])
def test_generate_explains_bad_input(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + FAST) == 2
    assert message in capsys.readouterr().err


def test_generate_without_weights_says_how_to_train(tmp_path, capsys):
    assert main(["generate", "a red circle", "--weights", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "dalle-mini train all" in capsys.readouterr().err


def test_demo_draws_text_to_image_variations_and_an_interpolation(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--seed", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("text_to_image.png", "variations.png", "interpolation.png"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out, name
    prompts = (tmp_path / "text_to_image_prompts.txt").read_text().splitlines()
    assert len(prompts) == 4
    w, h = Image.open(tmp_path / "text_to_image.png").size
    assert abs(w - h) < 20  # 4 prompts × 4 images: a square grid
    w, h = Image.open(tmp_path / "interpolation.png").size
    assert w > 5 * h  # 7 pictures in one row
