"""Sampling: DDPM, DDIM and DDIM inversion, guidance, and every sampler chosen by name.

* `ddpm_sample` — ancestral sampling, Ho et al. 2020, Algorithm 2, with the posterior variance
  β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (their Eq. 7) as σ_t².
* `ddim_sample` — Song et al. 2021 ("Denoising Diffusion Implicit Models"), Eq. 12, with η: η = 0
  is deterministic, η = 1 has the DDPM posterior's amount of fresh noise.
* `ddim_invert` — the deterministic DDIM update run backwards (image → noise), Song et al. 2021 §4.3 /
  Dhariwal & Nichol 2021 App. F, used to reconstruct or edit a real image.
* `guided` — classifier-free guidance, in the form of GLIDE (Nichol et al. 2022, §2.3) and unCLIP:
  ε̃ = ε_uncond + s (ε_cond − ε_uncond), which is Ho & Salimans' (2022, Eq. 6)
  ε̃ = (1 + w) ε_cond − w ε_uncond with s = 1 + w; the conditional and unconditional passes
  are batched into one forward call.

The solvers on Karras et al.'s noise levels σ — `euler_sample`, `heun_sample`,
`dpmpp_2m_sample` and the level spacing `karras_timesteps` — live in `dalle_mini_core.solvers`.
`SAMPLERS` names all five samplers (its keys are `options.SAMPLER_NAMES`); `sampling_schedule`
builds the grid a sampler walks for a number of steps (evenly spaced timesteps for DDPM/DDIM as
in Nichol & Dhariwal 2021, the Karras spacing for the others) and `run_sampler` does both, so a
pipeline chooses a sampler by name.

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

import torch

from . import options
from .diffusion import model_output_to_x0_eps
from .sampler_common import Callback, Model, check_inputs, level_steps, randn_like
from .schedule import NoiseSchedule, extract
from .solvers import dpmpp_2m_sample, euler_sample, heun_sample, karras_timesteps

__all__ = [
    "ddpm_sample",
    "ddim_sample",
    "ddim_invert",
    "sampling_schedule",
    "run_sampler",
    "model_calls",
    "check_sampler",
    "SAMPLERS",
    "DEFAULT_SPACING",
    "guided",
]


# --- the model's estimate at one level --------------------------------------------------------------

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
    check_inputs(model, x_T, schedule, prediction)
    model_kwargs = dict(model_kwargs or {})
    x = x_T
    n = schedule.num_timesteps
    for i, t in enumerate(level_steps(n, progress, reverse=True, desc="DDPM")):
        # 1. the model's estimate of the clean data
        x0, _ = _predict(model, x, t, schedule, model_kwargs, prediction, clip_x0)
        if callback is not None:
            callback(i, int(schedule.timestep_map[t]), x, x0)
        # 2. the posterior q(x_{t−1} | x_t, x̂₀): mean and clipped log-variance
        t_index = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        mean, _, log_var = schedule.q_posterior(x0, x, t_index)
        # 3. sample it (no noise at t = 0: the mean there is x̂₀ itself)
        if t > 0:
            x = mean + torch.exp(0.5 * log_var) * randn_like(x, generator)
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
    check_inputs(model, x_T, schedule, prediction)
    if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    model_kwargs = dict(model_kwargs or {})
    x = x_T
    n = schedule.num_timesteps
    for i, t in enumerate(level_steps(n, progress, reverse=True, desc="DDIM")):
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
            x = x + sigma * randn_like(x, generator)
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
    check_inputs(model, x_0, schedule, prediction)
    model_kwargs = dict(model_kwargs or {})
    x = x_0
    n = schedule.num_timesteps
    for i, t in enumerate(level_steps(n, progress, reverse=False, desc="DDIM inversion")):
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
    """`name` if it names a sampler (`options.SAMPLER_NAMES`, the keys of `SAMPLERS`), else a one-line ValueError."""
    return options.check_sampler(name)


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
