"""Checkpoints: config round trip, save/load, refusal of mismatched files, training state, manifest."""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from dalle_mini_core import checkpoints
from dalle_mini_core import registry as registry_module
from dalle_mini_core.checkpoints import (
    CheckpointMismatchError,
    CheckpointWarning,
    load_checkpoint,
    load_weights,
    read_checkpoint_json,
    save_checkpoint,
)
from dalle_mini_core.registry import UnknownClassError, config_from_dict, config_to_dict, json_dumps_strict, register
from dalle_mini_core.train_state import load_training_state, save_training_state
from dalle_mini_core.weights import (
    UnverifiedWeightsWarning,
    load_from_folder,
    load_pretrained,
    sha256_file,
    verify_manifest,
    write_manifest,
)


@dataclass(kw_only=True)
class InnerConfig:
    scale: float = 1.0  # a nested config field
    dims: tuple[int, ...] = (1, 2)  # a tuple inside a nested config


@dataclass(kw_only=True)
class TinyConfig:
    width: int = 8  # hidden width
    mult: tuple[int, int] = (1, 2)  # a tuple field (JSON has none)
    names: list[str] = field(default_factory=lambda: ["a", "b"])  # a list field
    inner: InnerConfig = field(default_factory=InnerConfig)  # a nested dataclass
    act: str | None = None  # optional string


class Tiny(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(3, config.width)
        self.fc2 = nn.Linear(config.width, 2)
        self.register_buffer("counter", torch.arange(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_config_round_trip_keeps_tuples_and_nesting():
    cfg = TinyConfig(width=5, mult=(3, 4), inner=InnerConfig(scale=0.5, dims=(7, 8, 9)), act="silu")
    data = json.loads(json.dumps(config_to_dict(cfg)))  # through real JSON text
    assert data["class"].endswith("TinyConfig")
    back = config_from_dict(data, TinyConfig)
    assert back == cfg
    assert isinstance(back.mult, tuple) and isinstance(back.inner.dims, tuple)
    assert isinstance(back.names, list)


def test_config_with_unknown_field_or_non_json_value_is_refused():
    data = config_to_dict(TinyConfig())
    data["fields"]["depth"] = 3
    with pytest.raises(ValueError, match="depth"):
        config_from_dict(data, TinyConfig)

    @dataclass
    class Bad:
        dtype: torch.dtype = torch.float32

    with pytest.raises(TypeError, match="dtype"):
        config_to_dict(Bad())


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(width=6, mult=(2, 3)))
    stem = save_checkpoint(tmp_path / "tiny.safetensors", model, model.config, extra={"step": 7, "pair": (1, 2)})
    assert (tmp_path / "tiny.safetensors").is_file() and (tmp_path / "tiny.json").is_file()
    assert stem == tmp_path / "tiny"

    loaded = load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig)
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(4, 3)
    assert torch.equal(model(x), loaded(x))
    meta = read_checkpoint_json(tmp_path / "tiny")
    assert meta["extra"] == {"step": 7, "pair": (1, 2)}
    assert meta["num_parameters"] == sum(p.numel() for p in model.parameters())


@pytest.fixture()
def registry(monkeypatch):
    """A private copy of the class registry, so registrations end with the test."""
    monkeypatch.setattr(registry_module, "_REGISTERED", dict(registry_module._REGISTERED))


def test_stored_class_names_resolve_only_through_the_registry(tmp_path, registry):
    model = Tiny(TinyConfig(width=4))
    save_checkpoint(tmp_path / "tiny", model, model.config)
    # a class the registry does not know is refused, with the file and the name, on one line
    with pytest.raises(UnknownClassError) as err:
        load_checkpoint(tmp_path / "tiny", lambda cfg: Tiny(cfg))
    msg = str(err.value)
    assert "\n" not in msg and "tiny.json names the config class 'test_checkpoints.TinyConfig'" in msg
    assert "register(YourClass)" in msg
    # the class itself, given by code, works without registering
    assert load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig).config.width == 4
    # registered (code the user runs), its stored name resolves: config, nested config, model
    register(TinyConfig)
    register(Tiny)
    loaded = load_checkpoint(tmp_path / "tiny")
    assert type(loaded) is Tiny and loaded.config == model.config
    with pytest.raises(ValueError, match="already registered"):
        @register
        @dataclass
        class UNetConfig:  # a different class under a name the package owns
            x: int = 0
    with pytest.raises(TypeError):
        register(len)


def test_mismatched_file_is_refused_naming_the_tensors(tmp_path):
    model = Tiny(TinyConfig(width=8))
    # Saved with the wrong config: the rebuilt model has width 16, the file width 8.
    save_checkpoint(tmp_path / "tiny", model, TinyConfig(width=16))
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig)
    msg = str(err.value)
    assert "fc1.weight file [8, 3] vs model [16, 3]" in msg
    assert "fc2.weight" in msg and "fc1.bias" in msg

    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(3, 8)
            self.head = nn.Linear(8, 2)

    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(tmp_path / "tiny", Other())
    msg = str(err.value)
    assert "missing from the file (2): head.bias, head.weight" in msg
    assert "unexpected in the file (3): counter, fc2.bias, fc2.weight" in msg


def test_tied_weights_and_dtype_cast_save(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight  # shared tensor: safetensors refuses shared memory unless copied
    save_checkpoint(tmp_path / "tied", model, dtype=torch.bfloat16)
    fresh = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    load_weights(tmp_path / "tied", fresh)
    assert torch.equal(fresh[0].weight, model[0].weight.detach().to(torch.bfloat16).float())


def _adam_after_steps(model: nn.Module) -> torch.optim.AdamW:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
    return opt


def test_training_state_round_trip_restores_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig())
    opt = _adam_after_steps(model)
    save_training_state(tmp_path / "state", optimizer=opt, step=3, extra={"note": "x"})
    expected_draw = torch.rand(5)

    torch.manual_seed(123)  # disturb the RNG; loading must restore it
    opt2 = torch.optim.AdamW(model.parameters(), lr=1.0)
    meta = load_training_state(tmp_path / "state", optimizer=opt2)
    assert meta["step"] == 3 and meta["extra"] == {"note": "x"}
    assert torch.equal(torch.rand(5), expected_draw)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["betas"] == (0.8, 0.95) and s2["param_groups"][0]["lr"] == 1e-2
    for idx in s1["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(s1["state"][idx][name], s2["state"][idx][name])
    # The state file is safetensors + JSON: no pickle anywhere.
    assert not list(tmp_path.glob("*.pt")) and (tmp_path / "state.safetensors").is_file()


def test_training_state_refuses_a_different_optimizer(tmp_path):
    model = Tiny(TinyConfig())
    save_training_state(tmp_path / "state", optimizer=_adam_after_steps(model), step=3)
    with pytest.raises(ValueError, match="AdamW"):
        load_training_state(tmp_path / "state", optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_sha256_and_manifest(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}')
    (tmp_path / "b.safetensors").write_bytes(b"\x00\x01weights")
    assert sha256_file(tmp_path / "a.json") == hashlib.sha256(b'{"x": 1}').hexdigest()
    manifest = write_manifest(tmp_path)
    assert set(json.loads(manifest.read_text())) == {"a.json", "b.safetensors"}
    assert verify_manifest(manifest)["a.json"] == sha256_file(tmp_path / "a.json")

    (tmp_path / "b.safetensors").write_bytes(b"\x00\x01weightz")
    with pytest.raises(ValueError, match="b.safetensors is corrupt"):
        verify_manifest(manifest)
    verify_manifest(manifest, files=["a.json"])  # only the asked-for files are checked
    with pytest.raises(FileNotFoundError, match="c.json is not listed"):
        verify_manifest(manifest, files=["c.json"])
    (tmp_path / "a.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        verify_manifest(manifest, files=["a.json"])


def test_load_pretrained_checks_the_manifest(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path))
    weights = tmp_path / "weights"
    with pytest.raises(FileNotFoundError, match="no shipped weights named 'tiny'"):
        load_pretrained("tiny", Tiny)

    torch.manual_seed(1)
    model = Tiny(TinyConfig(width=3))
    save_checkpoint(weights / "tiny", model, model.config)
    with pytest.raises(FileNotFoundError, match="MANIFEST.json"):  # weights present, manifest not
        load_pretrained("tiny", Tiny, config_cls=TinyConfig)
    write_manifest(weights)
    loaded = load_pretrained("tiny", Tiny, config_cls=TinyConfig)
    assert torch.equal(loaded.fc1.weight, model.fc1.weight)
    with pytest.raises(UnknownClassError, match="config class 'test_checkpoints.TinyConfig'"):
        load_pretrained("tiny")  # the test's own classes are not registered
    register(TinyConfig)
    with pytest.raises(UnknownClassError, match="model class 'test_checkpoints.Tiny'"):
        load_pretrained("tiny")
    register(Tiny)
    auto = load_pretrained("tiny")  # model class and config class found by their stored names
    assert type(auto).__name__ == "Tiny" and torch.equal(auto.fc2.bias, model.fc2.bias)

    with pytest.raises(FileNotFoundError, match=r"available: \['tiny'\]"):
        load_pretrained("decoder")
    data = bytearray((weights / "tiny.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight
    (weights / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_pretrained("tiny", Tiny, config_cls=TinyConfig)


# --- safe loading: unreadable files, NaN/inf weights, folders without a manifest ------------------


def _save_tiny(stem, width=4, act=None, seed=0):
    torch.manual_seed(seed)
    model = Tiny(TinyConfig(width=width, act=act))
    save_checkpoint(stem, model, model.config)
    return model


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage_header", "pickle", "huge_header_length"])
def test_unreadable_safetensors_gives_one_clear_line(tmp_path, damage):
    import pickle

    _save_tiny(tmp_path / "tiny")
    st = tmp_path / "tiny.safetensors"
    data = st.read_bytes()
    st.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                    "garbage_header": data[:8] + b"\xff" * 64 + data[72:],
                    "pickle": pickle.dumps({"fc1.weight": [1.0]}),
                    "huge_header_length": (2**62).to_bytes(8, "little") + data[8:]}[damage])
    for load in (lambda: load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig),
                 lambda: load_weights(tmp_path / "tiny", Tiny(TinyConfig(width=4)))):
        with pytest.raises(ValueError) as err:
            load()
        msg = str(err.value)
        assert type(err.value) is ValueError and "\n" not in msg
        assert f"{st} is not a readable safetensors file" in msg


def test_nan_or_inf_weights_are_refused_naming_the_tensor(tmp_path):
    model = _save_tiny(tmp_path / "tiny")
    with torch.no_grad():
        model.fc2.bias[0] = float("nan")
        model.fc1.weight[1, :] = float("inf")
    save_checkpoint(tmp_path / "bad", model, model.config)
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "bad", Tiny, config_cls=TinyConfig)
    msg = str(err.value)
    assert "\n" not in msg and "NaN/inf weights in 2 tensor(s)" in msg
    assert "'fc1.weight' (3 values)" in msg and "'fc2.bias' (1 values)" in msg
    with pytest.raises(ValueError, match="fc2.bias"):
        load_weights(tmp_path / "bad", Tiny(TinyConfig(width=4)))


def test_folder_without_manifest_loads_with_a_warning(tmp_path):
    model = _save_tiny(tmp_path / "w" / "tiny")
    with pytest.warns(UnverifiedWeightsWarning, match="has no MANIFEST.json") as rec:
        loaded = load_from_folder(tmp_path / "w", "tiny", Tiny, config_cls=TinyConfig)
    assert issubclass(rec[0].category, UserWarning)
    assert torch.equal(loaded.fc1.weight, model.fc1.weight)
    write_manifest(tmp_path / "w")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified: no warning at all
        load_from_folder(tmp_path / "w", "tiny", Tiny, config_cls=TinyConfig)
    data = bytearray((tmp_path / "w" / "tiny.safetensors").read_bytes())
    data[-1] ^= 0x01
    (tmp_path / "w" / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="tiny.safetensors is corrupt or was changed"):
        load_from_folder(tmp_path / "w", "tiny", Tiny, config_cls=TinyConfig)
    with pytest.raises(ValueError, match="plain name"):
        load_from_folder(tmp_path, "w/tiny", Tiny, config_cls=TinyConfig)


def test_bad_json_and_missing_config_give_clear_errors(tmp_path):
    _save_tiny(tmp_path / "tiny")
    json_path = tmp_path / "tiny.json"
    good = json_path.read_text()
    for text, match in (("{not json", "tiny.json is not valid JSON"), ("[1, 2]", "tiny.json must hold a JSON object")):
        json_path.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_checkpoint_json(tmp_path / "tiny")
    # a config that cannot be rebuilt (a file written before weights carried their config, then edited)
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(tmp_path / "tiny.safetensors")), str(tmp_path / "tiny.safetensors"))
    meta = json.loads(good)
    meta["config"]["fields"]["depth"] = 3
    json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig)
    msg = str(err.value)
    assert "\n" not in msg and f"{json_path}: its config cannot be rebuilt" in msg and "depth" in msg

    class NeedsConfig(nn.Module):
        def __init__(self, config):
            super().__init__()

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "plain", nn.Linear(2, 2))  # saved with no config
    with pytest.raises(ValueError, match="stores no config .* but NeedsConfig needs one"):
        load_checkpoint(tmp_path / "plain", NeedsConfig)


# --- atomic save: weights and config are one unit ---------------------------------------------------


def test_a_failure_between_the_two_writes_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    old = _save_tiny(tmp_path / "tiny", act="relu", seed=0)
    before = {p: (tmp_path / p).read_bytes() for p in ("tiny.safetensors", "tiny.json")}

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_text", disk_full)  # the JSON write fails, after the weights'
    with pytest.raises(OSError, match="No space"):
        _save_tiny(tmp_path / "tiny", act="silu", seed=1)
    monkeypatch.undo()
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]  # no temp files
    loaded = load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig)
    assert loaded.config.act == "relu" and torch.equal(loaded.fc1.weight, old.fc1.weight)


def test_a_crash_between_the_two_renames_never_pairs_new_weights_with_the_old_config(tmp_path, monkeypatch):
    """The probe's case: the new name.safetensors in place, name.json still the old one. The
    weights file carries its own config, so the new weights load with the new config."""
    _save_tiny(tmp_path / "tiny", act="relu", seed=0)
    real_replace = os.replace

    def crash_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # killed right after the weights were renamed into place
        real_replace(src, dst)

    monkeypatch.setattr(checkpoints.os, "replace", crash_on_json)
    with pytest.raises(KeyboardInterrupt):
        _save_tiny(tmp_path / "tiny", act="silu", seed=1)
    monkeypatch.undo()
    torch.manual_seed(1)
    new = Tiny(TinyConfig(width=4, act="silu"))  # what that save held
    assert json.loads((tmp_path / "tiny.json").read_text())["config"]["fields"]["act"] == "relu"  # stale
    with pytest.warns(CheckpointWarning, match="does not match the config stored in tiny.safetensors"):
        loaded = load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig)
    assert loaded.config.act == "silu" and torch.equal(loaded.fc1.weight, new.fc1.weight)


def test_the_weights_file_alone_says_what_it_holds(tmp_path):
    model = _save_tiny(tmp_path / "tiny", act="gelu")
    (tmp_path / "tiny.json").unlink()
    loaded = load_checkpoint(tmp_path / "tiny", Tiny, config_cls=TinyConfig)
    assert loaded.config == model.config
    assert read_checkpoint_json(tmp_path / "tiny")["config"]["fields"]["act"] == "gelu"


# --- strict JSON ------------------------------------------------------------------------------------


def _strict(text):
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_written_json_is_strict_and_non_finite_floats_round_trip(tmp_path):
    @dataclass
    class FloatConfig:
        budget: float = float("inf")
        floor: float = -float("inf")

    model = _save_tiny(tmp_path / "tiny")
    extra = {"ms_per_step_calibration": float("nan"), "guard": float("inf"), "ok": 1.5, "nested": [float("-inf")]}
    save_checkpoint(tmp_path / "tiny", model, model.config, extra=extra)
    meta = _strict((tmp_path / "tiny.json").read_text())  # a strict parser accepts it
    assert meta["extra"]["ms_per_step_calibration"] == {"__float__": "nan"}
    back = read_checkpoint_json(tmp_path / "tiny")["extra"]
    assert math.isnan(back["ms_per_step_calibration"]) and back["guard"] == math.inf and back["nested"] == [-math.inf]
    assert config_from_dict(_strict(json.dumps(config_to_dict(FloatConfig()))), FloatConfig) == FloatConfig()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    save_training_state(tmp_path / "state", optimizer=opt, step=1, extra={"loss": float("nan")})
    _strict((tmp_path / "state.json").read_text())
    assert math.isnan(load_training_state(tmp_path / "state", optimizer=opt)["extra"]["loss"])
    write_manifest(tmp_path)
    _strict((tmp_path / "MANIFEST.json").read_text())
    assert _strict(json_dumps_strict({"a": float("nan"), "b": [float("inf"), 2.0]})) == {"a": None, "b": [None, 2.0]}


def test_shipped_json_is_strict():
    from dalle_mini_core.paths import data_dir

    files = sorted((data_dir() / "weights").rglob("*.json"))
    assert files
    for path in files:
        _strict(path.read_text())


def test_names_that_moved_out_of_checkpoints_are_still_importable_from_it():
    """Earlier code (and students' notebooks) import these from checkpoints; they live in registry,
    train_state and weights now, and the old import gives the same object."""
    from dalle_mini_core import train_state, weights

    moved = {registry_module: ["UnknownClassError", "register", "registered_classes", "resolve_class",
                               "config_to_dict", "config_from_dict", "json_dumps_strict"],
             train_state: ["capture_rng_state", "restore_rng_state", "save_training_state", "load_training_state"],
             weights: ["UnverifiedWeightsWarning", "sha256_file", "write_manifest", "verify_manifest",
                       "load_pretrained", "load_from_folder"]}
    for module, names in moved.items():
        for name in names:
            assert getattr(checkpoints, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="has no attribute 'load_pretrainedd'"):
        checkpoints.load_pretrainedd  # noqa: B018 - a typo is still an AttributeError
