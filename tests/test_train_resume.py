"""`dalle-mini train` killed and started again: it resumes, ends with the weights of a run that was
never stopped (bit for bit, smoke recipe), and its output folder is never inconsistent.

The kill scenario of the reliability probe: a folder holding an earlier complete run (seed 1), a new
run (seed 0) killed with SIGKILL inside the decoder stage, then the same command again. Also a crash
between two stages, and a crash in the middle of moving the finished files into the folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dalle_mini_core import runs as runs_mod
from dalle_mini_core.cli import main
from dalle_mini_core.options import STAGES
from dalle_mini_core.runlog import latest_checkpoint
from dalle_mini_core.stages import train_all
from dalle_mini_core.weights import verify_manifest

REPO = Path(__file__).resolve().parent.parent
STEPS = {"clip": 2, "prior": 2, "decoder": 3, "upsampler": 1}  # smoke recipe, shortened; decoder: 3 checkpoints
STEPS_ARG = ",".join(f"{k}={v}" for k, v in STEPS.items())
WEIGHTS = [f"shapes_{s}.safetensors" for s in STAGES]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def top_files(out: Path) -> dict[str, str]:
    """Every file directly in OUT, by content."""
    return {p.name: sha(p) for p in sorted(out.iterdir()) if p.is_file()}


def assert_consistent(out: Path) -> None:
    """What a loader can observe is sound: every file MANIFEST.json lists exists and matches, and
    the pipeline parts it vouches for come from one run (one seed). Parts it does not list are
    refused by the loaders (checked where it matters)."""
    manifest = json.loads((out / "MANIFEST.json").read_text())
    for name, digest in manifest.items():
        assert (out / name).is_file(), f"{name} is listed but missing"
        assert sha(out / name) == digest, f"{name} does not match the manifest"
    seeds = {json.loads((out / n).read_text())["extra"]["seed"] for n in manifest
             if n.startswith("shapes_") and n.endswith(".json")}
    assert len(seeds) <= 1, f"the manifest vouches for parts of different runs: seeds {seeds}"


def run_all(out: Path, seed: int = 0, steps: dict | None = None, lines: list | None = None) -> dict:
    return train_all(mode="smoke", out_dir=out, seed=seed, max_steps=steps or STEPS,
                     log=(lines.append if lines is not None else (lambda line: None)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run (seed 0)."""
    out = tmp_path_factory.mktemp("reference") / "weights"
    run_all(out)
    assert_consistent(out)
    return out


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """An earlier complete run with other settings (seed 1, one step a stage)."""
    out = tmp_path_factory.mktemp("old") / "weights"
    run_all(out, seed=1, steps={s: 1 for s in STAGES})
    return out


KILLER = textwrap.dedent("""
    # Runs `dalle-mini train ...` and kills itself with SIGKILL right after train.py has written
    # checkpoint KILL_STEP of stage KILL_STAGE: a real kill -9 at a controlled point.
    import os, signal, sys
    import dalle_mini_core.train as T
    save = T.save_step
    def save_then_die(root, step, *args, **kwargs):
        path = save(root, step, *args, **kwargs)
        if root.parent.parent.name == os.environ["KILL_STAGE"] and step == int(os.environ["KILL_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    T.save_step = save_then_die
    from dalle_mini_core.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_inside_a_stage_then_rerun_resumes_bit_identical(tmp_path, reference, old_run, monkeypatch, capsys):
    out = tmp_path / "weights"
    shutil.copytree(old_run, out)
    before = top_files(out)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "KILL_STAGE": "decoder", "KILL_STEP": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), "train", "all", "--mode", "smoke", "--out", str(out),
                           "--steps", STEPS_ARG], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "[decoder] training 3 steps" in proc.stdout and "[upsampler]" not in proc.stdout

    # Killed inside the decoder: the folder still holds the earlier run, byte for byte, and its
    # manifest matches; the finished CLIP and prior wait in train_runs, the decoder has checkpoints.
    assert top_files(out) == before
    assert_consistent(out)
    runs = out / "train_runs" / "shapes"
    assert (runs / "clip" / "final" / "shapes_clip.safetensors").is_file()
    assert (runs / "prior" / "final" / "shapes_prior.safetensors").is_file()
    assert not (runs / "clip" / "run" / "checkpoints").exists()  # a finished stage keeps no checkpoints
    assert latest_checkpoint(runs / "decoder" / "run").name == "step_00000002"

    # The same command, with the folder moved and spelled relative with a trailing slash: the same run.
    moved = tmp_path / "elsewhere" / "w"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    monkeypatch.chdir(moved.parent)
    capsys.readouterr()
    assert main(["train", "all", "--mode", "smoke", "--out", "w/", "--steps", STEPS_ARG]) == 0
    said = capsys.readouterr().out
    assert "[clip] finished by an earlier run" in said and "[prior] finished by an earlier run" in said
    assert "[decoder] resuming at step 2 of 3" in said
    assert "[upsampler] training 1 steps" in said
    for name in WEIGHTS:
        assert sha(moved / name) == sha(reference / name), f"{name} differs from the uninterrupted run"
    assert_consistent(moved)
    assert set(json.loads((moved / "MANIFEST.json").read_text())) >= set(WEIGHTS)
    report = json.loads((moved / "train_report.json").read_text())
    assert report["stages"]["decoder"]["resumed_from"] == 2 and report["stages"]["decoder"]["steps"] == 3


def test_crash_between_stages_and_during_the_moves(tmp_path, reference, monkeypatch):
    out = tmp_path / "weights"
    import dalle_mini_core.banks as banks_mod

    # 1. A crash after the CLIP stage, before the prior's first step (while the bank is embedded).
    def crash(*args, **kwargs):
        raise RuntimeError("killed between stages")

    with monkeypatch.context() as m:
        m.setattr(banks_mod, "embed", crash)
        with pytest.raises(RuntimeError, match="between stages"):
            run_all(out)
    assert not any(p.name.startswith("shapes_") for p in out.iterdir())  # nothing half-new in OUT
    assert (out / "train_runs" / "shapes" / "clip" / "final").is_dir()

    # 2. The rerun skips the CLIP; it crashes again after moving one file of eight into OUT.
    moves: list[str] = []
    real_move = runs_mod._move

    def move_once(src, dst):
        if moves:
            raise OSError("killed during the moves")
        moves.append(Path(dst).name)
        real_move(src, dst)

    lines: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(runs_mod, "_move", move_once)
        with pytest.raises(OSError, match="during the moves"):
            run_all(out, lines=lines)
    assert any(line.startswith("[clip] finished by an earlier run") for line in lines)
    assert moves == ["shapes_clip.safetensors"] and (out / "shapes_clip.safetensors").is_file()
    # The manifest does not vouch for the part that was moved (nor for the ones not yet moved), so
    # a loader refuses the half-moved pipeline instead of mixing it.
    assert_consistent(out)
    with pytest.raises(FileNotFoundError, match="not listed"):
        verify_manifest(out / "MANIFEST.json", files=["shapes_clip.safetensors"])

    # 3. The same call again: it completes the moves, trains nothing, and matches the reference.
    lines = []
    run_all(out, lines=lines)
    assert lines[0].startswith("completed the moves")
    assert not any("training" in line for line in lines)
    for name in WEIGHTS:
        assert sha(out / name) == sha(reference / name), name
    assert_consistent(out)
    verify_manifest(out / "MANIFEST.json", files=WEIGHTS)

    # 4. Once more: every stage is in OUT with these settings, nothing to do.
    lines = []
    run_all(out, lines=lines)
    assert "nothing to do" in lines[0]


def test_other_settings_do_not_touch_unfinished_work(tmp_path, monkeypatch, capsys):
    """An unfinished run is never discarded by a command with other settings; the advice names
    no option that deletes it."""
    out = tmp_path / "weights"
    from dalle_mini_core import train as train_mod

    real = train_mod.train

    def crash_after_saving(model, data, config, **kw):
        real(model, data, config, **kw)
        raise RuntimeError("killed after the last checkpoint")

    with monkeypatch.context() as m:
        m.setattr(train_mod, "train", crash_after_saving)
        # the CLI turns the crash into one error line (no traceback) and a non-zero exit
        assert main(["train", "clip", "--mode", "smoke", "--out", str(out), "--steps", "2"]) != 0
    assert "last checkpoint" in capsys.readouterr().err
    ckpt = latest_checkpoint(out / "train_runs" / "shapes" / "clip" / "run")
    assert ckpt is not None
    capsys.readouterr()
    assert main(["train", "clip", "--mode", "smoke", "--out", str(out), "--steps", "2", "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "seed 0 -> 1" in err and "Nothing was changed" in err and "--out" in err
    assert "overwrite" not in err and "delete" not in err
    assert latest_checkpoint(out / "train_runs" / "shapes" / "clip" / "run") == ckpt  # still there


def test_ctrl_c_keeps_the_steps_done_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    out = tmp_path / "weights"
    from dalle_mini_core.recipes import clip as clip_recipe

    real = clip_recipe.batches

    def interrupted_at_step_1(*args, **kwargs):
        batch_fn = real(*args, **kwargs)

        def fn(step):
            if step == 1:
                raise KeyboardInterrupt
            return batch_fn(step)

        return fn

    with monkeypatch.context() as m:
        m.setattr(clip_recipe, "batches", interrupted_at_step_1)
        assert main(["train", "clip", "--mode", "smoke", "--out", str(out), "--steps", "3"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err
    assert latest_checkpoint(out / "train_runs" / "shapes" / "clip" / "run").name == "step_00000001"  # train.py saved step 1
    assert main(["train", "clip", "--mode", "smoke", "--out", str(out), "--steps", "3"]) == 0
    assert "[clip] resuming at step 1 of 3" in capsys.readouterr().out
