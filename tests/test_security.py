"""Untrusted files: each attack of the reliability probe, reproduced harmlessly and refused.

A payload here only creates a marker file in the test's temporary folder; each test asserts the
marker is absent after the load was refused, and that the refusal is one clear line that names
the file and what was refused.

* C2 — a weights JSON names a module of its own (``payload.py`` shipped in the folder, with a
  matching MANIFEST) as a config class, a nested config class or the model class;
* C3 — ``model_class`` names a callable that ``dalle-mini eval --weights`` would call;
* G10 — a JSON names any installed module (``this``), which used to be imported;
* C1 — an open_clip ``.pt`` pickle whose first opcodes make the weights-only unpickler raise
  TypeError, the case where open_clip retries a full unpickle;
* M1 — a shipped-weights "name" that is a relative path outside data/weights.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dalle_mini_core import checkpoints, weights
from dalle_mini_core.checkpoints import load_checkpoint, save_checkpoint
from dalle_mini_core.clip import CLIPConfig, CLIPModel, load_open_clip_checkpoint
from dalle_mini_core.paths import data_dir
from dalle_mini_core.registry import UnknownClassError
from dalle_mini_core.unet import UNet, UNetConfig
from dalle_mini_core.weights import load_from_folder, load_pretrained, write_manifest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = data_dir() / "weights"
PARTS = ("clip", "prior", "decoder", "upsampler")
TINY_CLIP = CLIPConfig(image_size=16, patch_size=4, vision_width=32, vision_layers=1, vision_head_width=16,
                       text_width=32, text_layers=1, text_heads=2, embed_dim=16, context_length=16)


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg, f"the message should be one line: {msg!r}"
    return msg


def _plant_payload(root: Path, package: str = "dl_weights") -> Path:
    """``root/<package>/payload.py``: importing it creates marker ``imported``, calling
    ``payload.run`` creates ``called``; ``payload.Cfg`` re-exports the real PriorConfig, as the
    probe's payload did (so an import-based loader would go on as if nothing happened)."""
    folder = root / package
    folder.mkdir(parents=True, exist_ok=True)
    markers = root / "markers"
    markers.mkdir(exist_ok=True)
    (folder / "payload.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(markers / 'imported')!r}).touch()\n"
        "from dalle_mini_core.prior import PriorConfig as Cfg\n"
        "def run(*args, **kwargs):\n"
        f"    pathlib.Path({str(markers / 'called')!r}).touch()\n"
        "    return Cfg\n"
    )
    return markers


def _assert_nothing_ran(markers: Path, package: str = "dl_weights") -> None:
    assert not list(markers.iterdir()), f"payload ran: {sorted(p.name for p in markers.iterdir())}"
    assert f"{package}.payload" not in sys.modules


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=2))


@pytest.fixture()
def attacker_folder(tmp_path, monkeypatch):
    """A copy of the shipped shapes pipeline in ``tmp/dl_weights`` next to its ``payload.py``,
    with ``tmp`` on sys.path (as the cwd is for ``python -m`` and in Jupyter)."""
    markers = _plant_payload(tmp_path)
    folder = tmp_path / "dl_weights"
    for p in PARTS:
        for suffix in (".safetensors", ".json"):
            shutil.copy(SHIPPED / f"shapes_{p}{suffix}", folder / f"shapes_{p}{suffix}")
    monkeypatch.syspath_prepend(str(tmp_path))
    return folder, markers


SMALL_UNET = UNetConfig(image_size=8, base_channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(),
                        num_heads=1, num_groups=4)


def _tiny_unet_checkpoint(folder: Path, name: str = "tiny", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(folder / name, UNet(SMALL_UNET), SMALL_UNET)


# --- C2: a class name in a weights JSON must not import anything ------------------------------


def test_c2_config_class_naming_a_module_in_the_folder_is_refused(tmp_path, monkeypatch):
    markers = _plant_payload(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    stem = _tiny_unet_checkpoint(tmp_path / "dl_weights")
    _edit_json(stem.with_suffix(".json"), lambda m: m["config"].update({"class": "dl_weights.payload.Cfg"}))
    # the weights header carries the genuine config; an attacker rewrites it as well
    _rewrite_header_config(stem, "dl_weights.payload.Cfg")
    with pytest.raises(UnknownClassError) as err:
        load_checkpoint(stem, UNet)
    msg = _one_line(err.value)
    assert "'dl_weights.payload.Cfg'" in msg and "tiny" in msg and "never imports" in msg
    _assert_nothing_ran(markers)


def _rewrite_header_config(stem: Path, config_class: str | None = None, model_class: str | None = None) -> None:
    """Rewrite the model class / config class stored in a checkpoint's safetensors header."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    st = stem.with_suffix(".safetensors")
    with safe_open(str(st), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if checkpoints._EMBED_KEY not in header:  # e.g. the shipped files, written before headers carried it
        return
    record = json.loads(header[checkpoints._EMBED_KEY])
    if config_class is not None and record["config"] is not None:
        record["config"]["class"] = config_class
    if model_class is not None:
        record["model_class"] = model_class
    header[checkpoints._EMBED_KEY] = json.dumps(record)
    save_file(tensors, str(st), metadata=header)


def test_c2_nested_dataclass_naming_a_module_is_refused(attacker_folder):
    folder, markers = attacker_folder
    # shapes_decoder.json nests its U-Net config as {"__dataclass__": "dalle_mini_core.unet.UNetConfig", ...}
    _edit_json(folder / "shapes_decoder.json",
               lambda m: m["config"]["fields"]["unet"].update({"__dataclass__": "dl_weights.payload.Cfg"}))
    write_manifest(folder)  # the attacker ships a matching manifest
    from dalle_mini_core.decoder import Decoder, DecoderConfig

    with pytest.raises(UnknownClassError) as err:
        load_from_folder(folder, "shapes_decoder", Decoder)
    msg = _one_line(err.value)
    assert "shapes_decoder.json" in msg and "'dl_weights.payload.Cfg'" in msg
    # the same with the config class given explicitly: the nested class still never imports
    with pytest.raises(UnknownClassError):
        load_from_folder(folder, "shapes_decoder", Decoder, config_cls=DecoderConfig)
    _assert_nothing_ran(markers)


def test_c2_from_pretrained_folder_with_payload_and_matching_manifest_is_refused(attacker_folder):
    from dalle_mini_core.pipeline import UnCLIP

    folder, markers = attacker_folder
    _edit_json(folder / "shapes_prior.json", lambda m: m["config"].update({"class": "dl_weights.payload.Cfg"}))
    write_manifest(folder)
    with pytest.raises(UnknownClassError) as err:
        UnCLIP.from_pretrained("shapes", folder=folder)
    msg = _one_line(err.value)
    assert "shapes_prior.json names the config class 'dl_weights.payload.Cfg'" in msg
    _assert_nothing_ran(markers)


def test_c2_cli_generate_weights_from_the_working_directory_is_refused(attacker_folder):
    """The probe's exact route: ``python -m dalle_mini_core.cli generate --weights dl_weights``
    run from the folder that holds ``dl_weights/payload.py`` (the cwd is on sys.path)."""
    folder, markers = attacker_folder
    _edit_json(folder / "shapes_prior.json", lambda m: m["config"].update({"class": "dl_weights.payload.Cfg"}))
    write_manifest(folder)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dalle_mini_core.cli", "generate", "a small red circle at the top left", "--n", "1",
         "--weights", "dl_weights", "--prior-steps", "2", "--decoder-steps", "2", "--upsampler-steps", "2",
         "--out", str(folder.parent / "x.png")],
        cwd=folder.parent, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "names the config class 'dl_weights.payload.Cfg'" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(markers.iterdir()) and not (folder.parent / "x.png").exists()


def test_c2_model_class_naming_a_module_is_refused_by_load_pretrained(tmp_path, monkeypatch):
    """`load_pretrained(name)` without `build` (as `dalle-mini demo` calls it) takes the model
    class from the JSON: only a registered class is accepted, even with a matching manifest."""
    markers = _plant_payload(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path / "data"))
    stem = _tiny_unet_checkpoint(tmp_path / "data" / "weights", "shapes_uncond")
    _edit_json(stem.with_suffix(".json"), lambda m: m.update({"model_class": "dl_weights.payload.run"}))
    _rewrite_header_config(stem, model_class="dl_weights.payload.run")
    write_manifest(stem.parent)
    with pytest.raises(UnknownClassError) as err:
        load_pretrained("shapes_uncond")
    msg = _one_line(err.value)
    assert "names the model class 'dl_weights.payload.run'" in msg and "shapes_uncond" in msg
    _assert_nothing_ran(markers)
    # the registered name it should have held loads (control)
    _edit_json(stem.with_suffix(".json"), lambda m: m.update({"model_class": "dalle_mini_core.unet.UNet"}))
    _rewrite_header_config(stem, model_class="dalle_mini_core.unet.UNet")
    write_manifest(stem.parent)
    assert isinstance(load_pretrained("shapes_uncond"), UNet)


# --- C3: eval --weights must not call what model_class names ----------------------------------


def test_c3_eval_weights_never_calls_the_model_class_a_file_names(attacker_folder):
    from dalle_mini_core.evaluation.report import load_stage

    folder, markers = attacker_folder
    # the probe's case: "model_class": <a callable>, "config": null in shapes_clip.json
    def poison(m):
        m.update({"model_class": "dl_weights.payload.run", "config": None})

    _edit_json(folder / "shapes_clip.json", poison)
    _rewrite_header_config(folder / "shapes_clip", model_class="dl_weights.payload.run")  # (shipped: no header copy)
    write_manifest(folder)
    with pytest.raises(ValueError) as err:
        load_stage("shapes", "clip", folder)
    msg = _one_line(err.value)
    assert "shapes_clip" in msg and "stores no config" in msg and "CLIPModel needs one" in msg
    _assert_nothing_ran(markers)

    # model_class alone poisoned (config intact): the stage's own class loads it, the name is never used
    for p in ("json", "safetensors"):
        shutil.copy(SHIPPED / f"shapes_clip.{p}", folder / f"shapes_clip.{p}")
    _edit_json(folder / "shapes_clip.json", lambda m: m.update({"model_class": "dl_weights.payload.run"}))
    write_manifest(folder)
    clip = load_stage("shapes", "clip", folder)
    assert isinstance(clip, CLIPModel)
    _assert_nothing_ran(markers)


def test_c3_cli_eval_with_a_poisoned_folder_exits_2_without_calling_it(attacker_folder, capsys):
    from dalle_mini_core import cli

    folder, markers = attacker_folder
    _edit_json(folder / "shapes_clip.json", lambda m: m.update({"model_class": "dl_weights.payload.run", "config": None}))
    write_manifest(folder)
    assert cli.main(["eval", "shapes", "--weights", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dalle-mini eval: error:") and "stores no config" in err[0]
    _assert_nothing_ran(markers)


# --- G10: any installed module ----------------------------------------------------------------


def test_g10_a_json_naming_an_installed_module_does_not_import_it(tmp_path, monkeypatch):
    # an "installed" module of our own whose import would leave a marker, and the stdlib's `this`
    site = tmp_path / "site"
    site.mkdir()
    (site / "g10_probe_module.py").write_text(
        f"import pathlib\npathlib.Path({str(tmp_path / 'imported')!r}).touch()\nCfg = None\n")
    monkeypatch.syspath_prepend(str(site))
    this_loaded = "this" in sys.modules
    stem = _tiny_unet_checkpoint(tmp_path / "w")
    for name in ("g10_probe_module.Cfg", "this.Cfg", "os.system", "builtins.eval", "Cfg", "__import__"):
        _edit_json(stem.with_suffix(".json"), lambda m: m["config"].update({"class": name}))
        _rewrite_header_config(stem, name)
        with pytest.raises(UnknownClassError) as err:
            load_checkpoint(stem, UNet)
        assert repr(name) in _one_line(err.value)
    assert not (tmp_path / "imported").exists() and "g10_probe_module" not in sys.modules
    assert this_loaded or "this" not in sys.modules


def test_g10_registry_accepts_only_the_exact_names_it_knows():
    from dalle_mini_core.registry import registered_classes, resolve_class

    assert resolve_class("UNetConfig", "config") is UNetConfig
    assert resolve_class("dalle_mini_core.unet.UNetConfig", "config") is UNetConfig  # what shipped JSON stores
    for bad in ("evil.UNetConfig", "dalle_mini_core.clip.UNetConfig", "UNet", "dalle_mini_core.unet.UNetConfig.x", ""):
        with pytest.raises(UnknownClassError):
            resolve_class(bad, "config")
    with pytest.raises(UnknownClassError):  # a config class is not a model class
        resolve_class("UNetConfig", "model")
    assert set(registered_classes("model")) >= {"CLIPModel", "DiffusionPrior", "Decoder", "UNet", "Upsampler"}


# --- C1: open_clip pickles ---------------------------------------------------------------------


def _typeerror_pickle(marker: Path) -> bytes:
    """The probe's C1 file: ``OrderedDict()`` then BUILD with a ``(None, {...})`` state, which
    makes torch's weights-only unpickler raise TypeError; then ``open(marker, "w")`` by REDUCE,
    which a full unpickle would run (a harmless stand-in for os.system)."""
    out = io.BytesIO()
    w = out.write
    w(pickle.PROTO + b"\x02")
    w(pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.EMPTY_TUPLE + pickle.REDUCE)
    w(pickle.NONE + pickle.EMPTY_DICT + pickle.BINUNICODE + struct.pack("<I", 1) + b"a" + pickle.BININT1 + b"\x01"
      + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD + pickle.POP)
    path, mode = str(marker).encode(), b"w"
    w(pickle.GLOBAL + b"builtins\nopen\n")
    w(pickle.BINUNICODE + struct.pack("<I", len(path)) + path + pickle.BINUNICODE + struct.pack("<I", 1) + mode)
    w(pickle.TUPLE2 + pickle.REDUCE + pickle.STOP)
    return out.getvalue()


class _Touch:
    """A pickled object whose unpickling creates a file (a full unpickle would run it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_c1_pickle_that_trips_the_weights_only_unpickler_is_refused_without_fallback(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED_typeerror_fallback"
    path = tmp_path / "evil_typeerror.pt"
    path.write_bytes(_typeerror_pickle(marker))
    # the file really is the fallback case: torch's safe unpickler raises TypeError on it
    with pytest.raises(TypeError):
        torch.load(str(path), weights_only=True)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # the probe's setting; torch < 2.6 behaves so
    with pytest.raises(ValueError) as err:
        load_open_clip_checkpoint(path, TINY_CLIP)
    msg = _one_line(err.value)
    assert "evil_typeerror.pt was refused by torch.load(weights_only=True)" in msg
    assert not marker.exists()


def test_c1_reduce_payload_in_a_torch_save_file_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED_reduce"
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "x": _Touch(marker)}, path)
    assert not marker.exists()
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ValueError, match="refused by torch.load") as err:
        load_open_clip_checkpoint(path, TINY_CLIP)
    _one_line(err.value)
    assert not marker.exists()


def test_c1_torch_load_is_called_once_with_weights_only_and_never_retried(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, path)
    calls = []

    def fake_load(*args, **kwargs):
        calls.append(kwargs)
        raise TypeError("what the restricted unpickler raises on the probe's file")

    monkeypatch.setattr(torch, "load", fake_load)
    with pytest.raises(ValueError, match="refused by torch.load"):
        load_open_clip_checkpoint(path, TINY_CLIP)
    assert len(calls) == 1 and calls[0].get("weights_only") is True


def test_c1_pickles_are_refused_outright_on_torch_before_2_6(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, path)
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not be reached"))
    with pytest.raises(ValueError) as err:
        load_open_clip_checkpoint(path, TINY_CLIP)
    msg = _one_line(err.value)
    assert "torch 2.5.1 cannot read one safely" in msg and "safetensors" in msg


def test_c1_other_formats_and_disguised_pickles_get_one_line_errors(tmp_path):
    marker = tmp_path / "PWNED_npy"
    (tmp_path / "w.npz").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="unsupported checkpoint format '.npz'"):
        load_open_clip_checkpoint(tmp_path / "w.npz", TINY_CLIP)
    disguised = tmp_path / "evil.safetensors"  # a pickle named .safetensors
    disguised.write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(ValueError) as err:
        load_open_clip_checkpoint(disguised, TINY_CLIP)
    assert "evil.safetensors is not a readable safetensors file" in _one_line(err.value)
    assert not marker.exists()


# --- M1: shipped names are names ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x/shapes_decoder", "../weights/shapes_decoder", "/tmp/shapes_decoder",
                                  "sub/shapes_decoder", "..\\x\\shapes_decoder", "shapes_decoder.safetensors",
                                  ".hidden", "", "shapes decoder", 7])
def test_m1_load_pretrained_refuses_anything_but_a_plain_name(name):
    with pytest.raises(ValueError) as err:
        load_pretrained(name)
    msg = _one_line(err.value)
    assert "weights name must be a plain name" in msg and repr(name)[:20] in msg


def test_m1_traversal_to_another_file_is_refused_and_never_loaded(tmp_path, monkeypatch):
    """The probe's case: a relative name reaching a NaN-filled file outside data/weights while
    the manifest check hashed the genuine one. Now the name is refused before any file is read."""
    from dalle_mini_core.pipeline import UnCLIP

    evil = tmp_path / "x"
    evil.mkdir()
    for p in PARTS:
        for suffix in (".safetensors", ".json"):
            shutil.copy(SHIPPED / f"shapes_{p}{suffix}", evil / f"shapes_{p}{suffix}")
    rel = os.path.relpath(evil, SHIPPED)
    read = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or real(self))
    with pytest.raises(ValueError, match="plain name"):
        load_pretrained(f"{rel}/shapes_decoder")
    # from_pretrained reads a non-name as a folder path (never a path into data/weights): this one is not a folder
    with pytest.raises((ValueError, FileNotFoundError), match="plain name|not a folder"):
        UnCLIP.from_pretrained(f"{rel}/shapes")
    assert not [p for p in read if evil in p.parents]


def test_m1_the_bytes_hashed_are_the_bytes_loaded(tmp_path, monkeypatch):
    """load_pretrained reads each file once; the manifest check and the load use those bytes."""
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path))
    stem = _tiny_unet_checkpoint(tmp_path / "weights", "tiny")
    write_manifest(stem.parent)
    hashed, loaded = [], []
    real_check, real_tensors = weights._check_bytes, checkpoints._tensors_from_bytes
    monkeypatch.setattr(weights, "_check_bytes", lambda m, mp, name, data, hint: hashed.append(data) or real_check(m, mp, name, data, hint))
    monkeypatch.setattr(checkpoints, "_tensors_from_bytes", lambda data, src: loaded.append(data) or real_tensors(data, src))
    load_pretrained("tiny", UNet)
    assert len(loaded) == 1 and any(h is loaded[0] for h in hashed)
    # a file replaced after the manifest was written is caught on those bytes
    _tiny_unet_checkpoint(stem.parent, "tiny", seed=5)
    with pytest.raises(ValueError, match="tiny.safetensors is corrupt or was changed"):
        load_pretrained("tiny", UNet)


def test_manifest_entries_must_be_file_names_in_its_folder(tmp_path):
    from dalle_mini_core.weights import verify_manifest

    (tmp_path / "a.json").write_text("{}")
    manifest = write_manifest(tmp_path)
    with pytest.raises(ValueError, match="not a file name"):
        verify_manifest(manifest, files=["../a.json"])
    manifest.write_text(json.dumps({"../../etc/passwd": "0" * 64}))
    with pytest.raises(ValueError, match="not a file name in its folder"):
        verify_manifest(manifest)
