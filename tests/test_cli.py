"""The dalle-mini command: demo and generate write their pictures, train and bench validate their options.

The reliability probe's bad-input rows for generate, eval and demo are in test_bad_input.py.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from PIL import Image

from dalle_mini_core.cli import build_parser, main
from tiny_unclip import tiny_pipeline


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


def test_demo_draws_text_to_image_variations_and_an_interpolation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dalle_mini_core.pipeline_io.stderr_is_tty", lambda: True)  # as on a terminal: progress bars
    assert main(["demo", "--out", str(tmp_path), "--seed", "2"]) == 0
    out, err = capsys.readouterr()
    for bar in ("prior: 100%", "decoder: 100%", "upsampler: 100%", "inversion: 100%", "DDIM: "):
        assert bar in err, (bar, err)
    for name in ("text_to_image.png", "variations.png", "interpolation.png"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out, name
    prompts = (tmp_path / "text_to_image_prompts.txt").read_text().splitlines()
    assert len(prompts) == 4
    w, h = Image.open(tmp_path / "text_to_image.png").size
    assert abs(w - h) < 20  # 4 prompts × 4 images: a square grid
    w, h = Image.open(tmp_path / "interpolation.png").size
    assert w > 5 * h  # 7 pictures in one row


# --- familiar habits: --version, --help, progress, where outputs go, --weights from save_pretrained ---------------


def test_version_prints_the_package_version(capsys):
    import tomllib

    version = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dalle-mini {version}"


@pytest.mark.parametrize("command", ["demo", "generate", "eval", "bench", "info"])
def test_help_gives_every_option_its_meaning_and_default(command, capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    text = sub.format_help()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, (command, action.dest)
        if action.option_strings and action.default is not None and action.default is not False:
            assert f"(default: {action.default})" in " ".join(text.split()), (command, action.dest)
        elif action.option_strings and action.default is None:
            assert "default" in action.help, (command, action.dest)  # a None default is said in words
    assert main([command, "--help"]) == 0 and "show this help message" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    pipe = tiny_pipeline(seed=2)
    return pipe, pipe.save_pretrained(tmp_path_factory.mktemp("tiny") / "pipe")


def test_generate_reads_a_save_pretrained_folder_and_draws_the_api_pictures(tiny_weights, tmp_path, capsys):
    from dalle_mini_core.viz import save_grid

    pipe, folder = tiny_weights
    assert main(["generate", "a red circle", "--weights", str(folder), "--n", "2", "--seed", "5",
                 "--out", str(tmp_path / "cli.png"), *FAST]) == 0
    images = pipe.generate("a red circle", n_per_prompt=2, seed=5, prior_steps=2, decoder_steps=2, upsampler_steps=2)
    save_grid(images, tmp_path / "api.png", nrow=2, scale=4)  # the CLI enlarges 32×32 pictures ×4
    assert (tmp_path / "cli.png").read_bytes() == (tmp_path / "api.png").read_bytes()


def test_generate_shows_a_bar_per_stage_on_a_terminal_and_none_when_quiet(tiny_weights, tmp_path, capsys, monkeypatch):
    _, folder = tiny_weights
    argv = ["generate", "a red circle", "--weights", str(folder), "--out", str(tmp_path / "g.png"), *FAST]
    assert main(argv) == 0
    assert "100%" not in capsys.readouterr().err  # stderr is not a terminal here: no bars
    monkeypatch.setattr("dalle_mini_core.pipeline_io.stderr_is_tty", lambda: True)
    assert main(argv) == 0
    err = capsys.readouterr().err
    for stage in ("prior", "decoder", "upsampler"):
        assert re.search(rf"{stage}: 100%.* 2/2 ", err), (stage, err)
    assert main(argv + ["--quiet"]) == 0
    assert "100%" not in capsys.readouterr().err


def test_outputs_go_to_the_working_directorys_runs_or_dalle_mini_runs(tiny_weights, tmp_path, capsys, monkeypatch):
    import dalle_mini_core
    from dalle_mini_core.paths import runs_dir

    _, folder = tiny_weights
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DALLE_MINI_RUNS", raising=False)
    assert runs_dir() == tmp_path / "runs"
    assert main(["generate", "a red circle", "--weights", str(folder), *FAST]) == 0
    assert (tmp_path / "runs" / "generate.png").is_file()
    monkeypatch.setenv("DALLE_MINI_RUNS", str(tmp_path / "elsewhere"))
    assert main(["generate", "a red circle", "--weights", str(folder), *FAST]) == 0
    assert (tmp_path / "elsewhere" / "generate.png").is_file()
    package = Path(dalle_mini_core.__file__).parent
    assert not (package / "runs").exists() and not (package.parent / "runs" / "generate.png").exists()
