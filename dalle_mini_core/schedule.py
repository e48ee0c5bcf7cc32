"""Noise schedules: how much noise the forward process adds at each step, and everything derived from it.

The forward (noising) process of a diffusion model (Ho et al. 2020, "Denoising Diffusion
Probabilistic Models") adds Gaussian noise in T small steps,

    q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I)                     (Ho et al. 2020, Eq. 2)

and because Gaussians compose, any step can be reached from the clean image in one jump,

    q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I),   ᾱ_t = ∏_{s≤t} (1 - β_s)  (Ho et al. 2020, Eq. 4).

Everything a sampler or a loss needs is a function of the betas, so `NoiseSchedule` computes
it once, in float64, and keeps float32 buffers that are read through `extract` (the layout
of improved-diffusion, Nichol & Dhariwal 2021).

Indices. Code timestep ``t`` runs over 0..T-1 and stands for paper timestep t+1, so
``alphas_cumprod[t]`` is ᾱ_{t+1} and ``alphas_cumprod_prev[0]`` is ᾱ_0 = 1.

| code name                         | symbol                       | where                          |
| --------------------------------- | ---------------------------- | ------------------------------ |
| ``betas``                         | β_t                          | Ho et al. 2020, Eq. 2          |
| ``alphas_cumprod``                | ᾱ_t = ∏ (1 - β_s)            | Ho et al. 2020, Eq. 4          |
| ``alphas_cumprod_prev``           | ᾱ_{t-1}                      |                                |
| ``sqrt_alphas_cumprod``           | sqrt(ᾱ_t)  (α_t in VDM/v)    | Eq. 4; Salimans & Ho 2022      |
| ``sqrt_one_minus_alphas_cumprod`` | sqrt(1 - ᾱ_t)  (σ_t)         | Eq. 4; Salimans & Ho 2022      |
| ``sqrt_recip_alphas_cumprod``     | 1 / sqrt(ᾱ_t)                | Ho et al. 2020, Eq. 15         |
| ``sqrt_recipm1_alphas_cumprod``   | sqrt(1/ᾱ_t - 1)              | Ho et al. 2020, Eq. 15         |
| ``posterior_variance``            | β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t) | Ho et al. 2020, Eq. 7          |
| ``posterior_log_variance_clipped``| log β̃_t, with β̃_1 for t = 0   | reference code of Ho / Nichol  |
| ``posterior_mean_coef1``          | β_t sqrt(ᾱ_{t-1}) / (1-ᾱ_t)   | Ho et al. 2020, Eq. 7 (x_0)    |
| ``posterior_mean_coef2``          | (1-ᾱ_{t-1}) sqrt(α_t)/(1-ᾱ_t) | Ho et al. 2020, Eq. 7 (x_t)    |
| ``snr(t)``                        | SNR = ᾱ_t / (1 - ᾱ_t)        | Kingma et al. 2021 (VDM), §2   |
| ``v_target``                      | v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x_0 | Salimans & Ho 2022, §4, App. D |
| ``timestep_map``                  | S_t (respaced → original t)  | Nichol & Dhariwal 2021, §4     |

Sources: Ho et al. 2020 (linear schedule, posterior); Nichol & Dhariwal 2021, "Improved
Denoising Diffusion Probabilistic Models" (cosine schedule, Eq. 17; respacing, §4); Salimans &
Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models" (v-prediction).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .options import ScheduleKind, check_schedule_kind

__all__ = ["linear_betas", "cosine_betas", "extract", "NoiseSchedule"]


# ---------------------------------------------------------------------------------------------
# Beta schedules
# ---------------------------------------------------------------------------------------------


def _check_num_timesteps(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T (number of timesteps) must be an int >= 1, got {T!r}")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t rising linearly from `beta_start` to `beta_end` over T steps (Ho et al. 2020, §4), float64.

    The defaults are Ho et al.'s values for T = 1000. With far fewer steps they leave a lot of
    signal at the last step (ᾱ_T well above 0); pass larger betas or keep T = 1000 and
    `respace` for fast sampling.
    """
    _check_num_timesteps(T)
    if not (0.0 < beta_start <= beta_end < 1.0):
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas whose ᾱ follows a squared cosine (Nichol & Dhariwal 2021, Eq. 17), float64.

    ᾱ(t) = f(t) / f(0),  f(t) = cos(((t/T + s) / (1 + s)) · π/2)²,  β_t = 1 - ᾱ(t)/ᾱ(t-1),
    clipped to at most `max_beta` (0.999 in the paper) so the last steps stay finite. The small
    offset `s` keeps β_1 from being vanishingly small near t = 0.
    """
    _check_num_timesteps(T)
    if not (s >= 0.0 and math.isfinite(s)):
        raise ValueError(f"s (offset) must be a finite number >= 0, got {s!r}")
    if not (0.0 < max_beta < 1.0):
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta!r}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T  # t/T for t = 0..T, shape (T+1,)
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - f[1:] / f[:-1]  # ratio of consecutive ᾱ; f(0) cancels
    return betas.clamp(max=max_beta)


# ---------------------------------------------------------------------------------------------
# Reading a per-timestep table
# ---------------------------------------------------------------------------------------------


def _as_timesteps(t: torch.Tensor | int, length: int) -> torch.Tensor:
    """`t` as a long tensor of shape (B,) (an int or a 0-d tensor becomes (1,)), range-checked."""
    if isinstance(t, bool):
        raise TypeError("t must be an int or an integer tensor, got a bool")
    if isinstance(t, int):
        t = torch.tensor([t])
    if not torch.is_tensor(t):
        raise TypeError(f"t must be an int or an integer tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"t must hold integer timesteps, got dtype {t.dtype}")
    if t.dim() > 1:
        raise ValueError(f"t must be a scalar or a 1-D tensor (B,), got shape {tuple(t.shape)}")
    t = t.reshape(-1).long()
    if t.numel() == 0:
        raise ValueError("t is empty")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= length:
        raise ValueError(f"t must lie in [0, {length - 1}] for this schedule, got values in [{lo}, {hi}]")
    return t


def extract(a: torch.Tensor, t: torch.Tensor | int, x_shape: Sequence[int]) -> torch.Tensor:
    """a[t] reshaped to (B, 1, 1, ...) so it broadcasts against a batch of shape `x_shape`.

    `a` is a 1-D table (one value per timestep), `t` a LongTensor (B,) of indices into it (or
    one int, which then applies to the whole batch).
    """
    if a.dim() != 1:
        raise ValueError(f"a must be a 1-D per-timestep table, got shape {tuple(a.shape)}")
    t = _as_timesteps(t, a.shape[0])
    if len(x_shape) == 0:
        raise ValueError("x_shape must have a batch dimension")
    if t.shape[0] not in (1, x_shape[0]):
        raise ValueError(f"t has {t.shape[0]} timesteps but the batch has {x_shape[0]} items")
    out = a.gather(0, t.to(a.device))
    return out.reshape(t.shape[0], *([1] * (len(x_shape) - 1)))  # (B, 1, 1, ...)


# ---------------------------------------------------------------------------------------------
# The schedule
# ---------------------------------------------------------------------------------------------


def _check_betas(betas: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(betas):
        raise TypeError(f"betas must be a torch.Tensor, got {type(betas).__name__}")
    if betas.dim() != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    if not betas.is_floating_point():
        raise TypeError(f"betas must be floating point, got dtype {betas.dtype}")
    betas = betas.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError(
            f"every beta must lie in the open interval (0, 1), got min {betas.min().item():.3g}, "
            f"max {betas.max().item():.3g}"
        )
    return betas


class NoiseSchedule(nn.Module):
    """The forward process q and its posterior, for one sequence of betas (see the module table).

    Holds float32 buffers computed once in float64; moving the module (`.to(device)`) moves
    them. The buffers are not saved in a model's ``state_dict`` (persistent=False): a schedule
    is set by its betas, not learned, so checkpoints stay independent of the schedule.

    ``timestep_map[i]`` is the timestep of the ORIGINAL schedule that index i of this one stands
    for (identity unless made by `respace`). Every ``t`` argument indexes THIS schedule;
    a denoiser trained on the original schedule must be given ``timestep_map[t]``.
    """

    # Declared for type checkers; set by register_buffer in __init__.
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    timestep_map: torch.Tensor

    def __init__(self, betas: torch.Tensor, *, timestep_map: torch.Tensor | Sequence[int] | None = None) -> None:
        super().__init__()
        betas = _check_betas(betas)  # float64 on the CPU from here on
        T = betas.shape[0]
        self._betas64 = betas  # kept (not a buffer) so `respace` works from exact float64 values

        # 1. the timestep map (identity for a fresh schedule)
        if timestep_map is None:
            timestep_map = torch.arange(T)
        timestep_map = torch.as_tensor(timestep_map)
        if timestep_map.is_floating_point() or timestep_map.dim() != 1 or timestep_map.shape[0] != T:
            raise ValueError(
                f"timestep_map must be {T} integer timesteps (one per beta), "
                f"got shape {tuple(timestep_map.shape)} of {timestep_map.dtype}"
            )
        timestep_map = timestep_map.long()
        if (timestep_map < 0).any() or (timestep_map[1:] <= timestep_map[:-1]).any():
            raise ValueError("timestep_map must be non-negative and strictly increasing")

        # 2. ᾱ_t and its neighbours (Ho et al. 2020, Eq. 4)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])

        # 3. posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, β̃_t I) (Ho et al. 2020, Eqs. 6–7)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # β̃ at t = 0 is exactly 0, whose log is -inf; like the reference code of Ho et al. and
        # Nichol & Dhariwal, use β̃ of the next step there (only for the log, used by samplers).
        first = posterior_variance[1] if T > 1 else betas[0]
        posterior_log_variance_clipped = torch.log(torch.cat([first.reshape(1), posterior_variance[1:]]))
        posterior_mean_coef1 = betas * torch.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * torch.sqrt(alphas) / (1.0 - alphas_cumprod)

        tables = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": torch.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / alphas_cumprod - 1.0),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance_clipped,
            "posterior_mean_coef1": posterior_mean_coef1,
            "posterior_mean_coef2": posterior_mean_coef2,
        }
        for name, value in tables.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)
        self.register_buffer("timestep_map", timestep_map, persistent=False)

    @classmethod
    def make(cls, kind: ScheduleKind = "cosine", num_timesteps: int = 1000) -> "NoiseSchedule":
        """A schedule by name (`options.SCHEDULE_KINDS`): ``"cosine"`` (Nichol & Dhariwal 2021) or
        ``"linear"`` (Ho et al. 2020)."""
        betas = {"cosine": cosine_betas, "linear": linear_betas}[check_schedule_kind(kind, "kind")]
        return cls(betas(num_timesteps))

    @property
    def num_timesteps(self) -> int:
        """T, the number of steps of this schedule."""
        return self.betas.shape[0]

    def extra_repr(self) -> str:
        respaced = not torch.equal(self.timestep_map.cpu(), torch.arange(self.num_timesteps))
        return f"num_timesteps={self.num_timesteps}, respaced={respaced}"

    def _get(self, table: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        """`extract` for a tensor `x`, returned on x's device."""
        return extract(table, t, x.shape).to(x.device)

    def _alpha_sigma(self, t: torch.Tensor | int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(ᾱ_t), sqrt(1 - ᾱ_t)), each (B, 1, ..., 1): α_t and σ_t of Salimans & Ho 2022."""
        return self._get(self.sqrt_alphas_cumprod, t, x), self._get(self.sqrt_one_minus_alphas_cumprod, t, x)

    # ---- forward process ---------------------------------------------------------------------

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor | int,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) in one jump: sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (Ho et al. 2020, Eq. 4).

        Give `noise` (ε, same shape as x0) to fix the draw, or a `generator` to seed it; the noise
        is drawn on the generator's device, then moved to x0's, so a CPU generator gives the same
        numbers on every device.
        """
        if noise is not None and generator is not None:
            raise ValueError("pass either noise or generator, not both")
        if noise is None:
            gen_device = generator.device if generator is not None else x0.device
            noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        alpha, sigma = self._alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eqs. 6–7).

        The mean has x0's shape; variance and log-variance have shape (B, 1, ..., 1).
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 shape {tuple(x0.shape)} != x_t shape {tuple(x_t.shape)}")
        mean = self._get(self.posterior_mean_coef1, t, x0) * x0 + self._get(self.posterior_mean_coef2, t, x0) * x_t
        var = self._get(self.posterior_variance, t, x0)
        log_var = self._get(self.posterior_log_variance_clipped, t, x0)
        return mean, var, log_var

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) (Kingma et al. 2021), one value per timestep in `t`."""
        t = _as_timesteps(t, self.num_timesteps).to(self.betas.device)
        # from the two square-root tables, which were rounded from float64 separately: exact
        # even where 1 - ᾱ_t is tiny (float32 would lose digits subtracting it from 1)
        return (self.sqrt_alphas_cumprod[t] / self.sqrt_one_minus_alphas_cumprod[t]) ** 2

    # ---- conversions between ε, x_0 and v -------------------------------------------------------

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = x_t / sqrt(ᾱ_t) - sqrt(1/ᾱ_t - 1) ε (Eq. 4 solved for x_0; Ho et al. 2020, Eq. 15)."""
        recip, recipm1 = self._get(self.sqrt_recip_alphas_cumprod, t, x_t), self._get(self.sqrt_recipm1_alphas_cumprod, t, x_t)
        return recip * x_t - recipm1 * eps

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        """ε = (x_t / sqrt(ᾱ_t) - x_0) / sqrt(1/ᾱ_t - 1) (Eq. 4 solved for ε)."""
        recip, recipm1 = self._get(self.sqrt_recip_alphas_cumprod, t, x_t), self._get(self.sqrt_recipm1_alphas_cumprod, t, x_t)
        return (recip * x_t - x0) / recipm1

    def v_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0, the velocity target (Salimans & Ho 2022, §4)."""
        alpha, sigma = self._alpha_sigma(t, x0)
        return alpha * eps - sigma * x0

    def predict_x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor | int, v: torch.Tensor) -> torch.Tensor:
        """x_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v (Salimans & Ho 2022, Appendix D)."""
        alpha, sigma = self._alpha_sigma(t, x_t)
        return alpha * x_t - sigma * v

    def predict_eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor | int, v: torch.Tensor) -> torch.Tensor:
        """ε = sqrt(1 - ᾱ_t) x_t + sqrt(ᾱ_t) v (Salimans & Ho 2022, Appendix D)."""
        alpha, sigma = self._alpha_sigma(t, x_t)
        return sigma * x_t + alpha * v

    # ---- fewer steps for sampling ----------------------------------------------------------------

    def respace(self, steps: int | Sequence[int]) -> "NoiseSchedule":
        """A shorter schedule that visits only some timesteps, with the same ᾱ there.

        `steps` is a count (that many timesteps, evenly spaced from 0 to T-1, both included;
        a count of 1 keeps only T-1) or an explicit strictly increasing list of timesteps of
        THIS schedule. The new betas are β_i = 1 - ᾱ_{S_i} / ᾱ_{S_{i-1}} (Nichol & Dhariwal
        2021, §4), so a model trained on the full schedule can sample in fewer steps; the new
        ``timestep_map`` points into the original (never respaced) schedule.
        """
        T = self.num_timesteps
        # 1. which timesteps to keep
        if isinstance(steps, int) and not isinstance(steps, bool):
            if not 1 <= steps <= T:
                raise ValueError(f"steps must lie in [1, {T}] for a schedule of {T} steps, got {steps}")
            if steps == 1:
                kept = [T - 1]
            else:
                stride = (T - 1) / (steps - 1)
                kept = [round(i * stride) for i in range(steps)]
        else:
            if torch.is_tensor(steps):
                steps = steps.tolist()
            kept = list(steps)
            if not kept:
                raise ValueError("steps must not be empty")
            if not all(isinstance(s, int) and not isinstance(s, bool) for s in kept):
                raise TypeError(f"steps must be an int or a list of ints, got {steps!r}")
            if any(b <= a for a, b in zip(kept, kept[1:])):
                raise ValueError("steps must be strictly increasing (no repeats)")
            if kept[0] < 0 or kept[-1] >= T:
                raise ValueError(f"steps must lie in [0, {T - 1}], got values in [{kept[0]}, {kept[-1]}]")
        index = torch.tensor(kept, dtype=torch.long)

        # 2. new betas from ratios of the kept ᾱ, in float64
        alphas_cumprod = torch.cumprod(1.0 - self._betas64, dim=0)
        kept_cumprod = alphas_cumprod[index]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), kept_cumprod[:-1]])
        new_betas = 1.0 - kept_cumprod / prev
        out = NoiseSchedule(new_betas, timestep_map=self.timestep_map.cpu()[index])
        # the ORIGINAL schedule's ᾱ (float64, not a buffer): samplers that move between levels
        # off this grid (Karras "churn", `solvers.euler_sample`) read the level of any original t
        out.root_alphas_cumprod = getattr(self, "root_alphas_cumprod", alphas_cumprod)
        return out
