"""Loading an emoji pipeline: shipped (when data/weights has it), from a folder, and `dalle-mini generate
--dataset emoji`; on smoke-trained emoji weights (tests/conftest.py)."""
from __future__ import annotations

import shutil

import pytest
import torch

from dalle_mini_core.cli import main
from dalle_mini_core.pipeline import UnCLIP

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"prior_steps": 2, "decoder_steps": 2, "upsampler_steps": 2}


def test_from_pretrained_emoji_without_shipped_weights_says_how_to_train_them(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "weights").mkdir(parents=True)
    monkeypatch.setenv("DALLE_MINI_DATA", str(data))
    with pytest.raises(FileNotFoundError) as err:
        UnCLIP.from_pretrained("emoji")
    message = str(err.value)
    assert "not shipped yet" in message and "dalle-mini train all --dataset emoji --mode gpu" in message
    assert "folder=" in message and len(message.splitlines()) == 1


def test_from_pretrained_emoji_loads_shipped_weights_when_present(emoji_smoke_weights, tmp_path, monkeypatch):
    from dalle_mini_core.weights import write_manifest

    weights = tmp_path / "data" / "weights"
    weights.mkdir(parents=True)
    for p in emoji_smoke_weights.glob("emoji_*"):
        shutil.copy(p, weights / p.name)
    write_manifest(weights)
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path / "data"))
    pipe = UnCLIP.from_pretrained("emoji")
    assert pipe.dataset == "emoji" and pipe.image_size == 32 and pipe.output_size == 64
    # a changed file is refused (the manifest is checked), in one line naming it
    (weights / "emoji_prior.safetensors").write_bytes(b"0" * 64)
    with pytest.raises(ValueError, match="emoji_prior"):
        UnCLIP.from_pretrained("emoji")


def test_from_a_folder_by_name_or_by_path_gives_the_same_pictures(emoji_smoke_weights):
    by_name = UnCLIP.from_pretrained("emoji", folder=emoji_smoke_weights)
    by_path = UnCLIP.from_pretrained(emoji_smoke_weights)  # the folder's one <name>_clip says which pipeline
    assert by_name.dataset == by_path.dataset == "emoji"
    a = by_name.generate("cat face", n_per_prompt=2, seed=5, **FAST)
    b = by_path.generate("cat face", n_per_prompt=2, seed=5, **FAST)
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b)
    low = UnCLIP.from_pretrained("emoji", folder=emoji_smoke_weights, upsampler=False).generate("cat face", **FAST)
    assert low.shape == (1, 3, 32, 32)


def test_save_pretrained_keeps_the_emoji_names(emoji_smoke_weights, tmp_path):
    pipe = UnCLIP.from_pretrained("emoji", folder=emoji_smoke_weights)
    pipe.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / "emoji_decoder.safetensors").is_file()
    assert UnCLIP.from_pretrained(tmp_path / "copy").dataset == "emoji"


def test_cli_generate_dataset_emoji_reads_weights(emoji_smoke_weights, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["generate", "--dataset", "emoji", "--weights", str(emoji_smoke_weights), "cat face", "red apple",
                 "--n", "2", "--out", str(out), "--prior-steps", "2", "--decoder-steps", "2",
                 "--upsampler-steps", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "4 images of 64×64" in printed
    assert "not one of the training captions' patterns" not in printed  # that note is for shapes captions


def test_cli_generate_dataset_emoji_without_weights_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "data" / "weights").mkdir(parents=True)
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path / "data"))
    assert main(["generate", "--dataset", "emoji", "cat face", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dataset emoji --mode gpu" in err and "--weights" in err
    assert not (tmp_path / "g.png").exists()
