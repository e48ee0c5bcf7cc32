"""The reliability probe's failure rows, re-run: every one now gets a clear error before any work, or correct output.

One parametrized case per row of the probe's sections 1a (``dalle-mini generate``), 1b (the Python
API), 1c (API extras), 1e (``dalle-mini eval``) and 5 (seed aliasing); the test id starts with the
probe's id (appendix A case name, appendix B call name, or its G/A/H/M/S number). "Clear" means
what the probe meant: exit code 2 and one line ``dalle-mini CMD: error: ...`` naming the option or
file (CLI), ValueError/TypeError naming the argument (API), and no traceback.

CLI cases run in-process through ``cli.main``; the weights cases use a tiny pipeline folder
(written by ``save_pretrained``, then damaged), so the whole file runs in seconds. Cases that must
fail *before any work* make loading weights (or evaluating) itself a test failure.
"""
from __future__ import annotations

import errno
import json
import math
import pickle
import re
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dalle_mini_core.cli as cli
import dalle_mini_core.validate as V
from dalle_mini_core.latents import slerp
from dalle_mini_core.pipeline import UnCLIP
from tiny_unclip import D, tiny_pipeline

P = "a small red circle at the top left"
FAST = ["--prior-steps", "2", "--decoder-steps", "2", "--upsampler-steps", "2"]
API_FAST = dict(prior_steps=2, decoder_steps=2, upsampler_steps=2)
EDIT = dict(decoder_steps=3, upsampler_steps=2)
SEED_LOW, SEED_HIGH = r"seed must be a non-negative int", r"seed must be at most 4294967295 "


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clear(rc, err, match):
    """Exit 2, exactly one error line that matches, every stderr line ours, no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert rc == 2 and len(errors) == 1, (rc, err)
    # ours, or argparse's usage lines above its own error line (e.g. `--n 2.5`)
    assert all(line.startswith(("dalle-mini ", "usage: dalle-mini ", " ")) for line in lines), err
    assert re.search(match, errors[0]), errors[0]
    assert len(errors[0]) < 1200
    return errors[0]


@pytest.fixture
def no_work(monkeypatch):
    """Loading weights or evaluating is a test failure: the error must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the bad input was refused")

    monkeypatch.setattr(UnCLIP, "from_pretrained", classmethod(lambda cls, *a, **k: refuse()))
    monkeypatch.setattr("dalle_mini_core.evaluation.report.evaluate", refuse)
    monkeypatch.setattr("dalle_mini_core.data.emoji.EmojiDataset.__init__", refuse)


# --------------------------------------------------------------------------------------------
# 1a. dalle-mini generate: refused before any work
# --------------------------------------------------------------------------------------------

GENERATE_BEFORE_WORK = [
    # clear before too: re-run so that none regresses
    ("prompt_empty", [""], "a prompt is empty"),
    ("prompt_spaces", ["   "], "a prompt is empty"),
    ("prompt_newline_tab", ["\n\t"], "a prompt is empty"),
    ("n_neg", [P, "--n=-1"], "--n must be a positive int, got -1"),
    ("n_float", [P, "--n", "2.5"], "argument --n: invalid int value: '2.5'"),
    ("seed_float", [P, "--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
    ("prior_steps_0", [P, "--prior-steps", 0], "--prior-steps must be a positive int, got 0"),
    ("prior_steps_neg", [P, "--prior-steps=-3"], "--prior-steps must be a positive int, got -3"),
    ("decoder_steps_0", [P, "--decoder-steps", 0], "--decoder-steps must be a positive int, got 0"),
    ("decoder_steps_neg", [P, "--decoder-steps=-3"], "--decoder-steps must be a positive int, got -3"),
    ("upsampler_steps_0", [P, "--upsampler-steps", 0], "--upsampler-steps must be a positive int, got 0"),
    ("upsampler_steps_neg", [P, "--upsampler-steps=-3"], "--upsampler-steps must be a positive int, got -3"),
    ("decoder_guid_neg", [P, "--decoder-guidance=-1"], r"--decoder-guidance must be >= 0"),
    ("out_nosuffix", [P, "--out", "x"], r"--out must end in \.png"),
    # the probe's failures
    ("prompt_ctrl_ansi", ["a small \x1b[31mred\x1b[0m circle\x07 at the top left"], r"prompt holds the control character '\\x1b'"),
    ("prompt_lone_surrogate_bytes", ["a small red circle \udced\udca0\udc80"], "lone surrogate"),
    ("prompt_nul_A7", ["a small red\x00 circle"], r"control character '\\x00'"),
    ("prompt_zero_width_only_A7", ["\u200b\u200b"], "a prompt is empty"),
    ("prompt_punct_only_A7", ["?!..."], "only punctuation"),
    ("prompt_second_of_two", [P, "\x1b[2J"], "prompt 2 holds the control character"),
    ("n_huge_1e9_G5", [P, "--n", 10**9], r"--n must be at most 1024, got 1000000000"),
    ("n_times_prompts", [P, P, "--n", 600], "2 prompts × --n 600 = 1200 images"),
    ("n_0", [P, "--n", 0], r"--n must be a positive int, got 0"),
    ("seed_neg", [P, "--seed", -1], r"--seed must be a non-negative int, got -1"),
    ("seed_2p32_G12", [P, "--seed", 2**32], r"--seed must be at most 4294967295 .*32 bits"),
    ("seed_2p63_G12", [P, "--seed", 2**63], r"--seed must be at most 4294967295"),
    ("seed_2p64", [P, "--seed", 2**64], r"--seed must be at most 4294967295"),
    ("seed_2p100", [P, "--seed", 2**100], r"--seed must be at most 4294967295"),
    ("prior_guid_nan_G1", [P, "--prior-guidance", "nan"], r"--prior-guidance must be a finite number, got nan"),
    ("prior_guid_inf_G1", [P, "--prior-guidance", "inf"], r"--prior-guidance must be a finite number"),
    ("decoder_guid_nan_G1", [P, "--decoder-guidance", "nan"], r"--decoder-guidance must be a finite number"),
    ("decoder_guid_inf_G1", [P, "--decoder-guidance=-inf"], r"--decoder-guidance must be a finite number"),
    ("prior_guid_1e30_G2", [P, "--prior-guidance", "1e30"], r"--prior-guidance must be at most 100 .*got 1e\+30"),
    ("prior_guid_1e6", [P, "--prior-guidance", "1e6"], r"--prior-guidance must be at most 100 .*got 1e\+06"),
    ("decoder_guid_1e30", [P, "--decoder-guidance", "1e30"], r"--decoder-guidance must be at most 100"),
    ("decoder_guid_1e6", [P, "--decoder-guidance", "1e6"], r"--decoder-guidance must be at most 100"),
    ("prior_guid_neg", [P, "--prior-guidance", "-1"], r"--prior-guidance must be >= 0"),
    ("prior_steps_1001", [P, "--prior-steps", 1001], r"--prior-steps must be at most 1000 \(the schedule has 1000 timesteps\)"),
    ("prior_steps_1e9", [P, "--prior-steps", 10**9], r"--prior-steps must be at most 1000 \(the schedule has 1000 timesteps\)"),
    ("decoder_steps_1001", [P, "--decoder-steps", 1001], r"--decoder-steps must be at most 1000 \(the schedule has 1000 timesteps\)"),
    ("decoder_steps_1e9", [P, "--decoder-steps", 10**9], r"--decoder-steps must be at most 1000 \(the schedule has 1000 timesteps\)"),
    ("upsampler_steps_1001", [P, "--upsampler-steps", 1001], r"--upsampler-steps must be at most 1000 \(the schedule has 1000 timesteps\)"),
    ("upsampler_steps_1e9", [P, "--upsampler-steps", 10**9], r"--upsampler-steps must be at most 1000 \(the schedule has 1000 timesteps\)"),
    ("out_txt", [P, "--out", "x.txt"], r"--out must end in \.png or \.jpg or \.jpeg"),
    ("out_empty_string", [P, "--out", ""], "--out is empty"),
]


@pytest.mark.parametrize("argv, match", [c[1:] for c in GENERATE_BEFORE_WORK], ids=[c[0] for c in GENERATE_BEFORE_WORK])
def test_generate_refuses_before_any_work(argv, match, tmp_path, monkeypatch, capsys, no_work):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", *FAST, *argv] + ([] if "--out" in argv else ["--out", tmp_path / "g.png"])
    rc, _, err = run(argv, capsys)
    assert_clear(rc, err, match)
    assert not (tmp_path / "g.png").exists()


def test_generate_out_is_a_folder_or_under_a_file_G3(tmp_path, capsys, no_work):
    (tmp_path / "d.png").mkdir()
    rc, _, err = run(["generate", P, "--out", tmp_path / "d.png"], capsys)  # out_is_dir
    assert_clear(rc, err, r"--out: .*d\.png is a folder")
    (tmp_path / "afile").write_text("x")
    rc, _, err = run(["generate", P, "--out", tmp_path / "afile" / "x.png"], capsys)  # out_parent_is_file
    assert_clear(rc, err, r"--out: .*afile is a file, not a folder")


def test_generate_out_on_a_read_only_disk_G3(tmp_path, capsys, monkeypatch, no_work):
    """out_readonly_mount: the write probe in the folder fails as on a read-only mount (EROFS)."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(V.tempfile, "mkstemp", read_only)
    rc, _, err = run(["generate", P, "--out", tmp_path / "x.png"], capsys)
    assert_clear(rc, err, r"--out: cannot write in .*: Read-only file system")


@pytest.mark.parametrize("env, value, match", [
    ("DALLE_MINI_DEVICE", "quantum", r"DALLE_MINI_DEVICE must name a device such as 'cpu'"),  # env_device_garbage
    ("DALLE_MINI_DEVICE", "cuda", "PyTorch sees no CUDA GPU"),  # env_device_bogus (G11)
    ("DALLE_MINI_MODE", "bogus", "DALLE_MINI_MODE must be one of"),  # env_mode_bad (was accepted)
], ids=["env_device_garbage", "env_device_bogus_G11", "env_mode_bad"])
def test_generate_checks_the_environment_first(env, value, match, monkeypatch, tmp_path, capsys, no_work):
    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 'cuda' is a valid device here")
    monkeypatch.setenv(env, value)
    rc, _, err = run(["generate", P, "--out", tmp_path / "x.png", *FAST], capsys)
    assert_clear(rc, err, match)


# --------------------------------------------------------------------------------------------
# 1a. dalle-mini generate --weights: damaged and crafted folders (G6–G10)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights") / "good"
    tiny_pipeline(seed=1).save_pretrained(folder)
    return folder


def _float_tensor_span(path: Path) -> tuple[int, int]:
    """Byte range of the largest float32 tensor in a safetensors file."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    spans = [(8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
             for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"]
    return max(spans, key=lambda s: s[1] - s[0])


def _edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _damage(folder: Path, case: str) -> None:
    dec, prior, clip = folder / "shapes_decoder.safetensors", folder / "shapes_prior.safetensors", folder / "shapes_clip.json"
    if case.endswith("_noman"):
        (folder / "MANIFEST.json").unlink()
    if case.startswith("trunc_header"):
        dec.write_bytes(dec.read_bytes()[:5])
    elif case.startswith("trunc"):
        dec.write_bytes(dec.read_bytes()[: dec.stat().st_size // 2])
    elif case.startswith("zero"):
        dec.write_bytes(b"")
    elif case.startswith("garbhdr"):
        dec.write_bytes(b"\xff" * 8 + dec.read_bytes()[8:])
    elif case.startswith("pickle_st"):
        dec.write_bytes(pickle.dumps({"weights": list(range(100))}))
    elif case.startswith("nanbytes"):
        a, b = _float_tensor_span(dec)
        blob = bytearray(dec.read_bytes())
        blob[a:b] = b"\xff" * (b - a)  # 0xFFFFFFFF is a NaN float32
        dec.write_bytes(bytes(blob))
    elif case.startswith("bitrot"):
        a, b = _float_tensor_span(prior)
        blob = bytearray(prior.read_bytes())
        for i in range(a, b, 4):
            blob[i] ^= 0x01  # lowest mantissa bit: still finite, silently different
        prior.write_bytes(bytes(blob))
    elif case == "json_array":
        (folder / "shapes_prior.json").write_text("[1, 2]")
    elif case == "json_syntax":
        (folder / "shapes_prior.json").write_text('{"format": ')
    elif case == "json_class_missing":
        _edit_json(folder / "shapes_prior.json", lambda m: m["config"].update({"class": "no_such_module.Cfg"}))
    elif case == "json_class_os":
        _edit_json(folder / "shapes_prior.json", lambda m: m["config"].update({"class": "os.system"}))
    elif case == "json_class_this":
        _edit_json(folder / "shapes_prior.json", lambda m: m["config"].update({"class": "this.Cfg"}))
    elif case == "json_config_null":
        _edit_json(folder / "shapes_prior.json", lambda m: m.update({"config": None}))
    elif case == "json_clip_mlp_str":
        _edit_json(clip, lambda m: m["config"]["fields"].update({"mlp_ratio": "four" * 300}))
    elif case == "manifest_invalid":
        (folder / "MANIFEST.json").write_text("{not json")
    elif case == "manifest_list":
        (folder / "MANIFEST.json").write_text("[]")
    elif case == "manifest_unlisted":
        _edit_json(folder / "MANIFEST.json", lambda m: m.pop("shapes_prior.json"))
    elif case == "badsha":
        _edit_json(folder / "MANIFEST.json", lambda m: m.update({"shapes_prior.safetensors": "0" * 64}))
    elif case == "json_bad_format":
        _edit_json(folder / "shapes_prior.json", lambda m: m.update({"format": "other"}))
    elif case == "json_unknown_field":
        _edit_json(folder / "shapes_prior.json", lambda m: m["config"]["fields"].update({"bogus": 1}))
    elif case == "json_str_width":
        _edit_json(folder / "shapes_prior.json", lambda m: m["config"]["fields"].update({"width": "256"}))
    elif case == "json_missing":
        (folder / "shapes_clip.json").unlink()
    elif case == "empty":
        for f in folder.iterdir():
            f.unlink()
    elif case != "good":
        raise AssertionError(case)
    if case.startswith("json_") and (folder / "MANIFEST.json").exists():  # a crafted folder ships a matching manifest
        from dalle_mini_core.weights import write_manifest

        write_manifest(folder, [p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors")
                                and p.name != "MANIFEST.json"])


WEIGHTS_CASES = [  # probe case, what the one error line must say
    ("weights_trunc_noman_G6", r"shapes_decoder"),
    ("weights_trunc_header_noman_G6", r"shapes_decoder"),
    ("weights_zero_noman_G6", r"shapes_decoder"),
    ("weights_garbhdr_noman_G6", r"shapes_decoder"),
    ("weights_pickle_st_G6", r"shapes_decoder"),
    ("weights_nanbytes_noman_G7", r"shapes_decoder.safetensors holds NaN/inf weights"),
    ("weights_json_array_G9", r"shapes_prior"),
    ("weights_json_syntax", r"shapes_prior.*not valid JSON"),
    ("weights_manifest_invalid", r"MANIFEST\.json.*not valid JSON"),
    ("weights_pickle_st_man", r"shapes_decoder\.safetensors is corrupt"),
    # clear before too: re-run so that none regresses
    ("weights_badsha", r"shapes_prior\.safetensors is corrupt or was changed"),
    ("weights_bitrot_man", r"shapes_prior\.safetensors is corrupt or was changed"),
    ("weights_garbhdr_man", r"shapes_decoder\.safetensors is corrupt or was changed"),
    ("weights_nanbytes_man", r"shapes_decoder\.safetensors is corrupt or was changed"),
    ("weights_trunc_header_man", r"shapes_decoder\.safetensors is corrupt or was changed"),
    ("weights_trunc_man", r"shapes_decoder\.safetensors is corrupt or was changed"),
    ("weights_zero_man", r"shapes_decoder\.safetensors is corrupt or was changed"),
    ("weights_manifest_list", r"MANIFEST\.json must hold a JSON object"),
    ("weights_manifest_unlisted", r"shapes_prior\.json is not listed in"),
    ("weights_json_bad_format", r"shapes_prior\.json is not a dalle-mini-core checkpoint"),
    ("weights_empty", r"no shapes pipeline weights in .*dalle-mini train all"),
]


@pytest.mark.parametrize("case, match", WEIGHTS_CASES, ids=[c[0] for c in WEIGHTS_CASES])
def test_generate_refuses_a_damaged_or_crafted_weights_folder(case, match, good_weights, tmp_path, capsys):
    folder = tmp_path / "w"
    shutil.copytree(good_weights, folder)
    name = re.sub(r"^weights_|_G\d+$", "", case)
    _damage(folder, name if name != "pickle_st" else "pickle_st_noman")
    rc, out, err = run(["generate", P, "--weights", folder, "--out", tmp_path / "g.png", *FAST], capsys)
    assert_clear(rc, err, match)
    assert not (tmp_path / "g.png").exists()


# A checkpoint's weights file carries its own class and config (checkpoints.save_checkpoint writes
# them into the safetensors header, so the pair is one atomic unit). A JSON beside it that was
# edited, crafted or removed is then overridden by that copy, with a one-line warning naming the
# file: correct pictures, and nothing the JSON names is ever imported.
JSON_OVERRIDDEN_CASES = [
    ("weights_json_class_missing_G9", r"shapes_prior"),
    ("weights_json_class_os_G9", r"shapes_prior"),
    ("weights_json_class_this_G10", r"shapes_prior"),
    ("weights_json_config_null_G9", r"shapes_prior"),
    ("weights_json_clip_mlp_str", r"shapes_clip"),
    ("weights_json_unknown_field", r"shapes_prior"),
    ("weights_json_str_width", r"shapes_prior"),
    ("weights_json_missing", r"shapes_clip"),
]


@pytest.mark.parametrize("case, part", JSON_OVERRIDDEN_CASES, ids=[c[0] for c in JSON_OVERRIDDEN_CASES])
def test_generate_uses_the_weights_own_config_over_an_edited_json(case, part, good_weights, tmp_path, capsys):
    import sys

    folder = tmp_path / "w"
    shutil.copytree(good_weights, folder)
    _damage(folder, re.sub(r"^weights_|_G\d+$", "", case))
    imported_before = "this" in sys.modules
    rc, _, err = run(["generate", P, "--weights", folder, "--out", tmp_path / "g.png", *FAST], capsys)
    assert rc == 0, err
    assert "Traceback" not in err and ": error: " not in err
    warnings = [line for line in err.splitlines() if ": warning: " in line and part in line]
    if case != "weights_json_missing":  # nothing to disagree with when the JSON is gone
        assert warnings and "stored with the weights" in warnings[0], err
    assert (tmp_path / "g.png").exists()
    assert ("this" in sys.modules) == imported_before  # G10: the module the JSON names was not imported


def test_generate_weights_folder_missing_or_a_file(tmp_path, capsys):
    """weights_missing, weights_is_file: clear before too."""
    rc, _, err = run(["generate", P, "--weights", tmp_path / "nope", "--out", tmp_path / "g.png", *FAST], capsys)
    assert_clear(rc, err, r"weights folder .*nope not found")
    (tmp_path / "MANIFEST.json").write_text("{}")
    rc, _, err = run(["generate", P, "--weights", tmp_path / "MANIFEST.json", "--out", tmp_path / "g.png", *FAST], capsys)
    assert_clear(rc, err, r"weights folder .*MANIFEST\.json not found")


def test_generate_prompt_too_long_after_loading(good_weights, tmp_path, capsys):
    """prompt_long500: clear before too (the tokenizer's length is known once CLIP's config is read)."""
    rc, _, err = run(["generate", "red " * 500, "--weights", good_weights, "--out", tmp_path / "g.png", *FAST], capsys)
    assert_clear(rc, err, r"needs \d+ tokens")


def test_generate_warns_about_a_folder_without_manifest_G8(good_weights, tmp_path, capsys):
    """weights_bitrot_noman: nothing can tell rotten weights from good ones without a manifest, so it says so."""
    folder = tmp_path / "w"
    shutil.copytree(good_weights, folder)
    _damage(folder, "bitrot_noman")
    rc, out, err = run(["generate", P, "--weights", folder, "--out", tmp_path / "g.png", *FAST], capsys)
    assert rc == 0 and (tmp_path / "g.png").is_file()
    assert re.search(r"^dalle-mini generate: warning: .*has no MANIFEST\.json: its files are loaded unchecked", err, re.M)
    assert "Traceback" not in err


def test_generate_with_good_weights_escapes_terminal_codes_in_its_report(good_weights, tmp_path, capsys):
    """prompt_zero_width: accepted (the tokenizer reads it), but the echo shows the invisible characters escaped."""
    prompt = "a small red\u200b circle at the top left\u202e"
    rc, out, err = run(["generate", prompt, "--weights", good_weights, "--out", tmp_path / "g.png", "--n", 2, *FAST],
                       capsys)
    assert rc == 0 and (tmp_path / "g.png").is_file()
    assert "\u202e" not in out and "\u200b" not in out
    assert "row 1: a small red\\u200b circle at the top left\\u202e" in out


def test_generate_keeps_the_old_picture_when_the_disk_fills_G4(good_weights, tmp_path, capsys, monkeypatch):
    """out_dev_full / G4: the grid goes to a temp file, then os.replace; ENOSPC mid-write leaves the old file whole."""
    out = tmp_path / "grid.png"
    assert run(["generate", P, "--weights", good_weights, "--out", out, "--n", 1, *FAST], capsys)[0] == 0
    before = out.read_bytes()
    from PIL import Image

    def full_disk(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG partial")  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    rc, _, err = run(["generate", P, "--weights", good_weights, "--out", out, "--n", 3, *FAST], capsys)
    assert_clear(rc, err, "No space left on device")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temp file left behind


def test_generate_stops_quietly_when_stdout_is_closed_G13(good_weights, tmp_path, capsys, monkeypatch):
    """`dalle-mini generate ... | head -0`: the picture is written, then printing hits a closed pipe."""
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    rc = cli.main(["generate", P, "--weights", str(good_weights), "--out", str(tmp_path / "g.png"), *FAST])
    err = capsys.readouterr().err
    assert rc == 141 and (tmp_path / "g.png").is_file()
    assert "Traceback" not in err and "error" not in err


# --------------------------------------------------------------------------------------------
# dalle-mini demo: refused before any work (its damaged-data error is one line too)
# --------------------------------------------------------------------------------------------


def test_demo_refuses_bad_options_before_any_work(tmp_path, capsys, no_work):
    rc, _, err = run(["demo", "--seed", 2**32, "--out", tmp_path / "o"], capsys)
    assert_clear(rc, err, r"--seed must be at most 4294967295")
    (tmp_path / "file").write_text("x")
    rc, _, err = run(["demo", "--out", tmp_path / "file"], capsys)
    assert_clear(rc, err, r"--out: .*file is a file, not a folder")


def test_demo_with_damaged_emoji_data_fails_in_one_line_before_drawing(tmp_path, capsys, monkeypatch):
    """§6's demo row: DataIntegrityError (a RuntimeError) was a traceback, after three pictures were drawn."""
    from dalle_mini_core.data.emoji import DataIntegrityError

    def damaged(self, *args, **kwargs):
        raise DataIntegrityError("emoji.npz: sha256 abc... but MANIFEST expects def... (corrupted, truncated or stale "
                                 "file); rebuild it with scripts/build_emoji.py")

    monkeypatch.setattr("dalle_mini_core.data.emoji.EmojiDataset.__init__", damaged)
    rc, _, err = run(["demo", "--out", tmp_path / "o"], capsys)
    assert_clear(rc, err, r"emoji\.npz: sha256 .*rebuild it")
    assert list((tmp_path / "o").iterdir()) == []  # nothing drawn


# --------------------------------------------------------------------------------------------
# 1e. dalle-mini eval
# --------------------------------------------------------------------------------------------

EVAL_CASES = [
    ("n_huge_1e8", ["--n", 10**8], r"--n must be at most 2000"),
    ("n_0", ["--n", 0], r"--n must be a positive int, got 0"),
    ("n_neg", ["--n", -1], r"--n must be a positive int, got -1"),
    ("prompts_0", ["--prompts", 0], r"--prompts must be a positive int, got 0"),
    ("prompts_55", ["--prompts", 55], r"--prompts must be at most 54 \(there are 54 held-out prompts\)"),
    ("per_prompt_0", ["--per-prompt", 0], r"--per-prompt must be a positive int"),
    ("per_prompt_huge", ["--per-prompt", 10**6], r"--per-prompt must be at most 16"),
    ("seed_neg", ["--seed", -1], r"--seed must be a non-negative int"),
    ("seed_2p32", ["--seed", 2**32], r"--seed must be at most 4294967295"),
]


@pytest.mark.parametrize("argv, match", [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_eval_refuses_before_any_work(argv, match, capsys, no_work):
    rc, _, err = run(["eval", "shapes", *argv], capsys)
    assert_clear(rc, err, match)


def test_eval_json_is_a_folder_before_any_work(tmp_path, capsys, no_work):
    rc, _, err = run(["eval", "shapes", "--json", tmp_path], capsys)
    assert_clear(rc, err, r"--json: .* is a folder")


def test_eval_writes_strict_json_atomically(tmp_path, capsys, monkeypatch):
    """The report is written after the work through a temp file; NaN becomes null (strict JSON)."""
    monkeypatch.setattr("dalle_mini_core.evaluation.report.evaluate", lambda *a, **k: {"clip": {"top1": 0.5, "bad": math.nan}})
    target = tmp_path / "r.json"
    rc, out, _ = run(["eval", "shapes", "--json", target, "--n", 3], capsys)
    assert rc == 0 and str(target) in out
    assert json.loads(target.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}")) == \
        {"clip": {"top1": 0.5, "bad": None}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# --------------------------------------------------------------------------------------------
# 1b, 1c, 5. The Python API
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def img(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def unit(n: int = 1) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, D, generator=torch.Generator().manual_seed(0)), dim=-1)


API_CASES = [  # probe id, call, error, message
    ("generate.prior_guidance.1e30_A1", lambda p: p.generate(P, prior_guidance=1e30, **API_FAST), ValueError,
     r"prior_guidance must be at most 100 "),
    ("generate.prior_guidance.1e6", lambda p: p.generate(P, prior_guidance=1e6, **API_FAST), ValueError, "prior_guidance"),
    ("generate.decoder_guidance.1e30", lambda p: p.generate(P, decoder_guidance=1e30, **API_FAST), ValueError,
     "decoder_guidance"),
    ("generate.decoder_guidance.1e6", lambda p: p.generate(P, decoder_guidance=1e6, **API_FAST), ValueError,
     "decoder_guidance"),
    ("generate.prior_guidance.nan", lambda p: p.generate(P, prior_guidance=math.nan), ValueError,
     "prior_guidance must be a finite number"),
    ("generate.decoder_guidance.inf", lambda p: p.generate(P, decoder_guidance=math.inf), ValueError,
     "decoder_guidance must be a finite number"),
    ("generate.prior_guidance.str", lambda p: p.generate(P, prior_guidance="2"), TypeError, "prior_guidance must be a number"),
    ("generate.prior_guidance.tensor_1d", lambda p: p.generate(P, prior_guidance=torch.ones(2)), TypeError,
     "0-d torch scalar"),
    ("decode.emb_nan_A2", lambda p: p.decode(torch.full((1, D), math.nan)), ValueError, "image_emb holds NaN"),
    ("decode.emb_inf_A2", lambda p: p.decode(torch.full((1, D), math.inf)), ValueError, "image_emb holds NaN"),
    ("decode.xT_nan_A2", lambda p: p.decode(unit(), x_T=torch.full((1, 3, 16, 16), math.nan), **EDIT), ValueError,
     "x_T holds NaN"),
    ("decode.emb_int", lambda p: p.decode(torch.ones(1, D, dtype=torch.long)), TypeError, "image_emb must be a float"),
    ("slerp.nan_A3", lambda p: slerp(torch.full((4,), math.nan), torch.ones(4), 0.5), ValueError, "a holds NaN"),
    ("slerp.t_nan", lambda p: slerp(torch.ones(4), torch.arange(4.0), math.nan), ValueError, "t holds NaN"),
    ("variations.image.meta_device_A4", lambda p: p.variations(img().to("meta")), ValueError, "meta device"),
    ("from_pretrained.device_bogus_A4", lambda p: UnCLIP.from_pretrained(device="quantum"), ValueError,
     "device must name a device"),
    ("variations.seed.neg_A5", lambda p: p.variations(img(), 1, seed=-1, **EDIT), ValueError, SEED_LOW),
    ("variations.seed.float_A5", lambda p: p.variations(img(), 1, seed=1.7, **EDIT), ValueError, SEED_LOW),
    ("variations.seed.none_A5", lambda p: p.variations(img(), 1, seed=None, **EDIT), ValueError, SEED_LOW),
    ("variations.seed.2p64", lambda p: p.variations(img(), 1, seed=2**64, **EDIT), ValueError,
     r"seed must be at most 4294967295"),
    ("interpolate.seed.neg_A5", lambda p: p.interpolate(img(), img(1), 3, seed=-1, **EDIT), ValueError, "seed"),
    ("text_diff.seed.float_A5", lambda p: p.text_diff(img(), "a red circle", "a blue circle", [0.1], seed=1.5, **EDIT),
     ValueError, "seed"),
    ("decode.seed.none_A5", lambda p: p.decode(unit(), seed=None, **EDIT), ValueError, SEED_LOW),
    ("decode.seed.float_A5", lambda p: p.decode(unit(), seed=1.9, **EDIT), ValueError, SEED_LOW),
    ("decode.seed.neg_A5", lambda p: p.decode(unit(), seed=-1, **EDIT), ValueError, SEED_LOW),
    ("generate.use_prior.str_A6", lambda p: p.generate(P, use_prior="no"), TypeError, "use_prior must be True or False"),
    ("generate.upsample.str", lambda p: p.generate(P, upsample="yes"), TypeError, "upsample must be"),
    ("generate.prompt.zero_width_only_A7", lambda p: p.generate("\u200b\u200b"), ValueError, "a prompt is empty"),
    ("generate.prompt.bom_only_A7", lambda p: p.generate("\ufeff"), ValueError, "a prompt is empty"),
    ("generate.prompt.punct_only_A7", lambda p: p.generate("...!?"), ValueError, "only punctuation"),
    ("generate.prompt.nul_char_A7", lambda p: p.generate("a red\x00 circle"), ValueError, "control character"),
    ("generate.prompt.lone_surrogate_A7", lambda p: p.generate("a red \ud800 circle"), ValueError, "lone surrogate"),
    ("interpolate.decoder_steps_1e9_H1", lambda p: p.interpolate(img(), img(), 3, decoder_steps=10**9), ValueError,
     r"decoder_steps must be at most 100 "),
    ("text_diff.decoder_steps_1e9_H2",
     lambda p: p.text_diff(img(), "a red circle", "a blue circle", [0.1], decoder_steps=10**9), ValueError,
     r"decoder_steps must be at most 100 "),
    ("invert.steps_1e9_H3", lambda p: p.invert(img(), steps=10**9), ValueError, r"steps must be at most 100 "),
    ("invert.steps1001", lambda p: p.invert(img(), steps=1001), ValueError, r"steps must be at most 100 "),
    ("decoder.inversion_schedule_1e9", lambda p: p.decoder.inversion_schedule(10**9), ValueError, "at most 100"),
    ("from_pretrained.dataset_traversal_M1", lambda p: UnCLIP.from_pretrained("../../x/nanbytes_noman/shapes"),
     FileNotFoundError, "is not a folder"),
    ("from_pretrained.folder_int", lambda p: UnCLIP.from_pretrained("shapes", folder=3), TypeError,
     "folder must be a path"),
    ("generate.seed.2p32_S1", lambda p: p.generate(P, seed=2**32), ValueError, r"seed must be at most 4294967295"),
    ("generate.seed.2p63_S1", lambda p: p.generate(P, seed=2**63), ValueError, SEED_HIGH),
    ("generate.seed.2p64m1_S1", lambda p: p.generate(P, seed=2**64 - 1), ValueError, SEED_HIGH),
    ("generate.seed.np_uint64_max_S1", lambda p: p.generate(P, seed=np.uint64(2**64 - 1)), ValueError,
     SEED_HIGH),
    ("generate.seed.2p64", lambda p: p.generate(P, seed=2**64), ValueError, SEED_HIGH),
    ("generate.n_per_prompt.1e9", lambda p: p.generate(P, n_per_prompt=10**9), ValueError,
     r"n_per_prompt must be at most 1024"),
    ("generate.n_times_prompts", lambda p: p.generate([P] * 3, n_per_prompt=500), ValueError, "1500 images"),
    ("generate.best_of.1e6", lambda p: p.generate(P, best_of=10**6), ValueError, r"best_of must be at most 64"),
    ("generate.prior_steps_over_schedule", lambda p: p.generate(P, prior_steps=101), ValueError,
     r"prior_steps must be at most 100 \(the schedule has 100 timesteps\)"),
    ("variations.n.1e9", lambda p: p.variations(img(), 10**9), ValueError, r"n must be at most 1024"),
    ("interpolate.frames.1e9", lambda p: p.interpolate(img(), img(), 10**9), ValueError, r"n_frames must be at most 1024"),
    ("text_diff.strengths_generator", lambda p: p.text_diff(img(), "a red circle", "a blue", (s for s in [0.1])),
     ValueError, "strengths must be a non-empty sequence"),
    ("text_diff.strengths_2000", lambda p: p.text_diff(img(), "a red circle", "a blue", [0.1] * 2000), ValueError,
     "at most 1024"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_refuses_before_any_work(call, error, match, pipe, monkeypatch):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started before the bad input was refused")

    for part in (pipe.prior, pipe.decoder, pipe.upsampler):
        monkeypatch.setattr(part, "forward", no_sampling)
    t0 = time.perf_counter()
    with pytest.raises(error, match=match):
        call(pipe)
    assert time.perf_counter() - t0 < 30  # H1–H3 hung for over 60 s; a generous bound for a busy machine


def test_api_cuda_without_a_gpu_is_a_clear_error_A4():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU"):
        UnCLIP.from_pretrained(device="cuda")


def test_torch_scalars_are_numbers_A8(pipe):
    """The three false rejects: 0-d tensors as guidance and a tensor of strengths give the float's pictures."""
    want = pipe.generate(P, seed=2, prior_guidance=2.0, decoder_guidance=2.0, **API_FAST)
    got = pipe.generate(P, seed=2, prior_guidance=torch.tensor(2.0), decoder_guidance=torch.tensor(2.0), **API_FAST)
    assert torch.equal(want, got)
    assert torch.equal(want, pipe.generate(P, seed=2, prior_guidance=np.float32(2.0), decoder_guidance=np.int64(2),
                                           **API_FAST))
    a = pipe.text_diff(img(), "a red circle", "a blue circle", [0.0, 0.5], upsample=False, **EDIT)
    b = pipe.text_diff(img(), "a red circle", "a blue circle", torch.tensor([0.0, 0.5]), upsample=False, **EDIT)
    assert torch.allclose(a, b, atol=1e-5)


def test_torch_cpu_generator_keeps_32_bits_of_a_seed_hence_the_bound_S1():
    """Why seeds stop at 2**32 − 1: seed 2**32 draws seed 0's numbers (the probe's G12/S1)."""
    draw = lambda s: torch.randn(8, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert torch.equal(draw(2**32), draw(0))
    assert not torch.equal(draw(V.MAX_SEED), draw(0))


def test_the_largest_seed_works_and_differs_from_seed_zero(pipe):
    top = pipe.generate(P, seed=V.MAX_SEED, **API_FAST)
    assert not torch.equal(top, pipe.generate(P, seed=0, **API_FAST))
    assert torch.equal(top, pipe.generate(P, seed=np.uint32(V.MAX_SEED), **API_FAST))
