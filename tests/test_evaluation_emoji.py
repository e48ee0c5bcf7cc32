"""The emoji measures (evaluation/emoji.py) and ``dalle-mini eval emoji``, on smoke-trained emoji weights."""
from __future__ import annotations

import json

import pytest
import torch

from dalle_mini_core.cli import main
from dalle_mini_core.evaluation.emoji import (PATHS, draw_emoji, emoji_gallery, emoji_names, emoji_report,
                                             nearest_emoji)
from dalle_mini_core.evaluation.images import identity_retrieval, pixel_features

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe(emoji_smoke_weights):
    from dalle_mini_core.pipeline import UnCLIP

    return UnCLIP.from_pretrained("emoji", folder=emoji_smoke_weights)


@pytest.fixture(scope="module")
def report(pipe):
    return emoji_report(pipe, mode="smoke", seed=3)


def test_names_are_seeded_and_index_the_1870_emoji_gallery():
    from dalle_mini_core.data.emoji import EmojiDataset

    a, b = emoji_names("train", 5, seed=1), emoji_names("train", 5, seed=1)
    assert a["names"] == b["names"] and a["gallery"] == b["gallery"]
    assert emoji_names("train", 5, seed=2)["names"] != a["names"]
    assert len(emoji_names("test", 500)["names"]) == 82  # all of the test split
    # the gallery rows are the asked-for emoji: the real pictures find themselves first
    everything = EmojiDataset("all", image_size=32, templates=False)
    gallery = pixel_features(torch.stack([everything.image(i) for i in range(len(everything))]), 32)
    hit = identity_retrieval(pixel_features(a["images"], 32), gallery, a["gallery"])
    assert hit["top1"] == 1.0 and hit["chance_top1"] == 1 / 1870 and hit["chance_top5"] == 5 / 1870
    # a real picture asked for as another emoji is not found
    miss = identity_retrieval(pixel_features(a["images"], 32), gallery, a["gallery"][1:] + a["gallery"][:1])
    assert miss["top1"] == 0.0


def test_gallery_and_nearest_emoji_follow_the_identity_rule():
    g = emoji_gallery()
    assert g["images"].shape == (1870, 3, 32, 32) and len(g["names"]) == len(g["splits"]) == 1870
    assert g["splits"].count("test") == 82 and g["splits"].count("train") == 1693
    assert g["images"].min() >= -1 and g["images"].max() <= 1
    # real pictures, at 64×64 or at 32×32, find themselves first, as in the identity measure
    chosen = emoji_names("test", 4, seed=5)
    assert nearest_emoji(chosen["images"], gallery=g)[:, 0].tolist() == chosen["gallery"]
    assert nearest_emoji(g["images"][chosen["gallery"]], gallery=g)[:, 0].tolist() == chosen["gallery"]
    # the same order as identity_retrieval's ranking: rank 0 is the nearest, rank 1 the second
    noisy = (chosen["images"] + 0.6 * torch.randn(chosen["images"].shape, generator=torch.Generator().manual_seed(0))
             ).clamp(-1, 1)
    top = nearest_emoji(noisy, k=5, gallery=g)
    ranks = identity_retrieval(pixel_features(noisy, 32), g["features"], top[:, 1].tolist())["rank"]
    assert ranks == [1, 1, 1, 1]
    # `among` keeps the answer inside the family and still names gallery rows
    keycaps = [i for i, n in enumerate(g["names"]) if n.startswith("keycap")]
    assert len(keycaps) == 13
    inside = nearest_emoji(g["images"][:3], among=keycaps, k=2, gallery=g)
    assert inside.shape == (3, 2) and set(inside.flatten().tolist()) <= set(keycaps)
    assert nearest_emoji(g["images"][keycaps], among=keycaps, gallery=g)[:, 0].tolist() == keycaps
    with pytest.raises(ValueError, match="among must name rows"):
        nearest_emoji(g["images"][:1], among=[1870], gallery=g)
    with pytest.raises(ValueError, match="k must be a whole number from 1 to 13"):
        nearest_emoji(g["images"][:1], among=keycaps, k=14, gallery=g)
    with pytest.raises(ValueError, match="pictures must be"):
        nearest_emoji(g["images"][0], gallery=g)


def test_report_keys_ranges_and_chance_levels(report):
    assert report["n_train"] == report["n_test"] == 6 and report["gallery"] == 1870 and report["seed"] == 3
    for split in ("train", "test"):
        rows = report["identity"][split]
        assert set(rows) == set(PATHS) | {"full_upsampled"}
        for row in rows.values():
            assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
            assert row["chance_top1"] == pytest.approx(1 / 1870) and row["chance_top5"] == pytest.approx(5 / 1870)
            assert row["n"] == 6 and 0 <= row["median_rank"] < 1870
    fid = report["fid_kid"]
    assert fid["rows"] == 6
    assert set(fid["decoder_32"]) == {"real_train_vs_real_test"} | {f"{s}_{p}" for s in ("train", "test") for p in PATHS}
    assert set(fid["upsampler_64"]) == {"real_train_vs_real_test", "train_full", "test_full"}
    for table in (fid["decoder_32"], fid["upsampler_64"]):
        for row in table.values():
            assert row["fid"] >= -1e-6 and row["kid_std"] >= 0 and row["n"] == 6 and row["n_reference"] == 82
    json.dumps(report, allow_nan=False)  # strict JSON as written


def test_same_seed_same_numbers(pipe, report):
    again = emoji_report(pipe, mode="smoke", seed=3)
    for key in ("identity", "fid_kid"):
        assert again[key] == report[key]
    other = emoji_report(pipe, mode="smoke", seed=4, n_train=2, n_test=2)
    assert other["n_train"] == other["n_test"] == 2 and other["fid_kid"]["rows"] == 2


def test_paths_differ_and_reconstruction_needs_the_real_pictures(pipe):
    chosen = emoji_names("test", 3)
    full = draw_emoji(pipe, chosen["names"], "full", seed=0, settings={"prior_steps": 2, "decoder_steps": 2})[1]
    bare = draw_emoji(pipe, chosen["names"], "no_prior", seed=0, settings={"prior_steps": 2, "decoder_steps": 2})[1]
    assert full.shape == bare.shape == (3, 3, 32, 32) and not torch.equal(full, bare)
    assert full.min() >= -1 and full.max() <= 1
    with pytest.raises(ValueError, match="needs `real`"):
        draw_emoji(pipe, chosen["names"], "reconstruction")
    with pytest.raises(ValueError, match="path must be one of"):
        draw_emoji(pipe, chosen["names"], "oracle")
    with pytest.raises(ValueError, match="unknown generation settings"):
        draw_emoji(pipe, chosen["names"], "full", settings={"steps": 2})
    long_name = "a " * 40 + "cat"  # longer than the CLIP's context: cut as in training, not refused
    assert draw_emoji(pipe, [long_name], "no_prior", settings={"decoder_steps": 2})[1].shape == (1, 3, 32, 32)


def test_cli_eval_emoji_writes_the_emoji_section(emoji_smoke_weights, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "emoji", "--weights", str(emoji_smoke_weights), "--json", str(out), "--n", "8",
                 "--names", "4"]) == 0
    written = json.loads(out.read_text())
    assert {"clip", "prior", "emoji"} <= set(written)
    assert written["emoji"]["n_train"] == 4 and written["emoji"]["n_test"] == 4
    assert written["emoji"]["identity"]["test"]["reconstruction"]["n"] == 4


def test_cli_eval_emoji_without_weights_says_how_to_train_them(tmp_path, capsys):
    assert main(["eval", "emoji", "--weights", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dalle-mini train all --dataset emoji --mode gpu" in err


def test_eval_emoji_without_a_decoder_skips_the_section_and_says_why(emoji_smoke_weights, tmp_path):
    import shutil

    from dalle_mini_core.evaluation.report import evaluate
    from dalle_mini_core.weights import write_manifest

    for stem in ("emoji_clip", "emoji_prior"):
        for ext in (".safetensors", ".json"):
            shutil.copy(emoji_smoke_weights / f"{stem}{ext}", tmp_path / f"{stem}{ext}")
    write_manifest(tmp_path, [p.name for p in tmp_path.iterdir()])
    report = evaluate("emoji", weights=tmp_path, n=4)
    assert "emoji_decoder" in report["emoji"]["skipped"] and "--dataset emoji" in report["emoji"]["skipped"]
