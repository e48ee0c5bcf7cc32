"""dalle-mini eval: the report's sections and keys, on tiny untrained weights saved to a folder."""
from __future__ import annotations

import json

import pytest
import torch

from dalle_mini_core.checkpoints import save_checkpoint
from dalle_mini_core.cli import main
from dalle_mini_core.clip import CLIPModel, clip_config
from dalle_mini_core.prior import DiffusionPrior, PriorConfig


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    cfg = clip_config("shapes")
    save_checkpoint(folder / "shapes_clip", CLIPModel(cfg), cfg)
    pcfg = PriorConfig(embed_dim=cfg.embed_dim, width=32, depth=1, heads=2, use_tokens=False)
    save_checkpoint(folder / "shapes_prior", DiffusionPrior(pcfg), pcfg)
    return folder


def test_eval_shapes_writes_the_documented_sections(weights, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "shapes", "--weights", str(weights), "--json", str(out), "--n", "12"]) == 0
    report = json.loads(out.read_text())
    clip = report["clip"]
    for key in ("text_to_image_top1", "text_to_image_top5", "gallery_size", "zero_shot_attribute_accuracy", "n", "seed"):
        assert key in clip, key
    assert 0.0 <= clip["text_to_image_top1"] <= clip["text_to_image_top5"] <= 1.0
    assert set(clip["zero_shot_attribute_accuracy"]) >= {"shape", "colour", "size", "position", "n", "seed"}
    prior = report["prior"]
    for key in ("retrieval_top1", "cosine_to_true"):
        assert set(prior[key]) >= {"prior", "text_embedding", "nearest_neighbour"}
    assert prior["n"] == 12 and prior["seed"] == 0


def test_eval_without_weights_says_how_to_train(tmp_path, capsys):
    assert main(["eval", "shapes", "--weights", str(tmp_path)]) == 2
    assert "dalle-mini train" in capsys.readouterr().err
