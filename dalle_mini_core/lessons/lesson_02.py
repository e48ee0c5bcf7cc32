"""Lesson 02 (the noise schedule): exercise references, cases and plausible wrong answers."""
from __future__ import annotations

import torch

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.schedule import NoiseSchedule, cosine_betas, linear_betas

# ------------------------------------------------------------------------------------------------
# 1. Find the bug: ᾱ one step behind
# ------------------------------------------------------------------------------------------------


def _alphas_cumprod_cases():
    return [(torch.tensor([0.5, 0.2], dtype=torch.float64),), (linear_betas(10),), (cosine_betas(50),),
            (torch.stack([linear_betas(10), cosine_betas(10), linear_betas(10, 1e-3, 0.05)]),)]


def _off_by_one(betas):  # ᾱ_t = ∏_{s<t}: the product stops one step early
    start = torch.ones_like(betas[..., :1])
    return torch.cat([start, torch.cumprod(1 - betas, dim=-1)[..., :-1]], dim=-1)


@exercise("02.alphas_cumprod", "find the bug", "ᾱ from betas",
          hint="ᾱ_t is a running product of (1 − β_s) for s = 0 … t, the step t included: code index 0 is paper "
               "step 1, which already adds noise, so ᾱ at code index 0 is 1 − β_0, not 1; and the product runs "
               "along the last axis (one schedule per row), never across schedules",
          cases=_alphas_cumprod_cases, buggy=_off_by_one,
          wrong=(("product of the betas, not of 1 − β", lambda b: torch.cumprod(b, 0)),
                 ("the running sum of the betas subtracted from 1", lambda b: 1 - torch.cumsum(b, 0)),
                 ("the product along the first axis, across schedules", lambda b: torch.cumprod(1 - b, dim=0))))
def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    rows = betas.reshape(-1, betas.shape[-1])  # one schedule per row; the package's NoiseSchedule takes one at a time
    return torch.stack([NoiseSchedule(b).alphas_cumprod.to(betas.dtype) for b in rows]).reshape(betas.shape)


# ------------------------------------------------------------------------------------------------
# 2. Implement: the posterior variance β̃ for every step
# ------------------------------------------------------------------------------------------------


def _posterior_cases():
    return [(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),), (linear_betas(20),), (cosine_betas(100),)]


def _abar(betas):
    return torch.cumprod(1 - betas, 0)


def _no_shift(betas):  # ᾱ_t where ᾱ_{t-1} belongs: the ratio is 1, so β̃ = β
    abar = _abar(betas)
    return betas * (1 - abar) / (1 - abar)


def _prepend_zero(betas):  # ᾱ_0 taken as 0 instead of 1
    abar = _abar(betas)
    prev = torch.cat([torch.zeros(1, dtype=betas.dtype), abar[:-1]])
    return betas * (1 - prev) / (1 - abar)


def _ratio_upside_down(betas):
    abar = _abar(betas)
    prev = torch.cat([torch.ones(1, dtype=betas.dtype), abar[:-1]])
    return betas * (1 - abar) / (1 - prev)


@exercise("02.posterior_variance", "implement", "posterior variance",
          hint="β̃_t = β_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t) needs ᾱ one step back: shift the ᾱ table right by one and "
               "put ᾱ before the first step (no noise yet, so 1) in front; β̃ at code index 0 is then exactly 0",
          cases=_posterior_cases,
          wrong=(("ᾱ_t used where ᾱ_{t-1} belongs", _no_shift),
                 ("ᾱ before the first step taken as 0", _prepend_zero),
                 ("the ratio upside down", _ratio_upside_down)))
def posterior_variance(betas: torch.Tensor) -> torch.Tensor:
    abar = _abar(betas)
    prev = torch.cat([torch.ones(1, dtype=betas.dtype), abar[:-1]])
    return betas * (1 - prev) / (1 - abar)


# ------------------------------------------------------------------------------------------------
# 3. Implement: x₀ from the velocity v
# ------------------------------------------------------------------------------------------------


def _v_cases():
    g = torch.Generator().manual_seed(7)
    cos, lin = NoiseSchedule.make("cosine", 1000), NoiseSchedule.make("linear", 1000)
    x_t, v = torch.randn(2, 3, 3, 4, 4, generator=g)
    return [(x_t, torch.tensor([0, 500, 999]), v, cos.alphas_cumprod),
            (x_t[:1], torch.tensor([42]), v[:1], lin.alphas_cumprod)]


def _per_example(a, t):  # ᾱ[t] as (B, 1, 1, 1)
    return a[t].view(-1, 1, 1, 1)


def _v_sign(x_t, t, v, a):
    ab = _per_example(a, t)
    return ab.sqrt() * x_t + (1 - ab).sqrt() * v


def _v_swapped(x_t, t, v, a):  # this is ε, not x₀
    ab = _per_example(a, t)
    return (1 - ab).sqrt() * x_t + ab.sqrt() * v


def _v_no_reshape(x_t, t, v, a):  # (B,) against (B, C, H, W): does not broadcast
    return a[t].sqrt() * x_t - (1 - a[t]).sqrt() * v


def _v_no_sqrt(x_t, t, v, a):
    ab = _per_example(a, t)
    return ab * x_t - (1 - ab) * v


@exercise("02.x0_from_v", "implement", "x₀ from v",
          hint="x_t = √ᾱ·x₀ + √(1−ᾱ)·ε and v = √ᾱ·ε − √(1−ᾱ)·x₀ are two linear equations in x₀ and ε: eliminate ε "
               "(the two coefficients' squares add up to 1); ᾱ differs per example, so shape ᾱ[t] as (B, 1, 1, 1)",
          cases=_v_cases,
          wrong=(("sign of the v term flipped", _v_sign),
                 ("coefficients swapped (that gives ε)", _v_swapped),
                 ("ᾱ[t] not reshaped to broadcast", _v_no_reshape),
                 ("ᾱ without the square roots", _v_no_sqrt)))
def x0_from_v(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    ab = _per_example(alphas_cumprod, t).to(x_t.dtype)
    return ab.sqrt() * x_t - (1 - ab).sqrt() * v


# ------------------------------------------------------------------------------------------------
# 4. Predict, then measure: where signal and noise are equal
# ------------------------------------------------------------------------------------------------


def _judge_snr_crossing(measured) -> tuple[str, str]:
    lin, cos = (int(v) for v in measured)
    if lin <= 0 or cos <= 0:
        raise ValueError(f"expected two positive step indices (linear, cosine), got {measured!r}")
    ratio = cos / lin
    if ratio < 0.9:
        letter = "a"
    elif ratio <= 1.1:
        letter = "b"
    elif ratio <= 2.5:
        letter = "c"
    else:
        letter = "d"
    why = (f"Measured: the linear schedule is half signal, half noise (SNR = 1) from code index {lin}, the "
           f"cosine schedule from {cos}, {ratio:.1f} times as late. ")
    if letter == "c":
        why += ("The linear schedule's betas grow evenly, so ᾱ, a product, falls fast once they are large: it "
                f"has lost half its signal variance by code index {lin}. The cosine schedule is built so that ᾱ "
                "falls like a squared cosine of t/T, which is one half near the middle of the process.")
    return letter, why


register(Exercise(
    name="02.snr_crossing", kind="predict", title="where signal equals noise",
    hint="read where each log-SNR curve crosses 0 in the plot, or where each ᾱ curve crosses 1/2",
    options={"a": "the cosine schedule reaches SNR = 1 earlier than the linear one",
             "b": "both at about the same step (within 10%)",
             "c": "the cosine schedule later, 1.1 to 2.5 times as late",
             "d": "the cosine schedule more than 2.5 times as late"},
    judge=_judge_snr_crossing,
    wrong=(("cosine is the gentler schedule, so it crosses very late", ("d", (259, 496))),
           ("the curves look alike", ("b", (259, 496))),
           ("cosine destroys the picture first", ("a", (259, 496)))),
))
