"""unCLIP end to end: caption → prior → decoder → upsampler, and the edits the latents allow.

Ramesh et al. 2022 ("Hierarchical Text-Conditional Image Generation with CLIP Latents") stack
four trained parts; this module only wires them together:

    prompt ──CLIP text encoder──► z_t ──prior──► z_i ──decoder──► 32×32 ──upsampler──► 64×64

Because the decoder turns any CLIP image embedding into an image, the same parts also give
the three manipulations of the paper's §3:

* **variations** (§3.1) — encode an image with CLIP's image encoder and decode z_i again
  with fresh noise: what CLIP keeps (colour, shape, ...) stays, what it drops varies;
* **interpolations** (§3.2) — slerp between two images' embeddings z_i1 → z_i2, and between
  their DDIM-inverted noises x_T1 → x_T2, so the frames change smoothly;
* **text diffs** (§3.3) — move z_i towards z_d = normalise(z_t(to) − z_t(from)), the direction
  between two captions, by slerp(z_i, z_d, θ), keeping the inverted x_T fixed.

Everything is seeded: one CPU `torch.Generator` seeded with `seed` draws every noise tensor
of a call (prior, then decoder, then upsampler), so the same call gives the same images.

Code names ↔ paper symbols: ``text_emb`` = z_t, ``image_emb`` = z_i, ``x_T`` = x_T,
``strengths`` = θ, ``*_guidance`` = the classifier-free guidance scale s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.tokens import check_length
from .defaults import GENERATE_DEFAULTS

__all__ = [
    "PARTS",
    "Generation",
    "slerp",
    "text_diff_embeddings",
    "check_image",
    "UnCLIP",
]

#: The shipped weights of a pipeline: data/weights/<dataset>_<part>.safetensors (+ .json).
PARTS: tuple[str, ...] = ("clip", "prior", "decoder", "upsampler")


@dataclass
class Generation:
    """Everything one `UnCLIP.generate` call made, row r = prompt r // n_per_prompt."""

    images: torch.Tensor  # (N, 3, S, S) final images in [-1, 1] (upsampled when an upsampler ran)
    low_res: torch.Tensor  # (N, 3, s, s) the decoder's images in [-1, 1]
    image_emb: torch.Tensor  # (N, D) unit-norm image embeddings the decoder drew from (z_i)
    text_emb: torch.Tensor  # (N, D) unit-norm CLIP text embeddings of the prompts (z_t)
    prompts: list[str]  # (N,) the prompt of each row


# --------------------------------------------------------------------------------------------
# 1. Spherical interpolation
# --------------------------------------------------------------------------------------------


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
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)
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


# --------------------------------------------------------------------------------------------
# 2. Input checks
# --------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_guidance(name: str, value: object) -> float | None:
    """A guidance scale: None (the conditional model alone) or a number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a number or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (0: unconditional, 1: conditional, > 1: stronger), got {value}")
    return None if value == 1 else float(value)  # s = 1 is the conditional model: skip the null half


def check_image(image: object, sizes: Sequence[int], name: str = "image") -> torch.Tensor:
    """One RGB image → (1, 3, S, S) float tensor in [-1, 1], or a clear error.

    Accepts a float tensor (3, S, S) or (1, 3, S, S) in [-1, 1], or a PIL image in mode "RGB",
    with S in `sizes`. Nothing is converted silently: a uint8 tensor, values outside [-1, 1]
    (e.g. a [0, 255] image), another PIL mode or another size raises. (A [0, 1] image lies
    inside [-1, 1] and cannot be told apart: it would be read as a washed-out image.)
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"{name} is a PIL image in mode {image.mode!r}; convert it with .convert('RGB')")
        image = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1.0  # (3, H, W)
    if not torch.is_tensor(image):
        raise TypeError(f"{name} must be a float tensor (3, S, S) in [-1, 1] or a PIL RGB image, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"{name} has dtype {image.dtype}; pass a float tensor in [-1, 1] (e.g. x / 127.5 - 1 for uint8)")
    if image.dim() == 3:
        image = image.unsqueeze(0)  # (1, 3, H, W)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"{name} must be one RGB image (3, S, S) or (1, 3, S, S), got shape {tuple(image.shape)}")
    if image.shape[-1] != image.shape[-2] or image.shape[-1] not in sizes:
        raise ValueError(f"{name} must be square with side in {tuple(sizes)}, got {tuple(image.shape[-2:])}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{name} values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}] (a [0, 255] image: x / 127.5 - 1)")
    return image.float()


# --------------------------------------------------------------------------------------------
# 3. The pipeline
# --------------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (messages stay machine-independent)."""
    from .paths import repo_root

    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


class UnCLIP(nn.Module):
    """CLIP + diffusion prior + decoder (+ upsampler): text-to-image and the §3 edits.

    ``generate(prompts)`` runs the whole stack; ``variations``, ``interpolate`` and ``text_diff``
    edit real images through their CLIP embedding; ``invert`` and ``decode`` expose the two
    halves (image → (z_i, x_T), (z_i, x_T) → image) that the edits are built from.
    """

    def __init__(self, clip: nn.Module, prior: nn.Module, decoder: nn.Module, upsampler: nn.Module | None = None) -> None:
        super().__init__()
        for name, part, needs in (("clip", clip, ("encode_text", "encode_image", "tokenize")),
                                  ("prior", prior, ("sample_best_of",)), ("decoder", decoder, ("sample", "invert"))):
            missing = [m for m in needs if not hasattr(part, m)]
            if missing:
                raise TypeError(f"{name} ({type(part).__name__}) lacks {missing}")
        if upsampler is not None and not hasattr(upsampler, "sample"):
            raise TypeError(f"upsampler ({type(upsampler).__name__}) has no sample(low_res, steps=, generator=)")
        if upsampler is not None and upsampler.config.low_res_size != decoder.config.unet.image_size:
            raise ValueError(f"the upsampler takes {upsampler.config.low_res_size}×{upsampler.config.low_res_size} "
                             f"images but the decoder draws {decoder.config.unet.image_size}×{decoder.config.unet.image_size}")
        D = clip.embed_dim
        if prior.config.embed_dim != D or decoder.config.embed_dim != D:
            raise ValueError(f"embedding sizes differ: clip {D}, prior {prior.config.embed_dim}, "
                             f"decoder {decoder.config.embed_dim}")
        if prior.config.context_length != clip.context_length:
            raise ValueError(f"context lengths differ: clip {clip.context_length}, prior {prior.config.context_length}")
        self.clip, self.prior, self.decoder, self.upsampler = clip, prior, decoder, upsampler

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, dataset: str = "shapes", *, folder: str | Path | None = None,
                        device: torch.device | str | None = None, upsampler: bool = True) -> "UnCLIP":
        """Load ``<dataset>_{clip,prior,decoder,upsampler}.safetensors`` (+ .json).

        With `folder` None these are the shipped weights in data/weights, each checked against its
        sha256 MANIFEST (`checkpoints.load_pretrained`). A `folder` (e.g. the output of
        ``dalle-mini train all --out DIR``) is checked against its MANIFEST.json when it has one.
        ``upsampler=False`` leaves the upsampler out (the pipeline then ends at the decoder's size).
        """
        from .checkpoints import load_checkpoint, load_pretrained, verify_manifest
        from .clip import CLIPModel
        from .decoder import Decoder
        from .device import get_device
        from .paths import data_dir
        from .prior import DiffusionPrior
        from .upsampler import Upsampler

        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"dataset must be a non-empty str such as 'shapes', got {dataset!r}")
        device = torch.device(device) if device is not None else get_device()
        builders = {"clip": CLIPModel, "prior": DiffusionPrior, "decoder": Decoder, "upsampler": Upsampler}
        parts = PARTS if upsampler else PARTS[:-1]
        weights = data_dir() / "weights" if folder is None else Path(folder)
        missing = [f"{dataset}_{p}" for p in parts if not (weights / f"{dataset}_{p}.safetensors").is_file()]
        if missing:
            raise FileNotFoundError(
                f"no {dataset} pipeline weights in {_shown(weights)} (missing: {', '.join(missing)}). "
                f"Train them with `dalle-mini train all` (a GPU run; see the README), or build a pipeline "
                f"from your own parts with UnCLIP(clip, prior, decoder, upsampler)."
            )
        loaded = []
        for p in parts:
            name = f"{dataset}_{p}"
            if folder is None:
                model = load_pretrained(name, builders[p], device=device)
            else:
                if (weights / "MANIFEST.json").is_file():
                    verify_manifest(weights / "MANIFEST.json", files=[f"{name}.safetensors", f"{name}.json"])
                model = load_checkpoint(weights / name, builders[p], device=device)
            loaded.append(model.float().eval())
        return cls(*loaded)

    # --- small helpers ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @property
    def image_size(self) -> int:
        """Side of the decoder's images (the upsampler's input)."""
        return int(self.decoder.config.unet.image_size)

    @property
    def output_size(self) -> int | None:
        """Side of the upsampler's images, when it says (None without an upsampler)."""
        if self.upsampler is None:
            return None
        return int(self.upsampler.config.unet.image_size)

    def _image_sizes(self) -> tuple[int, ...]:
        out = self.output_size
        return (self.image_size,) if out is None or out == self.image_size else (self.image_size, out)

    def _check_prompts(self, prompts: str | Sequence[str]) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError("prompts must be a non-empty str or a non-empty list of str")
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"every prompt must be a str, got {type(p).__name__}")
            if not p.strip():
                raise ValueError("a prompt is empty; write what the image should show")
        check_length(list(prompts), context_length=self.clip.context_length)
        return list(prompts)

    def _prepare(self, image: object, name: str) -> torch.Tensor:
        """A checked input image at the decoder's size (1, 3, s, s); a larger one is area-averaged down."""
        x = check_image(image, self._image_sizes(), name).to(self.device)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")  # (1, 3, s, s)
        return x

    def _no_caption_path(self, what: str) -> None:
        if getattr(self.decoder.config, "use_text", False):
            raise ValueError(f"{what} needs a decoder without a caption path (use_text=False): there is no caption to give it")

    # --- the two halves -----------------------------------------------------------------------

    @torch.no_grad()
    def invert(self, image: object, *, steps: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """An image's bipartite latent (Ramesh et al. 2022, §3.1): (z_i (1, D), x_T (1, 3, s, s)).

        z_i is CLIP's image embedding; x_T is the DDIM-inverted noise that the decoder (unguided,
        `steps` steps) maps back to roughly this image.
        """
        self._no_caption_path("invert")
        steps = _check_positive_int("steps", steps)
        x = self._prepare(image, "image")
        z_i = self.clip.encode_image(x)  # (1, D)
        return z_i, self.decoder.invert(x, z_i, steps=steps)

    @torch.no_grad()
    def decode(
        self,
        image_emb: torch.Tensor,
        *,
        x_T: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        decoder_steps: int = GENERATE_DEFAULTS["decoder_steps"],
        decoder_guidance: float | None = GENERATE_DEFAULTS["decoder_guidance"],
        upsampler_steps: int = GENERATE_DEFAULTS["upsampler_steps"],
        upsample: bool | None = None,
        decoder_sampler: str = GENERATE_DEFAULTS["decoder_sampler"],
        decoder_sampler_options: dict | None = None,
        upsampler_sampler: str = GENERATE_DEFAULTS["upsampler_sampler"],
        upsampler_sampler_options: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings (B, D) → (images, low_res): decoder, then the upsampler.

        `x_T` is the decoder's starting noise as returned by `invert` with the same `decoder_steps`
        (it is sampled on the inversion's schedule, which stops at t = 950); None draws fresh noise.
        `upsample` None upsamples when the pipeline has an upsampler; True without one raises.
        Noise comes from `generator` when given, else from a CPU generator seeded with `seed`.
        ``*_sampler`` name a `sampling.SAMPLERS` entry; ``*_sampler_options`` None means the
        defaults' (`GENERATE_DEFAULTS`), e.g. ``{"eta": 1.0}`` for DDIM or ``{"churn": 5}`` for Heun.
        An `x_T` from `invert` is always sampled with DDIM (η = 0), the inversion's own sampler.
        """
        decoder_steps = _check_positive_int("decoder_steps", decoder_steps)
        upsampler_steps = _check_positive_int("upsampler_steps", upsampler_steps)
        guidance = _check_guidance("decoder_guidance", decoder_guidance)
        if upsample and self.upsampler is None:
            raise ValueError("upsample=True but this pipeline has no upsampler")
        if generator is None:
            generator = torch.Generator().manual_seed(int(seed or 0))
        emb = F.normalize(image_emb.float(), dim=-1)  # the decoder was trained on unit-norm z_i
        # an x_T here comes from invert() (interpolate, text_diff): sample on the inversion's schedule
        inverted = x_T is not None
        dec_options = GENERATE_DEFAULTS["decoder_sampler_options"] if decoder_sampler_options is None else decoder_sampler_options
        up_options = GENERATE_DEFAULTS["upsampler_sampler_options"] if upsampler_sampler_options is None else upsampler_sampler_options
        low_res = self.decoder.sample(emb, tokens=tokens, x_T=x_T, inverted=inverted, steps=decoder_steps,
                                      guidance_scale=guidance, sampler="ddim" if inverted else decoder_sampler,
                                      sampler_options=None if inverted else dict(dec_options),
                                      generator=generator).clamp(-1, 1)
        if self.upsampler is None or upsample is False:
            return low_res, low_res
        images = self.upsampler.sample(low_res, steps=upsampler_steps, sampler=upsampler_sampler,
                                       sampler_options=dict(up_options), generator=generator).clamp(-1, 1)
        return images, low_res

    # --- text to image ------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        n_per_prompt: int = 1,
        seed: int = 0,
        prior_steps: int = GENERATE_DEFAULTS["prior_steps"],
        prior_guidance: float | None = GENERATE_DEFAULTS["prior_guidance"],
        decoder_steps: int = GENERATE_DEFAULTS["decoder_steps"],
        decoder_guidance: float | None = GENERATE_DEFAULTS["decoder_guidance"],
        upsampler_steps: int = GENERATE_DEFAULTS["upsampler_steps"],
        best_of: int = 1,
        upsample: bool | None = None,
        use_prior: bool = True,
        return_intermediates: bool = False,
        prior_sampler: str = GENERATE_DEFAULTS["prior_sampler"],
        decoder_sampler: str = GENERATE_DEFAULTS["decoder_sampler"],
        decoder_sampler_options: dict | None = None,
        upsampler_sampler: str = GENERATE_DEFAULTS["upsampler_sampler"],
        upsampler_sampler_options: dict | None = None,
    ) -> torch.Tensor | Generation:
        """Text → images (N, 3, S, S) in [-1, 1], N = len(prompts) · n_per_prompt, rows grouped by prompt.

        1. z_t = CLIP text embedding of each prompt;
        2. z_i = prior sample (best of `best_of` by cosine to z_t, §2.2), or z_t itself when
           ``use_prior=False`` (the paper's "text embedding" baseline, §5.1);
        3. the decoder draws a low-res image from z_i; 4. the upsampler enlarges it.
        Same arguments and `seed`, same images. ``return_intermediates`` returns a `Generation`
        (images, low_res, image_emb, text_emb, prompts) instead of the images alone.
        """
        # 0. checks
        prompts = self._check_prompts(prompts)
        n = _check_positive_int("n_per_prompt", n_per_prompt)
        best_of = _check_positive_int("best_of", best_of)
        prior_steps = _check_positive_int("prior_steps", prior_steps)
        prior_scale = _check_guidance("prior_guidance", prior_guidance)
        _check_guidance("decoder_guidance", decoder_guidance)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        generator = torch.Generator().manual_seed(int(seed))
        rows = [p for p in prompts for _ in range(n)]  # (N,) prompt of each row
        # 1. text embeddings z_t
        tokens = self.clip.tokenize(rows)  # (N, L)
        text_emb = self.clip.encode_text(tokens)  # (N, D), unit norm
        # 2. image embeddings z_i
        if use_prior:
            image_emb = self.prior.sample_best_of(text_emb, tokens, n=best_of, steps=prior_steps, sampler=prior_sampler,
                                                  guidance_scale=prior_scale, generator=generator)
            image_emb = F.normalize(image_emb.float(), dim=-1)  # (N, D); CLIP's embeddings are unit vectors
        else:
            image_emb = text_emb
        # 3–4. decoder and upsampler
        dec_tokens = tokens if getattr(self.decoder.config, "use_text", False) else None
        images, low_res = self.decode(image_emb, tokens=dec_tokens, generator=generator, decoder_steps=decoder_steps,
                                      decoder_guidance=decoder_guidance, upsampler_steps=upsampler_steps,
                                      upsample=upsample, decoder_sampler=decoder_sampler,
                                      decoder_sampler_options=decoder_sampler_options,
                                      upsampler_sampler=upsampler_sampler,
                                      upsampler_sampler_options=upsampler_sampler_options)
        if not return_intermediates:
            return images
        return Generation(images=images, low_res=low_res, image_emb=image_emb, text_emb=text_emb, prompts=rows)

    # --- image manipulations (Ramesh et al. 2022, §3) -------------------------------------------

    @torch.no_grad()
    def variations(
        self,
        image: object,
        n: int = 4,
        *,
        seed: int = 0,
        decoder_steps: int = GENERATE_DEFAULTS["decoder_steps"],
        decoder_guidance: float | None = GENERATE_DEFAULTS["decoder_guidance"],
        upsampler_steps: int = GENERATE_DEFAULTS["upsampler_steps"],
        upsample: bool | None = None,
    ) -> torch.Tensor:
        """`n` images (n, 3, S, S) that share `image`'s CLIP embedding z_i and differ in their noise (§3.1)."""
        n = _check_positive_int("n", n)
        self._no_caption_path("variations")
        z_i = self.clip.encode_image(self._prepare(image, "image"))  # (1, D)
        images, _ = self.decode(z_i.expand(n, -1), seed=seed, decoder_steps=decoder_steps,
                                decoder_guidance=decoder_guidance, upsampler_steps=upsampler_steps, upsample=upsample)
        return images

    @torch.no_grad()
    def interpolate(
        self,
        image_a: object,
        image_b: object,
        n_frames: int = 5,
        *,
        seed: int = 0,
        decoder_steps: int = 50,
        decoder_guidance: float | None = None,
        upsampler_steps: int = 25,
        upsample: bool | None = None,
    ) -> torch.Tensor:
        """`n_frames` images (K, 3, S, S) from `image_a` to `image_b` (§3.2).

        Frame k at θ = k / (K − 1) decodes slerp(z_a, z_b, θ) from slerp(x_Ta, x_Tb, θ), where
        x_T are the images' DDIM-inverted noises, so the endpoints reconstruct the inputs
        (exactly up to the inversion's error with the default ``decoder_guidance=None``, the
        model the inversion used). `seed` feeds the upsampler only.
        """
        K = _check_positive_int("n_frames", n_frames)
        if K < 2:
            raise ValueError(f"n_frames must be at least 2 (the two endpoints), got {K}")
        decoder_steps = _check_positive_int("decoder_steps", decoder_steps)
        z_a, x_a = self.invert(image_a, steps=decoder_steps)
        z_b, x_b = self.invert(image_b, steps=decoder_steps)
        theta = torch.linspace(0, 1, K, dtype=torch.float64, device=z_a.device).view(K, 1)  # (K, 1)
        z = slerp(z_a, z_b, theta)  # (K, D)
        x_T = slerp(x_a.flatten(1), x_b.flatten(1), theta).view(K, *x_a.shape[1:])  # (K, 3, s, s)
        images, _ = self.decode(z, x_T=x_T, seed=seed, decoder_steps=decoder_steps, decoder_guidance=decoder_guidance,
                                upsampler_steps=upsampler_steps, upsample=upsample)
        return images

    @torch.no_grad()
    def text_diff(
        self,
        image: object,
        from_caption: str,
        to_caption: str,
        strengths: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
        *,
        seed: int = 0,
        decoder_steps: int = 50,
        decoder_guidance: float | None = None,
        upsampler_steps: int = 25,
        upsample: bool | None = None,
    ) -> torch.Tensor:
        """Edit `image` towards a caption change (§3.3): one image (K, 3, S, S) per strength θ.

        z_θ = slerp(z_i, normalise(z_t(to) − z_t(from)), θ) is decoded from the image's DDIM-inverted
        x_T (fixed across θ), so θ = 0 reconstructs the image and larger θ moves it further.
        The paper uses θ ∈ [0, 0.5]; strengths must lie in [0, 1].
        """
        captions = self._check_prompts([from_caption, to_caption])
        if isinstance(strengths, (int, float)) or not len(strengths):
            raise ValueError("strengths must be a non-empty sequence of numbers in [0, 1]")
        for s in strengths:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0:
                raise ValueError(f"every strength must be a number in [0, 1], got {s!r}")
        decoder_steps = _check_positive_int("decoder_steps", decoder_steps)
        z_i, x_T = self.invert(image, steps=decoder_steps)
        z_from, z_to = self.clip.encode_text(captions)  # (D,), (D,)
        z = text_diff_embeddings(z_i, z_from, z_to, strengths)  # (K, D)
        images, _ = self.decode(z, x_T=x_T.expand(len(z), -1, -1, -1), seed=seed, decoder_steps=decoder_steps,
                                decoder_guidance=decoder_guidance, upsampler_steps=upsampler_steps, upsample=upsample)
        return images

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # pragma: no cover - explicit API only
        raise TypeError("call UnCLIP.generate(prompts, ...), not the module itself")
