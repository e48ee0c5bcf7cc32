"""Samplers on the noise level σ: Karras et al.'s levels, Euler, Heun and DPM-Solver++(2M).

Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models") write
sampling as the probability-flow ODE dx/dσ = (x − D(x; σ))/σ in the variables
x = x_t/sqrt(ᾱ_t), σ = sqrt((1 − ᾱ_t)/ᾱ_t). This module solves it on the levels of a schedule:

* `karras_timesteps` — the levels of a schedule nearest to the Karras et al. (2022, Eq. 5)
  spacing σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7: many small steps near
  the data, few large ones in the noise. ``schedule.respace(karras_timesteps(schedule, N))``.
* `euler_sample`, `heun_sample` — Algorithm 2 of Karras et al. 2022 with Euler (first order; on
  the same levels it IS deterministic DDIM) or Heun (second order, two model calls per step but
  the last), with the optional stochastic "churn" (S_churn, S_tmin, S_tmax, S_noise).
* `dpmpp_2m_sample` — DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a
  second-order multistep solver in λ = log(α/σ) on the data prediction x̂₀; one model call per
  step, reusing the previous step's x̂₀.

They take the same arguments as the samplers of `dalle_mini_core.sampling` (whose `SAMPLERS`
registry and `run_sampler` choose among all of them by name) and check their inputs the same way
(`dalle_mini_core.sampler_common`).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from .sampler_common import Callback, Model, check_inputs, level_steps, randn_like
from .schedule import NoiseSchedule

__all__ = ["karras_timesteps", "euler_sample", "heun_sample", "dpmpp_2m_sample"]


def _levels(schedule: NoiseSchedule) -> torch.Tensor:
    """ᾱ of every level of `schedule` in float64 on the CPU, (N,)."""
    return torch.cumprod(1.0 - schedule._betas64, dim=0)


def _root_levels(schedule: NoiseSchedule) -> torch.Tensor | None:
    """ᾱ of every ORIGINAL timestep (float64, CPU) when known: a fresh schedule or one made by `respace`."""
    root = getattr(schedule, "root_alphas_cumprod", None)
    if root is not None:
        return root
    n = schedule.num_timesteps
    if bool((schedule.timestep_map.cpu() == torch.arange(n)).all()):
        return _levels(schedule)
    return None


def _sigma(abar: torch.Tensor | float) -> torch.Tensor | float:
    """σ = sqrt((1 − ᾱ)/ᾱ), the noise level of x/sqrt(ᾱ) (Karras et al. 2022's σ of a VP model)."""
    return ((1.0 - abar) / abar) ** 0.5


def _predict_at(
    model: Model,
    x_t: torch.Tensor,
    t_model: int,
    abar: float,
    model_kwargs: Mapping[str, object],
    prediction: str,
    clip_x0: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂₀, ε̂) of `model` at ORIGINAL timestep `t_model` whose ᾱ is `abar` (a float64 number)."""
    batch = x_t.shape[0]
    t = torch.full((batch,), int(t_model), dtype=torch.long, device=x_t.device)
    out = model(x_t, t, **model_kwargs)
    if not torch.is_tensor(out) or out.shape != x_t.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"model returned {got}, expected a tensor shaped like x_t {tuple(x_t.shape)}")
    out = out.to(x_t.dtype)
    alpha, sigma = math.sqrt(abar), math.sqrt(1.0 - abar)
    if prediction == "eps":
        x0, eps = (x_t - sigma * out) / alpha, out
    elif prediction == "x0":
        x0, eps = out, (x_t - alpha * out) / sigma
    else:  # v = α ε − σ x₀ (Salimans & Ho 2022)
        x0, eps = alpha * x_t - sigma * out, sigma * x_t + alpha * out
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x_t - alpha * x0) / sigma
    return x0, eps


def karras_timesteps(
    schedule: NoiseSchedule,
    steps: int,
    *,
    sigma_min: float | None = None,
    sigma_max: float = 80.0,
    rho: float = 7.0,
) -> list[int]:
    """`steps` levels of `schedule` (indices, increasing) on the spacing of Karras et al. 2022, Eq. 5.

        σ_i = (σ_max^{1/ρ} + i/(N − 1) · (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,   i = 0 … N − 1,  ρ = 7

    in σ = sqrt((1 − ᾱ)/ᾱ). `sigma_max` (80, the paper's value) is capped at the schedule's
    largest σ and `sigma_min` defaults to its smallest. Each σ_i is matched to the level of
    `schedule` with the nearest log σ, keeping the levels distinct (then a level further down
    is taken), so a 1000-step schedule gives exactly `steps` levels. Starting at σ = 80 rather
    than the cosine schedule's last level (σ ≈ 2·10⁴) skips steps that only see noise: x_T then
    stands for sqrt(ᾱ) x₀ + sqrt(1 − ᾱ) ε with sqrt(ᾱ) ≈ 0.012, which N(0, I) approximates.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    n = schedule.num_timesteps
    if steps > n:
        raise ValueError(f"steps must be at most the schedule's {n} levels, got {steps}")
    log_sigma = torch.log(_sigma(_levels(schedule)))  # (n,) increasing with the index
    hi = min(float(sigma_max), float(log_sigma[-1].exp()))
    lo = float(log_sigma[0].exp()) if sigma_min is None else max(float(sigma_min), float(log_sigma[0].exp()))
    if not (rho > 0 and hi > 0 and lo > 0):
        raise ValueError("rho, sigma_min and sigma_max must be positive")
    if lo > hi:
        raise ValueError(f"sigma_min {lo:.3g} is above sigma_max {hi:.3g}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho  # (steps,) decreasing
    chosen: list[int] = []
    for i, s in enumerate(sigmas.tolist()):
        k = int(torch.argmin((log_sigma - math.log(s)).abs()))
        if chosen:
            k = min(k, chosen[-1] - 1)  # strictly below the previous level
        k = max(k, steps - 1 - i)  # leave room for the levels still to come
        chosen.append(k)
    return sorted(chosen)


def _karras_ode(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    second_order: bool,
    model_kwargs: Mapping[str, object] | None,
    prediction: str,
    clip_x0: bool,
    churn: float,
    churn_tmin: float,
    churn_tmax: float,
    churn_noise: float,
    generator: torch.Generator | None,
    callback: Callback | None,
    progress: bool,
) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2 on the levels of `schedule` (Euler without `second_order`)."""
    check_inputs(model, x_T, schedule, prediction)
    for name, value in (("churn", churn), ("churn_tmin", churn_tmin), ("churn_noise", churn_noise)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if isinstance(churn_tmax, bool) or not isinstance(churn_tmax, (int, float)) or churn_tmax < churn_tmin:
        raise ValueError(f"churn_tmax must be a number >= churn_tmin, got {churn_tmax!r}")
    model_kwargs = dict(model_kwargs or {})
    n = schedule.num_timesteps
    abar = _levels(schedule)  # (n,) ᾱ of each level
    sig = _sigma(abar)  # (n,) σ of each level
    t_map = schedule.timestep_map.cpu()
    root = _root_levels(schedule) if churn > 0 else None  # where a churned σ̂ may land
    root_log_sigma = torch.log(_sigma(root)) if root is not None else None
    gamma_max = min(churn / n, math.sqrt(2.0) - 1.0)  # Karras et al.: γ_i = min(S_churn/N, √2 − 1)
    # x = x_t / sqrt(ᾱ_t) (the variance-exploding form the ODE is written in)
    x = x_T / math.sqrt(float(abar[-1]))
    calls = 0
    desc = "Heun" if second_order else "Euler"
    for i, j in enumerate(level_steps(n, progress, reverse=True, desc=desc)):
        sigma, t_now, a_now = float(sig[j]), int(t_map[j]), float(abar[j])
        # 1. churn: add noise to climb from σ to σ̂ = σ(1 + γ), snapped to an original level
        if gamma_max > 0 and churn_tmin <= sigma <= churn_tmax and root_log_sigma is not None:
            target = math.log(sigma * (1.0 + gamma_max))
            k = int(torch.argmin((root_log_sigma - target).abs()))
            if k > t_now:
                a_hat = float(root[k])
                sigma_hat = float(_sigma(a_hat))
                x = x + math.sqrt(sigma_hat**2 - sigma**2) * churn_noise * randn_like(x, generator)
                sigma, t_now, a_now = sigma_hat, k, a_hat
        # 2. the derivative dx/dσ = (x − D(x; σ))/σ = ε̂ at the current level
        x0, eps = _predict_at(model, x * math.sqrt(a_now), t_now, a_now, model_kwargs, prediction, clip_x0)
        calls += 1
        if callback is not None:
            callback(i, t_now, x * math.sqrt(a_now), x0)
        sigma_next = float(sig[j - 1]) if j > 0 else 0.0
        x_euler = x + (sigma_next - sigma) * eps
        # 3. Heun: average with the derivative at the Euler point (not on the last step, to σ = 0)
        if second_order and sigma_next > 0:
            a_next = float(abar[j - 1])
            _, eps_next = _predict_at(model, x_euler * math.sqrt(a_next), int(t_map[j - 1]), a_next,
                                      model_kwargs, prediction, clip_x0)
            calls += 1
            x = x + (sigma_next - sigma) * 0.5 * (eps + eps_next)
        else:
            x = x_euler
    return x


@torch.no_grad()
def euler_sample(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    model_kwargs: Mapping[str, object] | None = None,
    prediction: str = "eps",
    clip_x0: bool = True,
    churn: float = 0.0,
    churn_tmin: float = 0.0,
    churn_tmax: float = float("inf"),
    churn_noise: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE (Karras et al. 2022, Algorithm 2 without the Heun correction).

    With x = x_t / sqrt(ᾱ_t) and σ = sqrt((1 − ᾱ_t)/ᾱ_t), the ODE is dx/dσ = (x − x̂₀)/σ = ε̂, and
    one step from σ to σ' is x' = x + (σ' − σ) ε̂ — which is deterministic DDIM (Song et al. 2021,
    Eq. 13) on the same levels: the samplers differ by the levels they visit, not by the step.
    Walk a Karras-spaced schedule (`karras_timesteps`) to get the sampler of the paper.

    ``churn`` = S_churn > 0 makes it stochastic: before each step with σ in [churn_tmin,
    churn_tmax], noise of standard deviation sqrt(σ̂² − σ²)·churn_noise lifts x from σ to
    σ̂ = σ(1 + γ), γ = min(S_churn/N, √2 − 1), and the step starts from σ̂. σ̂ is snapped to the
    nearest level of the ORIGINAL schedule (the model only knows whole timesteps), so the noise
    added is exactly what that level needs; with no original levels known, churn does nothing.
    """
    return _karras_ode(model, x_T, schedule, second_order=False, model_kwargs=model_kwargs, prediction=prediction,
                       clip_x0=clip_x0, churn=churn, churn_tmin=churn_tmin, churn_tmax=churn_tmax,
                       churn_noise=churn_noise, generator=generator, callback=callback, progress=progress)


@torch.no_grad()
def heun_sample(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    model_kwargs: Mapping[str, object] | None = None,
    prediction: str = "eps",
    clip_x0: bool = True,
    churn: float = 0.0,
    churn_tmin: float = 0.0,
    churn_tmax: float = float("inf"),
    churn_noise: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 2).

    Each step takes the Euler step x̃ = x + (σ' − σ) ε̂(x, σ), evaluates the derivative again
    at (x̃, σ') and steps with the average: x' = x + (σ' − σ) (ε̂(x, σ) + ε̂(x̃, σ'))/2. The last
    step, to σ = 0, is a plain Euler step. Model calls: 2·levels − 1. The error falls as
    (step size)² rather than (step size)¹. ``churn`` as in `euler_sample`.
    """
    return _karras_ode(model, x_T, schedule, second_order=True, model_kwargs=model_kwargs, prediction=prediction,
                       clip_x0=clip_x0, churn=churn, churn_tmin=churn_tmin, churn_tmax=churn_tmax,
                       churn_noise=churn_noise, generator=generator, callback=callback, progress=progress)


@torch.no_grad()
def dpmpp_2m_sample(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    model_kwargs: Mapping[str, object] | None = None,
    prediction: str = "eps",
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), deterministic.

    With α_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t) and λ_t = log(α_t/σ_t), one step from level s to
    the next level u (h = λ_u − λ_s) is

        x_u = (σ_u/σ_s) x_s − α_u (e^{−h} − 1) D,
        D = x̂₀(s)                                    on the first step (DDIM),
        D = (1 + 1/(2r)) x̂₀(s) − 1/(2r) x̂₀(prev),   r = h_prev / h, afterwards,

    i.e. the exact solution of the ODE in λ with x̂₀ extrapolated linearly from the last two
    levels: second order, one model call per step. The last step, to clean data (λ = ∞), returns
    D = x̂₀ of the last level (first order, as the reference implementations do). With fewer than
    10 levels the step INTO the last level is first order too (D = x̂₀, the DDIM step), as in the
    authors' multistep code below 10 steps (``lower_order_final``): few steps are large, and the
    extrapolation overshoots (on the shapes upsampler, 5 Karras levels: 3/32 clean backgrounds
    extrapolated, 32/32 with the first-order final step; ``upsampler_dpmpp_study_cpu.json``).
    `generator` is accepted for the common signature and unused.
    """
    del generator  # deterministic
    check_inputs(model, x_T, schedule, prediction)
    model_kwargs = dict(model_kwargs or {})
    n = schedule.num_timesteps
    abar = _levels(schedule)
    t_map = schedule.timestep_map.cpu()
    x = x_T
    x0_prev: torch.Tensor | None = None
    h_prev = 0.0
    for i, j in enumerate(level_steps(n, progress, reverse=True, desc="DPM-Solver++(2M)")):
        a_s = float(abar[j])
        x0, _ = _predict_at(model, x, int(t_map[j]), a_s, model_kwargs, prediction, clip_x0)
        if callback is not None:
            callback(i, int(t_map[j]), x, x0)
        if j == 0:  # to clean data
            x = x0
            break
        a_u = float(abar[j - 1])
        lam_s = 0.5 * math.log(a_s / (1.0 - a_s))
        lam_u = 0.5 * math.log(a_u / (1.0 - a_u))
        h = lam_u - lam_s
        if x0_prev is None or (j == 1 and n < 10):  # first order on the first step and, below 10 levels, the last
            d = x0
        else:
            r = h_prev / h
            d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
        x = math.sqrt((1.0 - a_u) / (1.0 - a_s)) * x - math.sqrt(a_u) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x
