"""Checkpoints: config round trip, save/load, refusal of mismatched files, training state, manifest."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from dalle_mini_core.checkpoints import (
    CheckpointMismatchError,
    config_from_dict,
    config_to_dict,
    load_checkpoint,
    load_pretrained,
    load_training_state,
    load_weights,
    read_checkpoint_json,
    save_checkpoint,
    save_training_state,
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


def test_load_imports_the_stored_config_class(tmp_path):
    model = Tiny(TinyConfig(width=4))
    save_checkpoint(tmp_path / "tiny", model, model.config)
    loaded = load_checkpoint(tmp_path / "tiny", lambda cfg: Tiny(cfg))  # class found by its stored name
    assert type(loaded.config).__name__ == "TinyConfig" and loaded.config.width == 4


def test_mismatched_file_is_refused_naming_the_tensors(tmp_path):
    model = Tiny(TinyConfig(width=8))
    save_checkpoint(tmp_path / "tiny", model, model.config)
    # A config edited after saving: the rebuilt model has width 16, the file width 8.
    meta = json.loads((tmp_path / "tiny.json").read_text())
    meta["config"]["fields"]["width"] = 16
    (tmp_path / "tiny.json").write_text(json.dumps(meta))
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


def test_load_pretrained_checks_the_manifest(tmp_path, monkeypatch):
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
    auto = load_pretrained("tiny")  # model class and config class found by their stored names
    assert type(auto).__name__ == "Tiny" and torch.equal(auto.fc2.bias, model.fc2.bias)

    with pytest.raises(FileNotFoundError, match=r"available: \['tiny'\]"):
        load_pretrained("decoder")
    data = bytearray((weights / "tiny.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight
    (weights / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_pretrained("tiny", Tiny, config_cls=TinyConfig)
