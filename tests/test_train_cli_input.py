"""`dalle-mini train` refuses bad input with one clear line (exit code 2, naming the option) before any
work: one case per row of the reliability probe's §1d table (22 bad inputs), plus its valid edge."""
from __future__ import annotations

import errno
import json
import shutil
import tempfile

import pytest

from dalle_mini_core import banks as banks_mod
from dalle_mini_core import stages as stages_mod
from dalle_mini_core.cli import main


@pytest.fixture
def no_work(monkeypatch):
    """Any rendering or training fails the test: the errors must come before the work."""
    import dalle_mini_core.train as train_mod

    def work(*args, **kwargs):
        raise AssertionError("work started before the input was refused")

    for module, name in ((banks_mod, "render"), (banks_mod, "embed"), (stages_mod, "fit_steps"),
                         (train_mod, "train")):
        monkeypatch.setattr(module, name, work)


def truncated_clip(folder):
    """A folder whose shapes_clip.safetensors was cut short (no manifest)."""
    from dalle_mini_core.checkpoints import save_checkpoint
    from dalle_mini_core.clip import CLIPModel, clip_config

    folder.mkdir()
    save_checkpoint(folder / "shapes_clip", CLIPModel(clip_config("shapes")), clip_config("shapes"))
    data = (folder / "shapes_clip.safetensors").read_bytes()
    (folder / "shapes_clip.safetensors").write_bytes(data[: len(data) // 3])


def read_only(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def disk_of_200_kb(monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 200_000, 200_000))


# (probe row, argv after `train`, what the message must say, set-up). OUT is the test's folder.
ROWS = [
    # clear before (13)
    ("steps-0", ["clip", "--steps", "0"], "--steps", None),
    ("steps-minus-1", ["clip", "--steps", "-1"], "--steps", None),
    ("steps-abc", ["clip", "--steps", "abc"], "--steps", None),
    ("steps-clip=0", ["clip", "--steps", "clip=0"], "--steps", None),
    ("steps-decoder=5-other-stage", ["clip", "--steps", "decoder=5"], "--steps names stages that are not being trained", None),
    ("steps-nan", ["clip", "--steps", "nan"], "--steps", None),
    ("budget-0", ["clip", "--budget", "0"], "--budget must be a positive, finite number of seconds, got 0.0", None),
    ("budget-minus-5", ["clip", "--budget", "-5"], "--budget must be a positive", None),
    ("budget-nan", ["clip", "--budget", "nan"], "--budget must be a positive, finite", None),
    ("bank-minus-1", ["clip", "--bank", "-1"], "--bank must be a whole number of scenes, at least 1", None),
    ("seed-minus-1", ["clip", "--seed", "-1"], "--seed must be a whole number from 0 to 4294967295", None),
    ("seed-2**64", ["clip", "--seed", str(2**64)], "--seed must be a whole number from 0", None),
    ("decoder-without-clip", ["decoder"], "has no trained CLIP", None),
    # tracebacks before (7)
    ("steps-inf", ["clip", "--steps", "inf"], "--steps takes a whole number", None),
    ("budget-inf", ["clip", "--budget", "inf"], "--budget must be a positive, finite", None),
    ("out-is-a-file", ["clip"], "is a file, not a folder", "file"),
    ("out-read-only", ["clip"], "cannot be written to (Read-only file system)", "read-only"),
    ("out-disk-full", ["clip"], "MB of free disk space are needed", "disk-full"),
    ("prior-truncated-clip", ["prior"], "shapes_clip.safetensors cannot be loaded", "truncated"),
    ("bank-100000000", ["clip", "--bank", "100000000"], "GB of memory", None),
    # silent wrong before (1)
    ("steps-2.5", ["clip", "--steps", "2.5"], "--steps takes a whole number, got '2.5'", None),
    # accepted before: 0 meant the default (1)
    ("bank-0", ["clip", "--bank", "0"], "--bank must be a whole number of scenes, at least 1", None),
]


@pytest.mark.parametrize("argv, message, setup", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_train_input_is_one_clear_line_before_any_work(argv, message, setup, tmp_path, capsys, monkeypatch,
                                                            no_work):
    out = tmp_path / "out"
    if setup == "file":
        out.write_text("not a folder")
    elif setup == "read-only":
        read_only(monkeypatch)
    elif setup == "disk-full":
        disk_of_200_kb(monkeypatch)
    elif setup == "truncated":
        truncated_clip(out)
    code = main(["train", argv[0], "--mode", "smoke", "--out", str(out), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("dalle-mini train: error: ") and message in err, err
    assert "Traceback" not in err
    assert not (out / "train_runs").exists() if out.is_dir() else True


def test_bank_of_one_scene_trains(tmp_path, capsys):
    """The probe's valid edge: --bank 1 works."""
    assert main(["train", "clip", "--mode", "smoke", "--out", str(tmp_path), "--bank", "1", "--steps", "1"]) == 0
    assert (tmp_path / "shapes_clip.safetensors").is_file()
    report = json.loads((tmp_path / "train_report.json").read_text())
    assert report["stages"]["clip"]["bank"] == 1 and report["stages"]["clip"]["steps"] == 1
