"""The dalle-mini command: demo writes its pictures, train and bench validate their options."""
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
