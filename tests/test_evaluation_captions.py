"""Tests for evaluation/captions.py: prompt sets, caption accuracy, CLIP score, R-precision.

Caption accuracy is tested with fake pipelines whose answers we know: one renders the
ground truth of each prompt (must score 1.0), one returns blank images (0.0), one gets the
colour wrong (every attribute but colour right).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dalle_mini_core.data import COLOURS, HELDOUT_COMBINATIONS, Scene, ShapeObject, parse_caption, render
from dalle_mini_core.evaluation.captions import (
    attribute_scores,
    caption_accuracy,
    clip_score,
    evaluate_captions,
    prompt_set,
    r_precision,
)


class RenderPipeline:
    """Draws exactly what each (fully stated, one-object) prompt says; `recolour` changes the colour."""

    def __init__(self, recolour: dict[str, str] | None = None, size: int = 32) -> None:
        self.recolour, self.size, self.seeds = recolour or {}, size, []

    def generate(self, prompts, *, n_per_prompt, seed, **kwargs):
        self.seeds.append(seed)
        images = []
        for p in prompts:
            o = parse_caption(p).objects[0]
            colour = self.recolour.get(o["colour"], o["colour"])
            scene = Scene((ShapeObject(o["shape"], colour, o["size"], o["position"]),))
            images += [render(scene, self.size)] * n_per_prompt
        return torch.stack(images)


class BlankPipeline:
    """Plain background, no object at all."""

    def generate(self, prompts, *, n_per_prompt, seed, **kwargs):
        return torch.full((len(prompts) * n_per_prompt, 3, 32, 32), 0.85)


# --- prompt sets ------------------------------------------------------------------------------


def test_prompt_sets_are_fixed_distinct_and_of_the_right_kind():
    seen, heldout = prompt_set("seen", 40, seed=0), prompt_set("heldout", 40, seed=0)
    assert seen == prompt_set("seen", 40, seed=0)
    assert seen != prompt_set("seen", 40, seed=1)
    assert len(set(seen)) == 40 and len(set(heldout)) == 40
    for p in seen + heldout:
        (attrs,) = parse_caption(p).objects
        assert set(attrs) == {"shape", "colour", "size", "position"}  # every attribute is stated
        assert ((attrs["colour"], attrs["shape"]) in HELDOUT_COMBINATIONS) == (p in heldout)
    assert len(prompt_set("heldout", 54)) == 54  # 3 pairs × 2 sizes × 9 positions
    with pytest.raises(ValueError, match="only 54"):
        prompt_set("heldout", 55)
    with pytest.raises(ValueError, match="kind"):
        prompt_set("unseen", 3)
    with pytest.raises(ValueError, match="n must"):
        prompt_set("seen", 0)


# --- caption accuracy -------------------------------------------------------------------------


def test_caption_accuracy_is_one_for_ground_truth_and_zero_for_blank_images():
    prompts = prompt_set("seen", 12, seed=3)
    assert caption_accuracy(RenderPipeline(), prompts, n_per_prompt=2, seed=0) == 1.0
    assert caption_accuracy(BlankPipeline(), prompts, n_per_prompt=2, seed=0) == 0.0


def test_attribute_scores_separate_the_attributes():
    prompts = [p for p in prompt_set("seen", 30, seed=4) if "red" in p][:4]
    scores = attribute_scores(RenderPipeline(recolour={"red": "blue"}), prompts, n_per_prompt=1)
    assert scores["colour"] == 0.0 and scores["all"] == 0.0
    assert scores["shape"] == scores["size"] == scores["position"] == 1.0
    assert scores["n"] == len(prompts)


def test_attribute_scores_batches_with_their_own_seeds_and_check_the_output():
    fake = RenderPipeline()
    prompts = prompt_set("heldout", 5, seed=0)
    assert attribute_scores(fake, prompts, batch_size=2, seed=7)["all"] == 1.0
    assert fake.seeds == [7, 7 + 1_000_003, 7 + 2 * 1_000_003]

    class Wrong:
        def generate(self, prompts, *, n_per_prompt, seed, **kwargs):
            return torch.zeros(1, 3, 32, 32)

    with pytest.raises(ValueError, match="must return"):
        caption_accuracy(Wrong(), prompts, n_per_prompt=2)
    with pytest.raises(ValueError, match="non-empty"):
        caption_accuracy(fake, [])


def test_evaluate_captions_reports_seen_heldout_and_per_attribute():
    result = evaluate_captions(RenderPipeline(recolour={c: "black" for c in COLOURS if c != "black"}), n=6, seed=2)
    assert set(result) >= {"seen", "heldout", "per_attribute", "n", "seed"}
    assert result["n"] == 6 and result["seed"] == 2
    assert result["heldout"] == 0.0  # no held-out pair is black
    for kind in ("seen", "heldout"):
        per = result["per_attribute"][kind]
        assert per["shape"] == per["size"] == per["position"] == 1.0
    assert result["seen"] == result["per_attribute"]["seen"]["colour"]  # only black prompts are right


# --- CLIP score and R-precision ---------------------------------------------------------------


class OracleCLIP:
    """Caption j ↦ one-hot e_j; an image whose pixels all equal j / 10 ↦ e_j (so image j "shows" caption j)."""

    def __init__(self, vocabulary):
        self.vocabulary = list(vocabulary)

    def encode_text(self, captions):
        idx = torch.tensor([self.vocabulary.index(c) for c in captions])
        return F.one_hot(idx, len(self.vocabulary)).float()

    def encode_image(self, images):
        idx = (images[:, 0, 0, 0] * 10).round().long()
        return F.one_hot(idx, len(self.vocabulary)).float()


def oracle_data(n: int = 6):
    captions = [f"caption {j}" for j in range(n)]
    images = torch.arange(n).float().div(10).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    return OracleCLIP(captions), images, captions


def test_clip_score_is_100_for_matches_and_0_for_mismatches():
    clip, images, captions = oracle_data()
    assert clip_score(clip, images, captions) == pytest.approx(100.0)
    assert clip_score(clip, images, captions[1:] + captions[:1]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="6 images but 5"):
        clip_score(clip, images, captions[:5])


def test_r_precision_counts_the_own_caption_ranked_first():
    clip, images, captions = oracle_data()
    assert r_precision(clip, images, captions, num_distractors=3) == 1.0
    assert r_precision(clip, images, captions[1:] + captions[:1]) == 0.0  # every image's "own" caption is wrong
    # half the images show the wrong thing
    mixed = torch.cat([images[:3], images[3:].flip(0)])
    assert r_precision(clip, mixed, captions, num_distractors=5) == pytest.approx(4 / 6)  # 3 right + the middle of the flip
    with pytest.raises(ValueError, match="differs"):
        r_precision(clip, images[:2], ["caption 0", "caption 0"])


def test_scores_run_on_a_real_tiny_clip():
    from dalle_mini_core.clip import CLIPModel, clip_config

    torch.manual_seed(0)
    clip = CLIPModel(clip_config("shapes", vision_width=32, vision_layers=1, vision_head_width=16,
                                 text_width=32, text_layers=1, text_heads=2, embed_dim=16)).eval()
    prompts = prompt_set("seen", 4)
    images = torch.stack([RenderPipeline().generate([p], n_per_prompt=1, seed=0)[0] for p in prompts])
    score = clip_score(clip, images, prompts)
    assert 0.0 <= score <= 100.0
    assert 0.0 <= r_precision(clip, images, prompts) <= 1.0


# --- clean pictures -------------------------------------------------------------------------------

def _scenes(n: int, size: int, seed: int = 7):
    from dalle_mini_core.data.shapes import ShapesDataset

    data = ShapesDataset("test", length=n, image_size=size, seed=seed)
    return [data.scene(i) for i in range(n)]


@pytest.mark.parametrize("size", [32, 64])
def test_clean_renders_are_clean_and_corrupted_ones_are_not(size):
    """On renders the calibration did not use (test split): clean ≥ 99%, speckled mostly not."""
    from dalle_mini_core.data.shapes import render_corrupted
    from dalle_mini_core.evaluation.captions import CLEAN_THRESHOLD, background_roughness, clean_share, is_clean

    scenes = _scenes(60, size)
    clean = torch.stack([render(sc, size) for sc in scenes])
    soft = torch.stack([render_corrupted(sc, size, seed=i, noise=0.0) for i, sc in enumerate(scenes)])
    speckled = torch.stack([render_corrupted(sc, size, seed=i) for i, sc in enumerate(scenes)])
    assert clean_share(clean) >= 0.99 and clean_share(soft) >= 0.95
    assert clean_share(speckled) <= 0.1
    assert background_roughness(clean).max() < 0.02  # a render's background is flat to 8-bit rounding
    assert is_clean(speckled, threshold=1.0).all()  # the threshold is what decides
    assert 0 < CLEAN_THRESHOLD < float(background_roughness(speckled).median())


def test_speckle_and_blotches_on_a_flat_background_are_caught_but_objects_are_not():
    from dalle_mini_core.evaluation.captions import is_clean

    scene = Scene((ShapeObject("circle", "red", "large", "centre"),))
    base = render(scene, 32)  # (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    speckle = base.clone()
    ys, xs = torch.randint(0, 8, (30,), generator=g), torch.randint(0, 32, (30,), generator=g)
    speckle[:, ys, xs] += 0.3 * torch.randn(3, 30, generator=g)  # 30 speckled pixels in the top rows
    blotch = base.clone()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blotch[1] += 0.25 * torch.exp(-((yy - 26) ** 2 + (xx - 5) ** 2) / 8.0)  # a soft green blotch, bottom left
    two = render(Scene((ShapeObject("square", "blue", "small", "top left"),
                        ShapeObject("triangle", "yellow", "large", "bottom right"))), 32)
    got = is_clean(torch.stack([base, speckle.clamp(-1, 1), blotch.clamp(-1, 1), two]))
    assert got.tolist() == [True, False, False, True]


def test_clean_threshold_is_the_calibrated_one():
    """CLEAN_THRESHOLD is what `calibrate_clean_threshold` chooses (on fewer renders: within 0.02)."""
    from dalle_mini_core.evaluation.captions import CLEAN_THRESHOLD, calibrate_clean_threshold

    cal = calibrate_clean_threshold(n=60, image_sizes=(32, 64))
    assert abs(cal["threshold"] - CLEAN_THRESHOLD) < 0.02, cal
    assert cal["clean_share_of_clean"] >= 0.98 and cal["clean_share_of_corrupted"] <= 0.02


def test_background_roughness_checks_its_input():
    from dalle_mini_core.evaluation.captions import background_roughness

    with pytest.raises(ValueError, match="images"):
        background_roughness(torch.zeros(3, 32, 32))
