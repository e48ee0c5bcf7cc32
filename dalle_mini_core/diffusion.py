"""The denoiser: a network, a noise schedule and what the network predicts, trained with one loss.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models") train a network to predict the noise
ε that was mixed into a clean image x₀ (their Eq. 14, the "simple" loss):

    x_t = sqrt(ᾱ_t) x₀ + sqrt(1 − ᾱ_t) ε,      ε ~ N(0, I),  t ~ U{0, …, T−1}
    L   = ‖ ε − ε_θ(x_t, t) ‖²

The same network can be asked for other targets that carry the same information:

* ``"eps"`` — the noise ε (Ho et al. 2020);
* ``"x0"``  — the clean image x₀ (the DALL·E 2 prior predicts x₀ directly, Ramesh et al. 2022, §2.2);
* ``"v"``   — v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x₀ (Salimans & Ho 2022, "Progressive Distillation", §4).

`model_output_to_x0_eps` turns any of the three into the pair (x̂₀, ε̂) that the samplers in
`dalle_mini_core.sampling` need, so training and sampling agree on the conversion by construction.

`Denoiser.sample_loop` is the one sampling routine of the course's three diffusion stages
(prior, decoder, upsampler): draw x_T ~ N(0, I), optionally wrap the model for classifier-free
guidance, run a sampler from `dalle_mini_core.sampling` down to x̂₀. Each stage's ``sample``
only builds its conditioning and calls it.

**Embedding scale (one rule for the whole course).** CLIP embeddings are unit vectors, so each
of their D coordinates has a variance of about 1/D, far smaller than the unit-variance noise
a diffusion model adds. The prior and the decoder multiply them by sqrt(D) before diffusion
(`scale_embedding`), so each coordinate has roughly unit variance, and the prior divides its
samples by sqrt(D) (`unscale_embedding`). DALLE2-pytorch uses the same factor (its
``image_embed_scale`` defaults to ``dim ** 0.5``).

Code names ↔ paper symbols: ``x_t`` = x_t, ``t`` = t (an index into the schedule),
``x0`` = x₀, ``eps`` = ε, ``schedule.alphas_cumprod`` = ᾱ.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import math

import torch
from torch import nn
import torch.nn.functional as F

from .options import PREDICTIONS, check_prediction, check_sampler, model_device  # the prediction types are defined in options
from .schedule import NoiseSchedule

__all__ = [
    "PREDICTIONS", "check_prediction", "check_embeddings", "model_output_to_x0_eps", "Denoiser",
    "scale_embedding", "unscale_embedding",
]

def check_embeddings(name: str, emb: object, dim: int) -> torch.Tensor:
    """Return `emb` if it is a float tensor of shape (B, `dim`) (a batch of CLIP embeddings);
    raise a TypeError/ValueError naming `name` otherwise. Used by the prior and the decoder."""
    if not torch.is_tensor(emb) or not emb.is_floating_point():
        raise TypeError(f"{name} must be a float tensor")
    if emb.dim() != 2 or emb.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {tuple(emb.shape)}")
    return emb


def model_output_to_x0_eps(
    schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor, prediction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a network's output into the pair (x̂₀, ε̂) at noise level t.

    `t` is a LongTensor (B,) of indices into `schedule` (not original timesteps of a respaced
    schedule). Both returned tensors have the shape of `x_t`; no clipping happens here.
    """
    check_prediction(prediction)
    if out.shape != x_t.shape:
        raise ValueError(f"model output has shape {tuple(out.shape)}, expected the shape of x_t {tuple(x_t.shape)}")
    if prediction == "eps":
        return schedule.predict_x0_from_eps(x_t, t, out), out
    if prediction == "x0":
        return out, schedule.predict_eps_from_x0(x_t, t, out)
    return schedule.predict_x0_from_v(x_t, t, out), schedule.predict_eps_from_v(x_t, t, out)


def _cond_key_map(cond_keys: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """``("a", "b")`` → ``{"a": "a", "b": "b"}``; a mapping {net keyword: batch key} is kept as is."""
    if isinstance(cond_keys, str):
        raise TypeError(f"cond_keys must be a sequence or mapping of names, got the string {cond_keys!r}")
    if isinstance(cond_keys, Mapping):
        return dict(cond_keys)
    return {k: k for k in cond_keys}


class Denoiser(nn.Module):
    """A network ε_θ / x̂₀_θ / v_θ together with its noise schedule and its training loss.

    Args:
        net: called as ``net(x_t, t, **cond)`` with ``t`` a LongTensor (B,) of original timesteps.
        schedule: the (full) `NoiseSchedule` used for training.
        prediction: what the network predicts: ``"eps"``, ``"x0"`` or ``"v"``.
        image_key: the batch key holding the clean data x₀ (images (B,C,H,W) or vectors (B,D)).
        cond_keys: batch keys passed to the net as keyword arguments — a sequence of names
            (same name in the batch and in the net) or a mapping {net keyword: batch key}.

    The module itself is a valid model for the samplers: ``forward(x_t, t, **cond)`` calls the net,
    and ``self.prediction`` lets a sampler check that it was told the same prediction type.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        *,
        prediction: str = "eps",
        image_key: str = "image",
        cond_keys: Sequence[str] | Mapping[str, str] = (),
    ) -> None:
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.net = net
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        self.image_key = image_key
        self.cond_keys = _cond_key_map(cond_keys)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        """The raw network output at (x_t, t); `t` holds original timesteps (B,)."""
        return self.net(x_t, t, **cond)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for clean data `x0` noised with `eps` at schedule index `t`."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return self.schedule.v_target(x0, eps, t)

    def loss(self, batch: Mapping[str, object], *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error on the prediction target (Ho et al. 2020, Eq. 14, for ``"eps"``).

        1. draw t ~ U{0..T−1} and ε ~ N(0, I) (from `generator` when given, for reproducibility);
        2. noise the clean batch: x_t = q_sample(x₀, t, ε);
        3. ask the net, passing ``batch[k]`` for each conditioning key;
        4. return the MSE between the output and the target (ε, x₀ or v).
        """
        if self.image_key not in batch:
            raise KeyError(f"batch has no {self.image_key!r} entry (image_key); keys: {sorted(batch)}")
        x0 = batch[self.image_key]
        if not torch.is_tensor(x0) or not x0.is_floating_point():
            raise TypeError(f"batch[{self.image_key!r}] must be a float tensor")
        missing = [b for b in self.cond_keys.values() if b not in batch]
        if missing:
            raise KeyError(f"batch lacks conditioning keys {missing}; keys: {sorted(batch)}")
        cond = {name: batch[key] for name, key in self.cond_keys.items()}

        # 1. t and ε, drawn on the generator's device, then moved to the data
        draw_device = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), generator=generator, device=draw_device)
        t = t.to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=draw_device, dtype=x0.dtype).to(x0.device)
        # 2. forward process q(x_t | x₀)
        x_t = self.schedule.q_sample(x0, t, noise=eps)
        # 3. the net sees original timesteps (identical to t on a full schedule)
        out = self.net(x_t, self.schedule.timestep_map[t], **cond)
        if out.shape != x0.shape:
            raise ValueError(f"net output has shape {tuple(out.shape)}, expected {tuple(x0.shape)}")
        # 4. simple MSE
        return F.mse_loss(out.float(), self.target(x0, eps, t).float())

    @property
    def device(self) -> torch.device:
        """The device of the weights (`options.model_device`)."""
        return model_device(self)

    @torch.no_grad()
    def sample_loop(
        self,
        shape: tuple[int, ...],
        model_kwargs: Mapping[str, object],
        *,
        steps: int | None,
        sampler: str = "ddim",
        eta: float = 0.0,
        sampler_options: Mapping[str, object] | None = None,
        guidance_scale: float | None = None,
        null_kwargs: Mapping[str, object] | None = None,
        schedule: NoiseSchedule | None = None,
        x_T: torch.Tensor | None = None,
        clip_x0: bool = True,
        generator: torch.Generator | None = None,
        callback: Callable[..., None] | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Draw x̂₀ of `shape` from noise: the sampling routine the prior, decoder and upsampler share.

        1. the model: this denoiser, or with ``guidance_scale`` a number, `sampling.guided`
           around it, whose unconditional half replaces the conditioning by `null_kwargs`;
        2. x_T ~ N(0, I) of `shape`, drawn from `generator` on the generator's device and moved
           to the model's (or the given `x_T`, which must have that shape);
        3. ``sampling.SAMPLERS[sampler]`` on `steps` levels of `schedule` (default: the training
           schedule; `steps` None walks `schedule` as given), called with `model_kwargs` as the
           net's conditioning. `eta` is DDIM's; other samplers' options (Euler's and Heun's
           ``churn``) go in `sampler_options`. ``clip_x0`` clamps x̂₀ to [-1, 1] at each step
           (images: yes; embeddings, which are not bounded by 1: no).
        """
        # sampling imports this module (for `model_output_to_x0_eps`), so it is imported here
        from .sampling import guided, run_sampler

        check_sampler(sampler)
        device = self.device
        # 1. the (guided) model
        model: nn.Module | Callable[..., torch.Tensor] = self
        if guidance_scale is not None:
            if not null_kwargs:
                raise ValueError("guidance_scale needs null_kwargs (the conditioning of the unconditional half)")
            model = guided(self, guidance_scale, null_kwargs)
        # 2. x_T ~ N(0, I), drawn on the generator's device
        shape = tuple(shape)
        if x_T is None:
            gen_device = generator.device if generator is not None else device
            x_T = torch.randn(shape, generator=generator, device=gen_device).to(device)
        elif tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        # 3. denoise
        options = {**({"eta": eta} if sampler == "ddim" else {}), **(sampler_options or {})}
        return run_sampler(sampler, model, x_T.to(device), self.schedule if schedule is None else schedule, steps,
                           options=options, model_kwargs=model_kwargs, prediction=self.prediction, clip_x0=clip_x0,
                           generator=generator, callback=callback, progress=progress)


# ---------------------------------------------------------------------------------------------
# The embedding scale (module docstring): CLIP's unit vectors ↔ unit-variance coordinates
# ---------------------------------------------------------------------------------------------


def scale_embedding(emb: torch.Tensor) -> torch.Tensor:
    """Unit-norm CLIP embedding (..., D) → diffusion space: multiply by sqrt(D) (module docstring)."""
    return emb * math.sqrt(emb.shape[-1])


def unscale_embedding(x: torch.Tensor) -> torch.Tensor:
    """Diffusion space (..., D) → CLIP embedding scale: divide by sqrt(D); inverse of `scale_embedding`."""
    return x / math.sqrt(x.shape[-1])
