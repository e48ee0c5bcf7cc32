"""Measuring a diffusion prior (dalle_mini_core.evaluation.prior): the baselines, retrieval with and
without relevance, cosine, diversity, and `evaluate_prior`'s report."""
from __future__ import annotations

import pytest
import torch

from dalle_mini_core.evaluation.prior import (
    cosine_to_true,
    evaluate_prior,
    mean_pairwise_cosine_distance,
    nearest_neighbour_baseline,
    retrieval_top1,
    text_embedding_baseline,
)
from dalle_mini_core.prior import DiffusionPrior

from tiny_models import PRIOR_D as D, PRIOR_L as L, PRIOR_V as V, tiny_prior_config as tiny_config, unit_vectors as unit

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py




def test_baselines_and_metrics():
    train_text, train_image = unit(10, D), unit(10, D, seed=1)
    query = train_text[[4, 7]] + 0.01 * unit(2, D, seed=2)
    assert torch.equal(nearest_neighbour_baseline(query, train_text, train_image), train_image[[4, 7]])
    assert torch.equal(text_embedding_baseline(query), query)
    gallery = unit(6, D, seed=3)
    assert retrieval_top1(gallery, gallery) == 1.0
    assert retrieval_top1(gallery.roll(1, dims=0), gallery) == 0.0
    assert cosine_to_true(gallery, gallery) == pytest.approx(1.0)
    assert mean_pairwise_cosine_distance(gallery[:1].repeat(4, 1)) == pytest.approx(0.0, abs=1e-6)
    # two orthogonal vectors: distance exactly 1
    assert mean_pairwise_cosine_distance(torch.eye(2)) == pytest.approx(1.0)


def test_retrieval_with_relevance_counts_any_scene_the_caption_fits():
    gallery = unit(4, D, seed=3)
    pred = gallery[[1, 1, 2, 3]]  # row 0 retrieves scene 1
    relevance = torch.eye(4, dtype=torch.bool)
    assert retrieval_top1(pred, gallery, relevance) == pytest.approx(0.75)  # strict: row 0 misses
    relevance[0, 1] = True  # caption 0 also describes scene 1
    assert retrieval_top1(pred, gallery, relevance) == pytest.approx(1.0)
    assert retrieval_top1(pred, gallery) == pytest.approx(0.75)  # no relevance: strict
    with pytest.raises(ValueError, match="relevance must be"):
        retrieval_top1(pred, gallery, relevance[:3])
    with pytest.raises(ValueError, match=r"relevance\[i, i\]"):
        retrieval_top1(pred, gallery, torch.zeros(4, 4, dtype=torch.bool))


def test_evaluate_prior_report_keys():
    prior = DiffusionPrior(tiny_config()).eval()
    N = 30
    tokens = torch.arange(N * L).view(N, L) % V
    tokens[:, 0] = torch.arange(N)  # every caption distinct
    data = {"text_emb": unit(N, D), "image_emb": unit(N, D, seed=1), "tokens": tokens}
    out = evaluate_prior(prior, data, data, n=12, seed=3, steps=4, diversity_captions=2, diversity_samples=3)
    methods = {"prior", "text_embedding", "nearest_neighbour"}
    assert out["n"] == 12 and out["seed"] == 3
    assert len(out["rows"]) == 12 and len(set(out["rows"])) == 12  # the distinct-caption rows scored
    for key in ("retrieval_top1", "cosine_to_true", "cosine_to_unrelated", "diversity"):
        assert set(out[key]) == methods
    assert set(out["prior_mean"]) == {"retrieval_top1", "cosine_to_true", "cosine_to_unrelated"}
    assert "retrieval_top1_relevant" not in out
    everything = evaluate_prior(prior, data, data, n=12, seed=3, steps=4, diversity_captions=2, diversity_samples=3,
                                relevance=lambda rows: torch.ones(len(rows), len(rows), dtype=torch.bool))
    # every caption fits every scene: any retrieval is a hit
    assert everything["retrieval_top1_relevant"] == {m: 1.0 for m in methods | {"prior_mean"}}
    # the training set contains the test pairs, so the nearest neighbour is the true image
    assert out["retrieval_top1"]["nearest_neighbour"] == 1.0
    assert out["cosine_to_true"]["nearest_neighbour"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="distinct captions"):
        evaluate_prior(prior, data, {**data, "tokens": torch.zeros(N, L, dtype=torch.long)}, n=5, steps=2)


def test_evaluate_prior_oracle_and_groups():
    prior = DiffusionPrior(tiny_config()).eval()
    N = 30
    tokens = torch.arange(N * L).view(N, L) % V
    tokens[:, 0] = torch.arange(N)
    data = {"text_emb": unit(N, D), "image_emb": unit(N, D, seed=1), "tokens": tokens}
    # an oracle that returns the true image embeddings retrieves perfectly
    out = evaluate_prior(prior, data, data, n=12, seed=3, steps=2, diversity_captions=2, diversity_samples=2,
                         oracle=lambda rows: data["image_emb"][rows],
                         groups=lambda rows: ["even" if int(r) % 2 == 0 else "odd" for r in rows],
                         relevance=lambda rows: torch.eye(len(rows), dtype=torch.bool))
    assert out["retrieval_top1"]["oracle_sample"] == 1.0
    # an oracle that returns the same embedding for every draw of a caption has no spread
    assert out["diversity"]["oracle_sample"] == pytest.approx(0.0, abs=1e-6)
    assert out["cosine_to_true"]["oracle_sample"] == pytest.approx(1.0)
    by = out["retrieval_top1_by_group"]
    assert set(by) == {"even", "odd"} and by["even"]["n"] + by["odd"]["n"] == 12
    for label in by:
        assert by[label]["strict"]["oracle_sample"] == 1.0
        assert set(by[label]["relevant"]) == {"prior", "text_embedding", "nearest_neighbour", "oracle_sample", "prior_mean"}
    # the group scores average back to the overall score
    overall = sum(by[g]["n"] * by[g]["strict"]["text_embedding"] for g in by) / 12
    assert overall == pytest.approx(out["retrieval_top1"]["text_embedding"])
    with pytest.raises(ValueError, match="oracle"):
        evaluate_prior(prior, data, data, n=12, steps=2, oracle=lambda rows: data["image_emb"][:3])
    with pytest.raises(ValueError, match="one label per row"):
        evaluate_prior(prior, data, data, n=12, steps=2, groups=lambda rows: ["a"])


def test_embed_dataset_rows_are_batch_ready_training_pairs():
    from dalle_mini_core.clip import CLIPConfig, CLIPModel
    from dalle_mini_core.data.shapes import ShapesDataset
    from dalle_mini_core.evaluation.clip import encode_dataset
    from dalle_mini_core.evaluation.prior import embed_dataset

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(image_size=16, patch_size=4, vision_width=32, vision_layers=1, vision_head_width=16,
                                text_width=32, text_layers=1, text_heads=2, embed_dim=16, context_length=16)).eval()
    ds = ShapesDataset("test", length=10, image_size=16)
    emb = embed_dataset(clip, ds, 4, start=3, batch_size=3)
    assert emb["text_emb"].shape == emb["image_emb"].shape == (4, 16)
    assert emb["tokens"].shape == (4, 16) and emb["tokens"].dtype == torch.long
    assert emb["caption"] == [ds[i][1] for i in range(3, 7)]  # items start … start + n − 1, in order
    image_emb, text_emb, _ = encode_dataset(clip, ds, [5])  # item 5 is row 2
    torch.testing.assert_close(emb["image_emb"][2], image_emb[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(emb["text_emb"][2], text_emb[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="do not fit"):
        embed_dataset(clip, ds, 8, start=3)
    with pytest.raises(ValueError, match="positive int"):
        embed_dataset(clip, ds, 0)
