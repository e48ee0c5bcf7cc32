"""Lesson 04 (training): exercise references, cases and plausible wrong answers.

Four exercises, easiest first: the learning-rate schedule (implement), the EMA with warm-up
(implement), a training example drawn from the wrong range of timesteps (find the bug), and where
the error of the clean picture a trained model implies is largest (predict, then measure).
"""
from __future__ import annotations

import math

import torch

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.schedule import NoiseSchedule
from dalle_mini_core.train import EMA

# ------------------------------------------------------------------------------------------------
# 1. Implement: linear warm-up, then half a cosine
# ------------------------------------------------------------------------------------------------


def _cosine_cases():
    # (step, lr, warmup_steps, steps, min_ratio): warm-up, its last step, the first cosine step,
    # the middle, the last step, and a run without warm-up
    # lr = 1 (the schedule as a fraction of the peak rate) is above TrainConfig's max_lr guard: the exercise
    # is to write the formula, and the package's lr_at, which needs a TrainConfig, cannot be called with it
    return [(0, 1e-3, 10, 100, 0.1), (9, 1e-3, 10, 100, 0.1), (10, 1e-3, 10, 100, 0.1),
            (55, 1e-3, 10, 100, 0.1), (99, 1e-3, 10, 100, 0.1), (30, 2e-4, 0, 61, 0.0), (3, 5e-4, 0, 10, 0.5),
            (0, 1.0, 4, 20, 0.0), (12, 1.0, 4, 20, 0.25)]


def _cosine_from_step_0(step, lr, warmup_steps, steps, min_ratio):  # forgets the warm-up
    lo = min_ratio * lr
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * step / (steps - 1)))


def _cosine_to_zero(step, lr, warmup_steps, steps, min_ratio):  # ignores min_ratio
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    p = (step - warmup_steps) / max(1, steps - 1 - warmup_steps)
    return lr * 0.5 * (1 + math.cos(math.pi * p))


def _warmup_from_zero(step, lr, warmup_steps, steps, min_ratio):  # step 0 gets lr 0: a wasted step
    if step < warmup_steps:
        return lr * step / warmup_steps
    lo = min_ratio * lr
    p = (step - warmup_steps) / max(1, steps - 1 - warmup_steps)
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * p))


@exercise("04.cosine_lr", "implement", "cosine_lr",
          hint="during warm-up the rate climbs in equal steps and reaches lr at step W − 1 (steps are 0-based); "
               "after it, p runs from 0 at step W to 1 at the last step (steps − 1), and the half cosine runs "
               "from lr down to min_ratio·lr, not down to 0",
          cases=_cosine_cases, atol=1e-10, rtol=1e-6,
          wrong=(("the cosine starts at step 0 (no warm-up)", _cosine_from_step_0),
                 ("decays to 0 instead of min_ratio·lr", _cosine_to_zero),
                 ("warm-up starts at 0 (lr·s/W)", _warmup_from_zero)))
def cosine_lr(step: int, lr: float, warmup_steps: int, steps: int, min_ratio: float) -> float:
    # written from the formula: the same numbers as train.lr_at wherever a TrainConfig can be built
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    p = min(1.0, (step - warmup_steps) / max(1, steps - 1 - warmup_steps))
    lo = min_ratio * lr
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * p))


# ------------------------------------------------------------------------------------------------
# 2. Implement: the EMA of the weights, with warm-up
# ------------------------------------------------------------------------------------------------


def _ema_cases():
    g = torch.Generator().manual_seed(4)
    cases = []
    for k, shape, decay in ((3, (4,), 0.9), (60, (2, 3), 0.9), (200, (3,), 0.95)):
        start = torch.randn(shape, generator=g, dtype=torch.float64)
        walk = start + torch.cumsum(0.1 * torch.randn((k, *shape), generator=g, dtype=torch.float64), 0)
        cases.append((start, walk, decay))
    return cases


class _Holder(torch.nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(value.clone())


def _no_warmup(initial, weights, decay):
    shadow = initial.clone()
    for w in weights:
        shadow = decay * shadow + (1 - decay) * w
    return shadow


def _warmup_from_one(initial, weights, decay):  # the first update is counted as n = 1
    shadow = initial.clone()
    for n, w in enumerate(weights, start=1):
        d = min(decay, (1 + n) / (10 + n))
        shadow = d * shadow + (1 - d) * w
    return shadow


def _roles_swapped(initial, weights, decay):  # keeps d of the new weights, 1 − d of the average
    shadow = initial.clone()
    for n, w in enumerate(weights):
        d = min(decay, (1 + n) / (10 + n))
        shadow = (1 - d) * shadow + d * w
    return shadow


@exercise("04.ema_warmup", "implement", "ema_with_warmup",
          hint="the shadow starts as the initial weights; update n (n = 0 for the first) keeps a share "
               "d_n = min(decay, (1 + n)/(10 + n)) of the shadow and takes 1 − d_n of the new weights, so the "
               "first update keeps only a tenth of the random start",
          cases=_ema_cases, atol=1e-9, rtol=1e-7,
          wrong=(("no warm-up: decay from the first update", _no_warmup),
                 ("warm-up counted from n = 1", _warmup_from_one),
                 ("shadow and weights swapped", _roles_swapped)))
def ema_with_warmup(initial: torch.Tensor, weights: torch.Tensor, decay: float) -> torch.Tensor:
    source = _Holder(initial)
    ema = EMA(source, decay, warmup=True)  # the package's EMA, on one tensor
    for w in weights:
        with torch.no_grad():
            source.w.copy_(w)
        ema.update(source)
    return ema.model.w.detach().clone()


# ------------------------------------------------------------------------------------------------
# 3. Find the bug: one training example, t drawn from the wrong range
# ------------------------------------------------------------------------------------------------


def _example_cases():
    g = torch.Generator().manual_seed(0)
    cosine = NoiseSchedule.make("cosine", 1000).alphas_cumprod.float()
    short = NoiseSchedule.make("linear", 10).alphas_cumprod.float()
    # seed 0 on 10 steps draws t = [4, 9, 3, 0]: the first and the last index both appear
    return [(torch.rand(4, 3, 2, 2, generator=g) * 2 - 1, short, 0),
            (torch.rand(8, 3, 4, 4, generator=g) * 2 - 1, short, 11),
            (torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, cosine, 5)]


def buggy_training_example(x0, alphas_cumprod, seed):
    """The notebook's broken version: t can never be 0."""
    g = torch.Generator().manual_seed(seed)
    T = len(alphas_cumprod)
    t = torch.randint(1, T, (x0.shape[0],), generator=g)  # Algorithm 1: t ~ Uniform{1, ..., T}
    eps = torch.randn(x0.shape, generator=g)
    a_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a_bar.sqrt() * x0 + (1 - a_bar).sqrt() * eps
    return t, x_t, eps


def _stops_one_short(x0, alphas_cumprod, seed):  # "fixed" the low end, lost the top one
    g = torch.Generator().manual_seed(seed)
    T = len(alphas_cumprod)
    t = torch.randint(0, T - 1, (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return t, a_bar.sqrt() * x0 + (1 - a_bar).sqrt() * eps, eps


def _target_x0(x0, alphas_cumprod, seed):  # the loss against the clean image instead of the noise
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return t, a_bar.sqrt() * x0 + (1 - a_bar).sqrt() * eps, x0


def _no_square_roots(x0, alphas_cumprod, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return t, a_bar * x0 + (1 - a_bar) * eps, eps


@exercise("04.training_example", "find the bug", "training_example",
          hint="the paper counts timesteps 1 … T, the code's alphas_cumprod indexes them 0 … T − 1, and "
               "torch.randint's upper end is exclusive: every index must be drawable. Draw like Denoiser.loss "
               "(t first, then ε, from the seeded generator); x_t mixes with square roots of ᾱ and 1 − ᾱ, "
               "and the target is the noise",
          cases=_example_cases, buggy=buggy_training_example,
          wrong=(("randint(0, T − 1): never draws the last timestep", _stops_one_short),
                 ("target is x₀ instead of ε", _target_x0),
                 ("ᾱ and 1 − ᾱ without square roots", _no_square_roots)))
def training_example(x0: torch.Tensor, alphas_cumprod: torch.Tensor, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return t, a_bar.sqrt() * x0 + (1 - a_bar).sqrt() * eps, eps


# ------------------------------------------------------------------------------------------------
# 4. Predict, then measure: where is the error of the implied clean picture largest?
# ------------------------------------------------------------------------------------------------

X0_ERROR_OPTIONS = {
    "a": "largest at small t, like the ε-loss",
    "b": "largest at large t",
    "c": "largest in the middle (t around 300)",
    "d": "about the same at every t",
}


def judge_x0_error(measured) -> tuple[str, str]:
    """`measured`: {t: mean (x̂₀ − x₀)²} on the 1000-step cosine schedule (the cell's printout)."""
    errors = {int(t): float(v) for t, v in dict(measured).items()}
    if len(errors) < 3 or any(not math.isfinite(v) or v < 0 for v in errors.values()):
        raise ValueError(f"expected {{t: error}} for at least three timesteps, got {measured!r}")
    ts = sorted(errors)
    top = max(ts, key=errors.get)
    spread = max(errors.values()) / max(min(errors.values()), 1e-30)
    if spread < 3:
        letter = "d"
    elif top <= 150:
        letter = "a"
    elif top >= 500:
        letter = "b"
    else:
        letter = "c"
    abar = NoiseSchedule.make("cosine", 1000).alphas_cumprod
    factor = {t: float((1 - abar[t]) / abar[t]) for t in (ts[0], ts[-1])}
    why = ("Measured mean (x̂₀ − x₀)²: " + ", ".join(f"t={t}: {errors[t]:.3g}" for t in ts) + ". "
           "Since x̂₀ = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, the picture's error is x̂₀ − x₀ = −√((1−ᾱ_t)/ᾱ_t)·(ε̂ − ε): "
           f"the squared ε-error times (1−ᾱ_t)/ᾱ_t, which is {factor[ts[0]]:.2g} at t = {ts[0]} and "
           f"{factor[ts[-1]]:.3g} at t = {ts[-1]} on the cosine schedule.")
    if letter == "b":
        why += (" A small ε-loss at large t is still a large error in the picture: there most of the image must be "
                "invented — the harder denoising task that Ho et al. (§3.4) want L_simple to give more of the "
                "network's effort.")
    return letter, why


register(Exercise(
    name="04.x0_error", kind="predict", title="where x̂₀ is worst",
    hint="write x̂₀ − x₀ in terms of ε̂ − ε",
    options=X0_ERROR_OPTIONS, judge=judge_x0_error,
    wrong=(("the ε-loss pattern carried over", ("a", {10: 2.4e-5, 100: 8e-4, 300: 0.012, 600: 0.05, 900: 0.21})),
           ("'the same everywhere'", ("d", {10: 2.4e-5, 100: 8e-4, 300: 0.012, 600: 0.05, 900: 0.21})),
           ("the middle", ("c", {10: 3e-5, 100: 1e-3, 300: 0.02, 600: 0.09, 900: 0.4}))),
))
