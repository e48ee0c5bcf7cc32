"""Lesson 05 (sampling): exercise references, cases and plausible wrong answers.

Five exercises, easiest first: classifier-free guidance in Ho & Salimans' form (implement), what
x̂₀ clipping is worth (predict, then measure), one DDIM step with η (implement), fresh noise at five
steps (predict, then measure) and a DDIM inversion that goes nowhere (find the bug).
"""
from __future__ import annotations

import math

import torch

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.sampling import ddim_invert, guided
from dalle_mini_core.schedule import NoiseSchedule

# ------------------------------------------------------------------------------------------------
# 1. Implement: classifier-free guidance, Ho & Salimans' form
# ------------------------------------------------------------------------------------------------


class ToyConditionalModel:
    """A stand-in for a conditional denoiser ε_θ(x_t, t, c): any fixed function of its inputs will do."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x_t * (1 + c) + t.view(-1, 1, 1, 1).to(x_t.dtype) / 1000) - 0.3 * c

    def __repr__(self) -> str:
        return "toy model ε(x_t, t, c)"


toy_conditional_model = ToyConditionalModel()


def _guidance_cases():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([10, 700])
    cond, null = torch.randn(2, 3, 1, 1, generator=g), torch.zeros(2, 3, 1, 1)
    return [(toy_conditional_model, x, t, cond, null, 0.0),
            (toy_conditional_model, x, t, cond, null, 2.0),
            (toy_conditional_model, x[:1], t[:1], cond[:1], torch.randn(1, 3, 1, 1, generator=g), 7.5)]


def _glide_with_s_equal_w(model, x_t, t, cond, null, w):  # GLIDE's form, but with s = w
    e_c, e_u = model(x_t, t, cond), model(x_t, t, null)
    return e_u + w * (e_c - e_u)


def _roles_swapped(model, x_t, t, cond, null, w):
    e_c, e_u = model(x_t, t, cond), model(x_t, t, null)
    return (1 + w) * e_u - w * e_c


def _weights_not_summing_to_one(model, x_t, t, cond, null, w):
    e_c, e_u = model(x_t, t, cond), model(x_t, t, null)
    return w * e_c - w * e_u


@exercise("05.guidance", "implement", "guided_eps",
          hint="Ho & Salimans' w = 0 must give the conditional model's ε exactly, and the two weights (1 + w) "
               "and −w add up to 1. GLIDE's ε_u + s·(ε_c − ε_u) is the same rule with s = 1 + w, not s = w",
          cases=_guidance_cases,
          wrong=(("GLIDE's form with s = w", _glide_with_s_equal_w),
                 ("conditional and unconditional swapped", _roles_swapped),
                 ("w·(ε_c − ε_u): the weights do not add up to 1", _weights_not_summing_to_one)))
def guided_eps(model, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, null: torch.Tensor, w: float):
    # the package's wrapper takes GLIDE's scale s = 1 + w and runs both halves in one doubled batch
    return guided(model, 1 + w, {"c": null})(x_t, t, c=cond)


# ------------------------------------------------------------------------------------------------
# 2. Predict, then measure: sampling without x̂₀ clipping
# ------------------------------------------------------------------------------------------------

NO_CLIP_OPTIONS = {
    "a": "about as many pictures with one clean shape as with clipping",
    "b": "fewer, but many pictures still usable",
    "c": "almost none usable: the values run far outside [−1, 1]",
}


def _share(value, name: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")
    return v


def judge_no_clip(measured) -> tuple[str, str]:
    """`measured`: {"clipped": share, "unclipped": share, "largest": max |value| without clipping}."""
    m = dict(measured)
    clipped, unclipped = _share(m["clipped"], "clipped"), _share(m["unclipped"], "unclipped")
    largest = float(m["largest"])
    if unclipped <= 0.1:
        letter = "c"
    elif unclipped >= clipped - 0.125:
        letter = "a"
    else:
        letter = "b"
    abar_999 = float(NoiseSchedule.make("cosine", 1000).alphas_cumprod[999])
    why = (f"Measured: one clean shape in {clipped:.0%} of the samples with clipping and {unclipped:.0%} without; "
           f"the largest |value| without clipping was {largest:.3g} (the data lies in [−1, 1]). The first step "
           f"starts at t = 999, where ᾱ ≈ {abar_999:.1e}: x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ divides by "
           f"{math.sqrt(abar_999):.1e}, so an ε̂ error of 0.01 becomes an x̂₀ error of about "
           f"{0.01 / math.sqrt(abar_999):.0f}. ")
    if letter == "c":
        why += ("DDIM builds the next state from that x̂₀, and with η = 0 no later step removes it. The clip holds "
                "x̂₀ in the data range, so the first guess is at worst a saturated colour, which the following "
                "steps can still correct.")
    else:
        why += ("Here the model's first guesses were accurate enough that the division did little harm; with a "
                "less exact model, or a schedule reaching further up, it would not be.")
    return letter, why


register(Exercise(
    name="05.no_clip", kind="predict", title="sampling without clipping",
    hint="what does x̂₀ divide by at the first step?",
    options=NO_CLIP_OPTIONS, judge=judge_no_clip,
    wrong=(("'clipping is a detail'", ("a", {"clipped": 0.31, "unclipped": 0.0, "largest": 14000.0})),
           ("'a bit more speckle'", ("b", {"clipped": 0.31, "unclipped": 0.0, "largest": 14000.0})),
           ("'nothing usable' when most survive", ("c", {"clipped": 0.5, "unclipped": 0.44, "largest": 1.3}))),
))


# ------------------------------------------------------------------------------------------------
# 3. Implement: one DDIM step with η
# ------------------------------------------------------------------------------------------------


def _ddim_cases():
    g = torch.Generator().manual_seed(11)
    x, eps, z = torch.randn(3, 3, 3, 4, 4, generator=g)
    a_t = torch.tensor([0.5, 0.1, 0.9])
    a_prev = torch.tensor([0.7, 0.3, 0.95])
    last = torch.tensor([1.0, 1.0, 1.0])  # the last step lands on ᾱ = 1: no noise is left to add
    return [(x, eps, a_t, a_prev, 0.0, z), (x, eps, a_t, a_prev, 1.0, z), (x, eps, a_t, a_prev, 0.5, z),
            (x, eps, a_t, last, 1.0, z)]


def _b(a):  # (B,) → (B, 1, 1, 1)
    return a.view(-1, 1, 1, 1)


def _x0(x_t, eps, a_t):
    return (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()


def _sigma_one_factor(x_t, eps, abar_t, abar_prev, eta, z):  # σ = η·√(1 − ᾱ_t/ᾱ_{t−1}) only
    a_t, a_p = _b(abar_t), _b(abar_prev)
    sigma = eta * (1 - a_t / a_p).sqrt()
    return a_p.sqrt() * _x0(x_t, eps, a_t) + (1 - a_p - sigma**2).clamp(min=0).sqrt() * eps + sigma * z


def _direction_keeps_all(x_t, eps, abar_t, abar_prev, eta, z):  # noise added on top of √(1 − ᾱ_{t−1})·ε̂
    a_t, a_p = _b(abar_t), _b(abar_prev)
    sigma = eta * ((1 - a_p) / (1 - a_t)).sqrt() * (1 - a_t / a_p).sqrt()
    return a_p.sqrt() * _x0(x_t, eps, a_t) + (1 - a_p).sqrt() * eps + sigma * z


def _noise_scaled_by_variance(x_t, eps, abar_t, abar_prev, eta, z):  # σ² z instead of σ z
    a_t, a_p = _b(abar_t), _b(abar_prev)
    sigma = eta * ((1 - a_p) / (1 - a_t)).sqrt() * (1 - a_t / a_p).sqrt()
    return a_p.sqrt() * _x0(x_t, eps, a_t) + (1 - a_p - sigma**2).sqrt() * eps + sigma**2 * z


def _not_reshaped(x_t, eps, abar_t, abar_prev, eta, z):  # (B,) against (B, C, H, W)
    sigma = eta * ((1 - abar_prev) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_prev).sqrt()
    x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).sqrt() * eps + sigma * z


@exercise("05.ddim_step", "implement", "ddim_step",
          hint="σ_t (Song et al. Eq. 16) is η times TWO square-root factors, √((1 − ᾱ_{t−1})/(1 − ᾱ_t)) and "
               "√(1 − ᾱ_t/ᾱ_{t−1}); the fresh noise σ_t·z takes its variance out of the direction term, "
               "√(1 − ᾱ_{t−1} − σ_t²)·ε̂. The ᾱ are one per example: shape them (B, 1, 1, 1)",
          cases=_ddim_cases,
          wrong=(("σ with only its second factor", _sigma_one_factor),
                 ("direction term without − σ²", _direction_keeps_all),
                 ("noise scaled by σ² instead of σ", _noise_scaled_by_variance),
                 ("ᾱ not reshaped to (B, 1, 1, 1)", _not_reshaped)))
def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor,
              eta: float, z: torch.Tensor) -> torch.Tensor:
    a_t, a_p = _b(abar_t).to(x_t.dtype), _b(abar_prev).to(x_t.dtype)
    sigma = eta * ((1 - a_p) / (1 - a_t)).sqrt() * (1 - a_t / a_p).sqrt()
    return a_p.sqrt() * _x0(x_t, eps, a_t) + (1 - a_p - sigma**2).clamp(min=0).sqrt() * eps + sigma * z


# ------------------------------------------------------------------------------------------------
# 4. Predict, then measure: does fresh noise still clean at five levels?
# ------------------------------------------------------------------------------------------------

FEW_STEPS_OPTIONS = {
    "a": "about as many pictures with one clean shape as at 10 levels (within 2 in 16)",
    "b": "clearly fewer pictures with one clean shape than at 10 levels",
    "c": "more pictures with one clean shape than at 10 levels (fewer steps add less noise)",
}


def judge_few_steps(measured) -> tuple[str, str]:
    """`measured`: {"levels10": share with one clean shape, "levels5": share}, DDIM η = 1, the same x_T."""
    m = dict(measured)
    ten, five = _share(m["levels10"], "levels10"), _share(m["levels5"], "levels5")
    if five > ten + 0.125:
        letter = "c"
    elif five >= ten - 0.125:
        letter = "a"
    else:
        letter = "b"
    why = (f"Measured with η = 1 from the same x_T: one clean shape in {ten:.0%} of the samples at 10 levels and "
           f"{five:.0%} at 5. Fresh noise repairs the model's leftovers only where later steps remain to repair "
           "them. Five levels are about 250 timesteps apart, so the last step turns x_t at t ≈ 250 into the picture "
           "in one jump, and whatever that one guess gets wrong is kept")
    why += (": noise cannot make up for steps that are not there." if letter == "b" else
            "; here that one jump was good enough, so five levels held up.")
    return letter, why


register(Exercise(
    name="05.few_steps", kind="predict", title="fresh noise at five levels",
    hint="how many chances does the model get to repair a leftover?",
    options=FEW_STEPS_OPTIONS, judge=judge_few_steps,
    wrong=(("'η = 1 always cleans'", ("a", {"levels10": 0.94, "levels5": 0.31})),
           ("'fewer steps, less noise, cleaner'", ("c", {"levels10": 0.94, "levels5": 0.31})),
           ("'fewer' when it held up", ("b", {"levels10": 1.0, "levels5": 0.94}))),
))


# ------------------------------------------------------------------------------------------------
# 5. Find the bug: a DDIM inversion that goes nowhere
# ------------------------------------------------------------------------------------------------

_COSINE = NoiseSchedule.make("cosine", 1000)


class GaussianDataEps:
    """The exact ε̂ for data N(mu, s²) on the 1000-step cosine schedule (t are original timesteps)."""

    def __init__(self, mu: float = 0.3, s: float = 0.5) -> None:
        self.mu, self.s = mu, s

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = _COSINE.alphas_cumprod[t].view(-1, 1, 1, 1).to(x_t.dtype)
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * self.mu) / (abar * self.s**2 + 1 - abar)

    def __repr__(self) -> str:
        return f"exact ε̂ for Gaussian data N({self.mu}, {self.s}²)"


gaussian_data_eps = GaussianDataEps()


def _invert_cases():
    g = torch.Generator().manual_seed(2)
    levels8 = _COSINE.respace([0, 50, 150, 300, 450, 600, 800, 950])
    levels4 = _COSINE.respace([0, 300, 600, 900])
    return [(gaussian_data_eps, 0.3 + 0.5 * torch.randn(2, 3, 4, 4, generator=g), levels8),
            (gaussian_data_eps, 0.3 + 0.5 * torch.randn(1, 1, 2, 2, generator=g), levels4)]


@torch.no_grad()
def buggy_ddim_invert(model, x_0, sched):
    """The notebook's broken version: the output equals the input."""
    abar, abar_prev = sched.alphas_cumprod.double(), sched.alphas_cumprod_prev.double()
    x = x_0.double()
    for t in range(sched.num_timesteps):  # up the levels: index 0, 1, …, S − 1
        eps = model(x.float(), sched.timestep_map[t].repeat(x.shape[0])).double()
        x0 = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()  # the clean image x implies
        x = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps  # re-noised to level ᾱ_t
    return x.float()


@torch.no_grad()
def _walks_down(model, x_0, sched):  # the levels in sampling order, from the top
    abar, abar_prev = sched.alphas_cumprod.double(), sched.alphas_cumprod_prev.double()
    x = x_0.double()
    for t in reversed(range(sched.num_timesteps)):
        eps = model(x.float(), sched.timestep_map[t].repeat(x.shape[0])).double()
        x0 = (x - (1 - abar_prev[t]).sqrt() * eps) / abar_prev[t].sqrt()
        x = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps
    return x.float()


@torch.no_grad()
def _previous_level_twice(model, x_0, sched):  # undoes and redoes ᾱ_{t−1}: goes nowhere too
    abar_prev = sched.alphas_cumprod_prev.double()
    x = x_0.double()
    for t in range(sched.num_timesteps):
        eps = model(x.float(), sched.timestep_map[t].repeat(x.shape[0])).double()
        x0 = (x - (1 - abar_prev[t]).sqrt() * eps) / abar_prev[t].sqrt()
        x = abar_prev[t].sqrt() * x0 + (1 - abar_prev[t]).sqrt() * eps
    return x.float()


@exercise("05.invert_bug", "find the bug", "ddim_invert_steps",
          hint="x_{t−1} sits at level ᾱ_{t−1}: the clean-image estimate must undo THAT level's mixing before the "
               "state is re-mixed at level ᾱ_t (section 7's formula). A step that undoes and redoes the same level "
               "returns its input",
          cases=_invert_cases, buggy=buggy_ddim_invert, atol=1e-4, rtol=1e-4,
          wrong=(("walks the levels downward", _walks_down),
                 ("undoes and redoes the previous level", _previous_level_twice)))
def ddim_invert_steps(model, x_0: torch.Tensor, sched: NoiseSchedule) -> torch.Tensor:
    return ddim_invert(model, x_0, sched)
