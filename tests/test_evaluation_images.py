"""FID and KID on given features (parity with torchmetrics), and identity retrieval."""
from __future__ import annotations

import pytest
import torch

from dalle_mini_core.evaluation.images import (
    clip_image_features, frechet_distance, identity_retrieval, kernel_distance, pixel_features,
)


def _sets(n=300, d=16, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5
    a = torch.randn(n, d, generator=g) @ mix
    b = torch.randn(n, d, generator=g) @ mix + shift
    return a, b


class _Identity(torch.nn.Module):
    """A 'feature extractor' that returns its input, so torchmetrics sees our features."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


def test_fid_matches_torchmetrics_on_the_same_features():
    tm = pytest.importorskip("torchmetrics.image.fid")
    for shift in (0.0, 0.3, 2.0):
        a, b = _sets(shift=shift)
        metric = tm.FrechetInceptionDistance(feature=_Identity(a.shape[1]))
        metric.update(a, real=True)
        metric.update(b, real=False)
        assert frechet_distance(a, b) == pytest.approx(float(metric.compute()), rel=1e-5, abs=1e-6)


def test_kid_matches_torchmetrics_on_whole_sets():
    tm = pytest.importorskip("torchmetrics.image.kid")
    a, b = _sets(n=120, shift=0.5)
    metric = tm.KernelInceptionDistance(feature=_Identity(a.shape[1]), subsets=1, subset_size=120)
    metric.update(a, real=True)
    metric.update(b, real=False)
    want_mean, _ = metric.compute()
    # torchmetrics computes MMD(real, fake) in the features' dtype; ours in float64
    assert kernel_distance(a, b, subsets=1)[0] == pytest.approx(float(want_mean), rel=1e-4, abs=1e-6)


def test_a_set_against_itself_is_zero():
    a, _ = _sets()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert abs(kernel_distance(a, a, subsets=1)[0]) < 1e-2 * kernel_distance(a, a + 1.0, subsets=1)[0]


def test_distances_grow_with_added_noise():
    a, b = _sets(seed=1)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(b.shape, generator=g)
    fids = [frechet_distance(a, b + s * noise) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert fids == sorted(fids) and fids[-1] > 10 * fids[0]
    # KID is unbiased: for two samples of one distribution it scatters around 0 (by about its
    # subset standard deviation), and it grows once the noise is larger than that scatter
    kids = [kernel_distance(a, b + s * noise, subsets=50, subset_size=150) for s in (0.0, 1.0, 2.0, 4.0)]
    means = [m for m, _ in kids]
    assert abs(means[0]) < 2 * kids[0][1]
    assert means == sorted(means) and means[-1] > 100 * abs(means[0])


def test_kid_subsets_are_seeded():
    a, b = _sets(shift=0.2)
    assert kernel_distance(a, b, subsets=5, subset_size=50, seed=3) == kernel_distance(a, b, subsets=5, subset_size=50, seed=3)
    assert kernel_distance(a, b, subsets=5, subset_size=50, seed=3) != kernel_distance(a, b, subsets=5, subset_size=50, seed=4)


@pytest.mark.parametrize("bad, message", [
    (lambda a: (a[:1], a), "at least 2 rows"),
    (lambda a: (a, a[:, :3]), "feature sizes differ"),
    (lambda a: (a.flatten(), a), "2-D tensor"),
    (lambda a: (torch.full_like(a, float("nan")), a), "NaN"),
])
def test_bad_features_are_refused_clearly(bad, message):
    a, _ = _sets(n=10)
    x, y = bad(a)
    with pytest.raises(ValueError, match=message):
        frechet_distance(x, y)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(a, a, subset_size=11)


def test_identity_retrieval_ranks_and_chance():
    gallery = torch.eye(10)
    queries = gallery[[3, 7, 1]] + 0.01
    queries[2] = gallery[5]  # asked for 1, drew 5
    result = identity_retrieval(queries, gallery, [3, 7, 1], ks=(1, 5))
    assert result["top1"] == pytest.approx(2 / 3)
    assert result["nearest"] == [3, 7, 5]
    assert result["chance_top1"] == 0.1 and result["chance_top5"] == 0.5
    assert result["rank"][:2] == [0, 0] and result["rank"][2] >= 1
    with pytest.raises(ValueError, match="targets"):
        identity_retrieval(queries, gallery, [3, 7, 10])


def test_pixel_features_area_downsample():
    x = torch.ones(2, 3, 64, 64)
    f = pixel_features(x, 32)
    assert f.shape == (2, 3 * 32 * 32) and torch.allclose(f, torch.ones_like(f))


def test_clip_image_features_are_unit_norm():
    from dalle_mini_core.clip import CLIPModel, clip_config

    torch.manual_seed(0)
    clip = CLIPModel.from_config(clip_config("shapes"))
    feats = clip_image_features(clip, torch.rand(5, 3, 32, 32) * 2 - 1, batch_size=2)
    assert feats.shape[0] == 5
    assert torch.allclose(feats.norm(dim=1), torch.ones(5), atol=1e-5)
