"""Samplers: plain functions with one signature that turn noise into data with a trained denoiser.

* `ddpm_sample` — ancestral sampling, Ho et al. 2020, Algorithm 2, with the posterior variance
  β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (their Eq. 7) as σ_t².
* `ddim_sample` — Song et al. 2021 ("Denoising Diffusion Implicit Models"), Eq. 12, with η: η = 0
  is deterministic, η = 1 has the DDPM posterior's amount of fresh noise.
* `ddim_invert` — the deterministic DDIM update run backwards (image → noise), Song et al. 2021 §4.3 /
  Dhariwal & Nichol 2021 App. F, used to reconstruct or edit a real image.
* `euler_sample`, `heun_sample` — Karras et al. 2022 ("Elucidating the Design Space of
  Diffusion-Based Generative Models", Algorithm 2): the probability-flow ODE dx/dσ = (x − D(x; σ))/σ
  in the variables x = x_t/sqrt(ᾱ_t), σ = sqrt((1 − ᾱ_t)/ᾱ_t), solved with Euler (first order; on
  the same levels it IS deterministic DDIM) or Heun (second order, two model calls per step but
  the last), with the optional stochastic "churn" (S_churn, S_tmin, S_tmax, S_noise).
* `dpmpp_2m_sample` — DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a
  second-order multistep solver in λ = log(α/σ) on the data prediction x̂₀; one model call per
  step, reusing the previous step's x̂₀.
* `karras_timesteps` — the levels of a schedule nearest to the Karras et al. (2022, Eq. 5)
  spacing σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7: many small steps near
  the data, few large ones in the noise. ``schedule.respace(karras_timesteps(schedule, N))``.
* `guided` — classifier-free guidance, in the form of GLIDE (Nichol et al. 2022, §2.3) and unCLIP:
  ε̃ = ε_uncond + s (ε_cond − ε_uncond), which is Ho & Salimans' (2022, Eq. 6)
  ε̃ = (1 + w) ε_cond − w ε_uncond with s = 1 + w; the conditional and unconditional passes
  are batched into one forward call.

`SAMPLERS` names them all; `sampling_schedule` builds the grid a sampler walks for a number of
steps (evenly spaced timesteps for DDPM/DDIM as in Nichol & Dhariwal 2021, the Karras spacing
for the others) and `run_sampler` does both, so a pipeline chooses a sampler by name.

Every sampler takes ``(model, x, schedule, *, model_kwargs, prediction, clip_x0, generator,
callback, progress)`` plus its own options (DDIM's ``eta``; Euler's and Heun's ``churn``), and
walks the levels of `schedule` from the last to the first, then to clean data; so a notebook
swaps one for another by changing a name (k-diffusion style). The number of model calls is
the number of levels, except Heun: 2·levels − 1.

A model is anything called as ``model(x_t, t, **model_kwargs)`` with ``t`` a LongTensor (B,) of
ORIGINAL timesteps. The samplers walk the indices of `schedule`, which may be a respaced one
(`NoiseSchedule.respace`): the model then receives ``schedule.timestep_map[t]``. The samplers run
under `torch.no_grad` and do not change the model's train/eval mode (call ``model.eval()`` first).

``callback(i, t, x_t, x0_pred)`` is called once per step: ``i`` counts steps from 0, ``t`` is the
original timestep (int) the model saw, ``x_t`` the state it saw, ``x0_pred`` its (clipped)
estimate of the clean data. Use it to record a denoising trajectory.
"""
from __future__ import annotations

from typing import Callable, Mapping

import math

import torch

from .diffusion import check_prediction, model_output_to_x0_eps
from .schedule import NoiseSchedule, extract

__all__ = [
    "ddpm_sample",
    "ddim_sample",
    "ddim_invert",
    "euler_sample",
    "heun_sample",
    "dpmpp_2m_sample",
    "karras_timesteps",
    "sampling_schedule",
    "run_sampler",
    "model_calls",
    "SAMPLERS",
    "guided",
]

Model = Callable[..., torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


# --- small shared pieces --------------------------------------------------------------------------

def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn on the generator's device (same seed, same numbers)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _check_inputs(model: Model, x: torch.Tensor, schedule: NoiseSchedule, prediction: str) -> None:
    """Short, clear errors for the mistakes that otherwise give silent garbage."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t, **kwargs), got {type(model).__name__}")
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError("the start tensor must be a float torch.Tensor")
    if x.dim() < 2:
        raise ValueError(f"the start tensor needs a batch dimension, got shape {tuple(x.shape)}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    check_prediction(prediction)
    model_prediction = getattr(model, "prediction", None)
    if model_prediction is not None and model_prediction != prediction:
        raise ValueError(
            f"the model predicts {model_prediction!r} but the sampler was told prediction={prediction!r}"
        )


def _predict(
    model: Model,
    x_t: torch.Tensor,
    t: int,
    schedule: NoiseSchedule,
    model_kwargs: Mapping[str, object],
    prediction: str,
    clip_x0: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂₀, ε̂) at schedule index `t`; with `clip_x0`, x̂₀ is clamped to [−1, 1] and ε̂ re-derived from it."""
    batch = x_t.shape[0]
    t_index = torch.full((batch,), t, dtype=torch.long, device=schedule.timestep_map.device)
    t_model = schedule.timestep_map[t_index].to(x_t.device)  # (B,) original timesteps
    out = model(x_t, t_model, **model_kwargs)
    if not torch.is_tensor(out) or out.shape != x_t.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"model returned {got}, expected a tensor shaped like x_t {tuple(x_t.shape)}")
    t_index = t_index.to(x_t.device)
    x0, eps = model_output_to_x0_eps(schedule, x_t, t_index, out.to(x_t.dtype), prediction)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = schedule.predict_eps_from_x0(x_t, t_index, x0)
    return x0, eps


def _steps(n: int, progress: bool, reverse: bool, desc: str):
    """Schedule indices n−1 … 0 (or 0 … n−1), optionally wrapped in a tqdm progress bar."""
    steps = range(n - 1, -1, -1) if reverse else range(n)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(steps, desc=desc, leave=False)
    return steps


# --- samplers -------------------------------------------------------------------------------------

@torch.no_grad()
def ddpm_sample(
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
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) from `x_T` down to x₀.

    Each step draws x_{t−1} ~ q(x_{t−1} | x_t, x̂₀) = N(μ̃_t(x_t, x̂₀), β̃_t I) (Eq. 6–7), with no
    noise added at the last step. On a respaced schedule β̃ is that of the respaced betas
    (Nichol & Dhariwal 2021, §4), so fewer steps remain a valid Markov chain.
    """
    _check_inputs(model, x_T, schedule, prediction)
    model_kwargs = dict(model_kwargs or {})
    x = x_T
    n = schedule.num_timesteps
    for i, t in enumerate(_steps(n, progress, reverse=True, desc="DDPM")):
        # 1. the model's estimate of the clean data
        x0, _ = _predict(model, x, t, schedule, model_kwargs, prediction, clip_x0)
        if callback is not None:
            callback(i, int(schedule.timestep_map[t]), x, x0)
        # 2. the posterior q(x_{t−1} | x_t, x̂₀): mean and clipped log-variance
        t_index = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        mean, _, log_var = schedule.q_posterior(x0, x, t_index)
        # 3. sample it (no noise at t = 0: the mean there is x̂₀ itself)
        if t > 0:
            x = mean + torch.exp(0.5 * log_var) * _randn_like(x, generator)
        else:
            x = mean
    return x


@torch.no_grad()
def ddim_sample(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    model_kwargs: Mapping[str, object] | None = None,
    prediction: str = "eps",
    clip_x0: bool = True,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, Eq. 12) from `x_T` down to x₀.

        x_{t−1} = sqrt(ᾱ_{t−1}) x̂₀ + sqrt(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z,
        σ_t = η · sqrt((1 − ᾱ_{t−1}) / (1 − ᾱ_t)) · sqrt(1 − ᾱ_t / ᾱ_{t−1})      (their Eq. 16)

    η = 0 is deterministic (the same x_T always gives the same x₀); η = 1 adds as much noise as
    the DDPM posterior. Use it with a respaced schedule to sample in tens of steps.
    """
    _check_inputs(model, x_T, schedule, prediction)
    if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    model_kwargs = dict(model_kwargs or {})
    x = x_T
    n = schedule.num_timesteps
    for i, t in enumerate(_steps(n, progress, reverse=True, desc="DDIM")):
        # 1. estimates of x₀ and ε at this step
        x0, eps = _predict(model, x, t, schedule, model_kwargs, prediction, clip_x0)
        if callback is not None:
            callback(i, int(schedule.timestep_map[t]), x, x0)
        # 2. ᾱ_t and ᾱ_{t−1} (ᾱ_{−1} = 1: the last step lands on clean data)
        t_index = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        a_t = extract(schedule.alphas_cumprod, t_index, x.shape)
        a_prev = extract(schedule.alphas_cumprod_prev, t_index, x.shape)
        # 3. σ_t (Eq. 16) and the direction pointing to x_t
        sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t)) * torch.sqrt(1 - a_t / a_prev)
        dir_xt = torch.sqrt((1 - a_prev - sigma**2).clamp(min=0.0)) * eps
        # 4. Eq. 12
        x = torch.sqrt(a_prev) * x0 + dir_xt
        if eta > 0 and t > 0:
            x = x + sigma * _randn_like(x, generator)
    return x


@torch.no_grad()
def ddim_invert(
    model: Model,
    x_0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    model_kwargs: Mapping[str, object] | None = None,
    prediction: str = "eps",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run deterministic DDIM backwards: clean data `x_0` → the x_T that `ddim_sample` maps back to it.

    DDIM with η = 0 is an Euler step of an ODE in (x/sqrt(ᾱ), sqrt(1−ᾱ)/sqrt(ᾱ)) (Song et al. 2021,
    Eq. 14–15). Step t goes from level ᾱ_{t−1} up to ᾱ_t:

        x_t = sqrt(ᾱ_t) · (x_{t−1} − sqrt(1 − ᾱ_{t−1}) ε̂) / sqrt(ᾱ_{t−1}) + sqrt(1 − ᾱ_t) ε̂,

    with ε̂ evaluated at (x_{t−1}, t) because x_t is not known yet — the only approximation, which
    shrinks as steps get smaller. `clip_x0` defaults to False here (clipping would break the
    inverse); `generator` is accepted for the common signature and unused (nothing is random).

    Stop short of a level where ᾱ is almost 0: the cosine schedule's last step has ᾱ ≈ 2e-9, and
    sampling back through it multiplies any error of ε̂ by 1/sqrt(ᾱ). Invert on e.g.
    ``schedule.respace([0, 10, ..., 950])`` and sample back on the same schedule.
    """
    del generator  # deterministic
    _check_inputs(model, x_0, schedule, prediction)
    model_kwargs = dict(model_kwargs or {})
    x = x_0
    n = schedule.num_timesteps
    for i, t in enumerate(_steps(n, progress, reverse=False, desc="DDIM inversion")):
        # 1. ε̂ from the model at the current state, read as if at level t
        x0_pred, eps = _predict(model, x, t, schedule, model_kwargs, prediction, clip_x0)
        if callback is not None:
            callback(i, int(schedule.timestep_map[t]), x, x0_pred)
        # 2. one DDIM step from level ᾱ_{t−1} up to level ᾱ_t
        t_index = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        a_t = extract(schedule.alphas_cumprod, t_index, x.shape)
        a_prev = extract(schedule.alphas_cumprod_prev, t_index, x.shape)
        x0_from_prev = (x - torch.sqrt(1 - a_prev) * eps) / torch.sqrt(a_prev)
        x = torch.sqrt(a_t) * x0_from_prev + torch.sqrt(1 - a_t) * eps
    return x


# --- samplers on the σ of Karras et al. 2022 and DPM-Solver++ --------------------------------------

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
    _check_inputs(model, x_T, schedule, prediction)
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
    for i, j in enumerate(_steps(n, progress, reverse=True, desc=desc)):
        sigma, t_now, a_now = float(sig[j]), int(t_map[j]), float(abar[j])
        # 1. churn: add noise to climb from σ to σ̂ = σ(1 + γ), snapped to an original level
        if gamma_max > 0 and churn_tmin <= sigma <= churn_tmax and root_log_sigma is not None:
            target = math.log(sigma * (1.0 + gamma_max))
            k = int(torch.argmin((root_log_sigma - target).abs()))
            if k > t_now:
                a_hat = float(root[k])
                sigma_hat = float(_sigma(a_hat))
                x = x + math.sqrt(sigma_hat**2 - sigma**2) * churn_noise * _randn_like(x, generator)
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
    _check_inputs(model, x_T, schedule, prediction)
    model_kwargs = dict(model_kwargs or {})
    n = schedule.num_timesteps
    abar = _levels(schedule)
    t_map = schedule.timestep_map.cpu()
    x = x_T
    x0_prev: torch.Tensor | None = None
    h_prev = 0.0
    for i, j in enumerate(_steps(n, progress, reverse=True, desc="DPM-Solver++(2M)")):
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


# --- choosing a sampler by name ---------------------------------------------------------------------

#: Every sampler by name, one signature. Options: ddim ``eta``; euler/heun ``churn`` (+ tmin, tmax, noise).
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "euler": euler_sample,
    "heun": heun_sample,
    "dpmpp_2m": dpmpp_2m_sample,
}

#: The levels each sampler walks by default: evenly spaced timesteps (Nichol & Dhariwal 2021, as
#: DDPM and DDIM were run in their papers) or the Karras et al. 2022 spacing (the solvers' papers).
DEFAULT_SPACING: dict[str, str] = {"ddpm": "uniform", "ddim": "uniform", "euler": "karras", "heun": "karras",
                                   "dpmpp_2m": "karras"}


def check_sampler(name: object) -> str:
    """`name` if it is in `SAMPLERS`, else a one-line ValueError listing the names."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    return name


def sampling_schedule(schedule: NoiseSchedule, steps: int, spacing: str = "uniform") -> NoiseSchedule:
    """The `steps` levels of `schedule` a sampler walks: ``"uniform"`` (`NoiseSchedule.respace`) or ``"karras"``."""
    if spacing == "uniform":
        return schedule.respace(steps)
    if spacing == "karras":
        return schedule.respace(karras_timesteps(schedule, steps))
    raise ValueError(f"spacing must be 'uniform' or 'karras', got {spacing!r}")


def model_calls(sampler: str, steps: int) -> int:
    """How many times `sampler` calls the model for `steps` levels (Heun: 2·steps − 1)."""
    check_sampler(sampler)
    return 2 * steps - 1 if sampler == "heun" else steps


def run_sampler(
    sampler: str,
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int | None,
    *,
    spacing: str | None = None,
    options: Mapping[str, object] | None = None,
    **common: object,
) -> torch.Tensor:
    """``SAMPLERS[sampler]`` on `steps` levels of `schedule` (its `DEFAULT_SPACING` unless `spacing`).

    `steps` None walks `schedule` as given. `options` are the sampler's own (``{"eta": 1.0}``
    for DDIM, ``{"churn": 10}`` for Euler/Heun); `common` the shared keywords (model_kwargs,
    prediction, clip_x0, generator, callback, progress).
    """
    fn = SAMPLERS[check_sampler(sampler)]
    grid = schedule if steps is None else sampling_schedule(schedule, steps, spacing or DEFAULT_SPACING[sampler])
    grid = grid.to(x_T.device)
    return fn(model, x_T, grid, **dict(options or {}), **common)


# --- classifier-free guidance ---------------------------------------------------------------------

def _double_batch(name: str, cond: object, null: object, batch: int) -> object:
    """Stack a conditional and a null value into one batch of 2·B: [cond; null]."""
    if cond is None and null is None:
        return None
    if not torch.is_tensor(cond) or not torch.is_tensor(null):
        raise TypeError(f"model_kwargs[{name!r}] and null_kwargs[{name!r}] must both be tensors (or both None)")
    if cond.shape[0] != batch:
        raise ValueError(f"model_kwargs[{name!r}] has batch {cond.shape[0]}, x_t has batch {batch}")
    if null.shape[0] == 1 and batch != 1:
        null = null.expand(batch, *null.shape[1:])  # (1, ...) → (B, ...)
    if null.shape != cond.shape:
        raise ValueError(
            f"null_kwargs[{name!r}] has shape {tuple(null.shape)}; expected {tuple(cond.shape)} or batch 1"
        )
    return torch.cat([cond, null.to(device=cond.device, dtype=cond.dtype)], dim=0)


def guided(model: Model, scale: float, null_kwargs: Mapping[str, object]) -> Model:
    """Wrap `model` for classifier-free guidance (Ho & Salimans 2022; GLIDE's form, Nichol et al. 2022, §2.3).

    The wrapped model runs the conditional kwargs and `null_kwargs` (the "empty" condition, e.g.
    the learned null embedding; batch 1 or B) in ONE forward of batch 2·B and returns

        out_uncond + scale · (out_cond − out_uncond),

    which is Ho & Salimans' Eq. 6, (1 + w) · out_cond − w · out_uncond, with scale = 1 + w
    (their w = 0 is the conditional model). scale = 1 is the conditional model, 0 the unconditional one, > 1 trades diversity for
    fidelity. Because ε, x₀ and v are affine in each other with the same x_t, mixing the raw
    outputs equals mixing ε, so this works for every prediction type. Keyword arguments that
    `null_kwargs` does not name (e.g. an upsampler's low-res image) are shared by both halves.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number, got {type(scale).__name__}")
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if not isinstance(null_kwargs, Mapping) or not null_kwargs:
        raise ValueError("null_kwargs must be a non-empty mapping of the conditioning to replace")
    null_kwargs = dict(null_kwargs)

    def guided_model(x_t: torch.Tensor, t: torch.Tensor, **model_kwargs) -> torch.Tensor:
        extra = sorted(set(null_kwargs) - set(model_kwargs))
        if extra:
            raise ValueError(f"null_kwargs names {extra}, which the call's model_kwargs do not have")
        batch = x_t.shape[0]
        both = {}
        for name, value in model_kwargs.items():
            if name in null_kwargs:
                both[name] = _double_batch(name, value, null_kwargs[name], batch)
            elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
                both[name] = torch.cat([value, value], dim=0)  # shared by both halves
            else:
                both[name] = value
        out = model(torch.cat([x_t, x_t], dim=0), torch.cat([t, t], dim=0), **both)  # (2B, ...)
        out_cond, out_uncond = out.chunk(2, dim=0)
        return out_uncond + scale * (out_cond - out_uncond)

    guided_model.prediction = getattr(model, "prediction", None)  # keep the samplers' safety check
    return guided_model
