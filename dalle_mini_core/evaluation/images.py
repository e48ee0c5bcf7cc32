"""Distances between sets of images, and whether a generated picture is the thing it was asked for.

Two families of measures for generated images, both computed from features that the caller
supplies, so that nothing is downloaded (the usual FID reads Inception-v3 features; this course
uses its own CLIP's image embeddings instead, as Kynkäänniemi et al. 2023, "The Role of ImageNet
Classes in Fréchet Inception Distance", recommend CLIP features for a less ImageNet-biased FID):

* `frechet_distance` (FID, Heusel et al. 2017): fit a Gaussian to each set of features and
  measure ``|μ_a − μ_b|² + Tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½)``. Biased for small sets: compare
  a generated set with a real-vs-real floor of the same size, never across sizes.
* `kernel_distance` (KID, Bińkowski et al. 2018): the unbiased squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x·y / d + 1)³``, averaged over random subsets; unbiased, so it
  can be slightly negative for two samples of one distribution.
* `identity_retrieval`: for each generated picture, rank a gallery of real images by distance in
  a feature space the generator was not trained against (for example raw pixels at 32×32) and
  report how often the asked-for image is the nearest (top-1) or among the k nearest, with the
  chance level ``k / len(gallery)``.

`clip_image_features` turns images into the features the distances use.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..options import model_device

__all__ = [
    "frechet_distance",
    "kernel_distance",
    "identity_retrieval",
    "clip_image_features",
    "pixel_features",
]


def _features(x: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(x) or x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor of features (n, d); got {getattr(x, 'shape', type(x))}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows (one feature vector per image); got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x.detach().to(torch.float64).cpu()


def _mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features (rows = images).

    ``Tr((Σ_a Σ_b)^½)`` is computed as ``Tr((Σ_a^½ Σ_b Σ_a^½)^½)``, which has the same eigenvalues
    but is symmetric, so its square root is taken with a symmetric eigendecomposition.
    """
    fa, fb = _features(a, "a"), _features(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature sizes differ: a has {fa.shape[1]}, b has {fb.shape[1]}")
    mu_a, cov_a = _mean_cov(fa)
    mu_b, cov_b = _mean_cov(fb)
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return float(value)


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    k_xx = (x @ x.T * gamma + coef) ** degree
    k_yy = (y @ y.T * gamma + coef) ** degree
    k_xy = (x @ y.T * gamma + coef) ** degree
    m, n = x.shape[0], y.shape[0]
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean()


def kernel_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: the mean and standard deviation of the unbiased squared MMD over random subsets.

    ``subset_size`` defaults to the smaller set's size (then every subset is the whole set and
    the standard deviation is 0). Subsets are drawn with a seeded generator: same seed, same value.
    """
    fa, fb = _features(a, "a"), _features(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature sizes differ: a has {fa.shape[1]}, b has {fb.shape[1]}")
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer; got {subsets!r}")
    size = min(len(fa), len(fb)) if subset_size is None else subset_size
    if not isinstance(size, int) or size < 2 or size > min(len(fa), len(fb)):
        raise ValueError(f"subset_size must be an integer in [2, {min(len(fa), len(fb))}] (the smaller set's size); got {size!r}")
    gamma = 1.0 / fa.shape[1] if gamma is None else gamma
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        x = fa[torch.randperm(len(fa), generator=generator)[:size]]
        y = fb[torch.randperm(len(fb), generator=generator)[:size]]
        scores.append(_unbiased_mmd2(x, y, degree, gamma, coef))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


def identity_retrieval(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    *,
    ks: Sequence[int] = (1, 5),
    metric: str = "euclidean",
) -> dict[str, Any]:
    """How often each query's nearest gallery items include its target.

    `queries` (n, d) and `gallery` (m, d) are features (flattened pixels, embeddings...); row i of
    `queries` was asked to be gallery item ``targets[i]``. ``metric`` is ``"euclidean"`` or
    ``"cosine"``. Returns ``top{k}`` accuracies, their chance levels ``chance_top{k} = k / m``,
    each query's ``rank`` of its target (0 = nearest) and its ``nearest`` gallery index.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine'; got {metric!r}")
    q = queries.detach().to(torch.float64).flatten(1).cpu()
    g = gallery.detach().to(torch.float64).flatten(1).cpu()
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features per row, the gallery {g.shape[1]}")
    t = torch.as_tensor(targets, dtype=torch.long).cpu()
    if t.shape != (len(q),):
        raise ValueError(f"targets must hold one gallery index per query ({len(q)}); got shape {tuple(t.shape)}")
    if len(t) and (t.min() < 0 or t.max() >= len(g)):
        raise ValueError(f"targets must be gallery indices in [0, {len(g) - 1}]")
    if metric == "cosine":
        distance = 1 - F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    else:
        distance = torch.cdist(q, g)
    own = distance.gather(1, t[:, None])
    rank = (distance < own).sum(1)  # ties count in the query's favour
    result: dict[str, Any] = {"n": len(q), "gallery": len(g), "rank": rank.tolist(),
                              "nearest": distance.argmin(1).tolist()}
    for k in ks:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"every k must be a positive integer; got {k!r}")
        result[f"top{k}"] = float((rank < k).double().mean()) if len(q) else float("nan")
        result[f"chance_top{k}"] = min(k, len(g)) / len(g)
    return result


def pixel_features(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] → flattened pixels at ``size``×``size`` (area-averaged)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images.float(), size=(size, size), mode="area")
    return images.float().flatten(1)


@torch.inference_mode()
def clip_image_features(clip: Any, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """CLIP image embeddings (L2-normalised) of images in [-1, 1], in batches, on the model's device."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    device = model_device(clip)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].to(device)
        out.append(F.normalize(clip.encode_image(chunk).float(), dim=-1).cpu())
    return torch.cat(out)
