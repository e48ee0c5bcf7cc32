"""Lesson 02 (the noise schedule): exercise references, cases and plausible wrong answers."""
from __future__ import annotations

import torch

from dalle_mini_core.exercises import exercise
from dalle_mini_core.schedule import NoiseSchedule, cosine_betas, linear_betas


def _alphas_cumprod_cases():
    return [(linear_betas(10),), (cosine_betas(50),), (torch.tensor([0.5, 0.5], dtype=torch.float64),)]


def _off_by_one(betas):  # ᾱ_t = ∏_{s<t}: the product stops one step early
    return torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, 0)[:-1]])


@exercise("02.alphas_cumprod", "implement", "ᾱ from betas",
          hint="ᾱ_t is a running product of (1 − β_s) for s = 0 … t, the step t included",
          cases=_alphas_cumprod_cases,
          wrong=(("product of the betas, not of 1 − β", lambda b: torch.cumprod(b, 0)),
                 ("one step behind", _off_by_one)))
def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    return NoiseSchedule(betas).alphas_cumprod.to(betas.dtype)
