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
    assert "caption_accuracy" not in report  # no decoder or upsampler in that folder
    prior = report["prior"]
    for key in ("retrieval_top1", "cosine_to_true"):
        assert set(prior[key]) >= {"prior", "text_embedding", "nearest_neighbour"}
    assert prior["n"] == 12 and prior["seed"] == 0
    assert "oracle_sample" in prior["retrieval_top1"] and "oracle_sample" in prior["retrieval_top1_relevant"]
    assert set(prior["diversity"]) >= {"prior", "oracle_sample"}
    kinds = prior["retrieval_top1_by_group"]
    assert set(kinds) <= {"one object", "two objects, cells stated", "two objects, relation"}
    assert sum(k["n"] for k in kinds.values()) == 12


def test_eval_without_weights_says_how_to_train(tmp_path, capsys):
    assert main(["eval", "shapes", "--weights", str(tmp_path)]) == 2
    assert "dalle-mini train" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pipeline_weights(weights, tmp_path_factory):
    """The clip and prior above plus a tiny untrained decoder and upsampler: a whole pipeline."""
    import shutil

    from dalle_mini_core.decoder import Decoder, DecoderConfig
    from dalle_mini_core.unet import UNetConfig
    from dalle_mini_core.upsampler import Upsampler, UpsamplerConfig

    folder = tmp_path_factory.mktemp("pipeline")
    for f in weights.iterdir():
        shutil.copy(f, folder / f.name)
    torch.manual_seed(1)
    unet = UNetConfig(image_size=32, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(16,), num_heads=2, num_groups=8)
    dcfg = DecoderConfig(unet=unet, embed_dim=clip_config("shapes").embed_dim, context_width=32)
    save_checkpoint(folder / "shapes_decoder", Decoder(dcfg), dcfg)
    ucfg = UpsamplerConfig(unet=UNetConfig(image_size=64, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                           attention_resolutions=(), num_groups=8), low_res_size=32)
    save_checkpoint(folder / "shapes_upsampler", Upsampler(ucfg), ucfg)
    return folder


def test_eval_adds_caption_accuracy_when_the_whole_pipeline_exists(pipeline_weights, tmp_path):
    from dalle_mini_core.evaluation.report import evaluate

    fast = {"prior_steps": 2, "decoder_steps": 2, "upsampler_steps": 2}
    report = evaluate("shapes", weights=pipeline_weights, n=8, n_prompts=3, n_per_prompt=2, generate_kwargs=fast)
    cap = report["caption_accuracy"]
    assert cap["n"] == 3 and cap["n_per_prompt"] == 2 and cap["seed"] == 0
    assert 0.0 <= cap["seen"] <= 1.0 and 0.0 <= cap["heldout"] <= 1.0
    for kind in ("seen", "heldout"):
        assert set(cap["per_attribute"][kind]) >= {"shape", "colour", "size", "position"}
    assert cap["settings"]["decoder_steps"] == 2 and cap["settings"]["prior_guidance"] == 2.0
    assert cap["seconds_per_image"] > 0
    clean = cap["clean_share"]  # per stage output, on the same pictures
    assert set(clean) == {"threshold", "decoder", "upsampler"}
    assert clean["decoder"]["image_size"] == 32 and clean["upsampler"]["image_size"] == 64
    for stage in ("decoder", "upsampler"):
        assert clean[stage]["n"] == 2 * 3 * 2 and 0.0 <= clean[stage]["all"] <= 1.0
        assert clean[stage]["all"] == pytest.approx((clean[stage]["seen"] + clean[stage]["heldout"]) / 2)
    assert "retrieval_top1_relevant" in report["prior"] and report["prior"]["guidance_scale"] == 2.0
    # the section is skipped on request (the clip+prior-only folder of the first test has none either)
    assert "caption_accuracy" not in evaluate("shapes", weights=pipeline_weights, n=8, captions=False)



def test_eval_emoji_writes_clip_and_prior_sections(tmp_path):
    torch.manual_seed(0)
    cfg = clip_config("emoji")
    save_checkpoint(tmp_path / "emoji_clip", CLIPModel(cfg), cfg)
    pcfg = PriorConfig(embed_dim=cfg.embed_dim, width=32, depth=1, heads=2, use_tokens=False)
    save_checkpoint(tmp_path / "emoji_prior", DiffusionPrior(pcfg), pcfg)
    out = tmp_path / "eval.json"
    assert main(["eval", "emoji", "--weights", str(tmp_path), "--json", str(out), "--n", "12"]) == 0
    report = json.loads(out.read_text())
    assert report["dataset"] == "emoji"
    assert {"text_to_image_top1", "text_to_image_top5", "gallery_size"} <= set(report["clip"])
    assert "zero_shot_attribute_accuracy" not in report["clip"]  # shapes only
    prior = report["prior"]
    assert set(prior["retrieval_top1"]) == {"prior", "text_embedding", "nearest_neighbour"}  # no oracle for emoji
    assert prior["n"] == 12 and "caption_accuracy" not in report


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), r"\bn\b"), (dict(n=2.5), r"\bn\b"), (dict(n_prompts=0), "n_prompts"),
    (dict(n_per_prompt=0), "n_per_prompt"), (dict(seed=2**32), "seed"),
])
def test_evaluate_refuses_zero_and_bad_counts_before_any_work(kwargs, match):
    """Probe 1e: in the Python API `n=0` used to mean "the default"; now it is refused like the CLI's --n 0."""
    from dalle_mini_core.evaluation.report import evaluate

    with pytest.raises((ValueError, TypeError), match=match):
        evaluate("shapes", **kwargs)
