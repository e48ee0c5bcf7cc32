"""Moving between unCLIP's latents: spherical interpolation and the text-diff direction.

Ramesh et al. 2022 (§3.2–3.3) edit images by moving their CLIP image embedding z_i (and the
decoder's noise x_T) on a sphere rather than along a straight line:

* `slerp` — spherical linear interpolation (Shoemake 1985): constant angular speed along the
  great circle, so unit vectors stay unit vectors and Gaussian noises stay Gaussian-sized;
* `text_diff_embeddings` — z_θ = slerp(z_i, z_d, θ) towards the direction
  z_d = normalise(z_t(to) − z_t(from)) between two captions.

`dalle_mini_core.pipeline.UnCLIP.interpolate` and ``text_diff`` decode these embeddings.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import validate as V

__all__ = ["slerp", "text_diff_embeddings"]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """Spherical linear interpolation along the last dimension (Shoemake 1985).

        slerp(a, b, t) = sin((1 − t)Ω) / sin Ω · a + sin(tΩ) / sin Ω · b,   cos Ω = â · b̂

    Moves along the great circle from `a` (t = 0) to `b` (t = 1) at constant angular speed: the
    angle between a and the result is t·Ω. For unit vectors the result is a unit vector (and two
    vectors of equal norm keep it, so Gaussian noises stay Gaussian-sized, unlike a linear mix).
    `t` is a number or a tensor that broadcasts against ``a[..., :1]`` (e.g. (K, 1) with a (D,)
    or (1, D) gives K points). Near-parallel vectors fall back to a linear mix; opposite ones
    have no unique great circle and raise ValueError.
    """
    if not torch.is_tensor(a) or not torch.is_tensor(b) or not a.is_floating_point() or not b.is_floating_point():
        raise TypeError("a and b must be float tensors")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a and b must have the same last dimension, got {tuple(a.shape)} and {tuple(b.shape)}")
    V.finite_tensor("a", a)
    V.finite_tensor("b", b)
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t holds NaN or infinite values")
    a64, b64 = a.double(), b.double()
    cos = (F.normalize(a64, dim=-1) * F.normalize(b64, dim=-1)).sum(-1, keepdim=True).clamp(-1.0, 1.0)  # (..., 1)
    if bool((cos < -1.0 + eps).any()):
        raise ValueError("slerp between opposite vectors is undefined (no unique great circle)")
    omega = torch.arccos(cos)  # (..., 1), the angle Ω
    sin = torch.sin(omega)
    near = sin < eps  # nearly parallel: sin(tΩ)/sin Ω → t
    safe = torch.where(near, torch.ones_like(sin), sin)
    w_a = torch.where(near, 1 - t, torch.sin((1 - t) * omega) / safe)
    w_b = torch.where(near, t, torch.sin(t * omega) / safe)
    return (w_a * a64 + w_b * b64).to(torch.promote_types(a.dtype, b.dtype))


def text_diff_embeddings(
    image_emb: torch.Tensor, from_text_emb: torch.Tensor, to_text_emb: torch.Tensor, strengths: Sequence[float]
) -> torch.Tensor:
    """The text-diff path of Ramesh et al. 2022, §3.3: z_θ = slerp(z_i, z_d, θ) for each θ.

    z_d = normalise(z_t(to) − z_t(from)) is the direction between the two captions. Inputs are
    (D,) or (1, D) unit-norm embeddings; returns (K, D) for K strengths, row 0 = z_i when θ₀ = 0.
    """
    z_i, z_from, z_to = (e.reshape(1, -1) for e in (image_emb, from_text_emb, to_text_emb))  # (1, D)
    diff = z_to - z_from
    if float(diff.norm()) < 1e-6:
        raise ValueError("from_caption and to_caption have the same text embedding: there is no direction to move in")
    z_d = F.normalize(diff, dim=-1)  # (1, D)
    theta = torch.as_tensor(list(strengths), dtype=torch.float64, device=z_i.device).view(-1, 1)  # (K, 1)
    return slerp(z_i, z_d, theta)  # (K, D)
