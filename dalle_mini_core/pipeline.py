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

Its neighbours: `dalle_mini_core.latents` (`slerp`, `text_diff_embeddings`) and
`dalle_mini_core.pipeline_io` (weights folders, `check_image`, progress bars, diffusers-style calls).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import validate as V
from .defaults import GENERATE_DEFAULTS
from .latents import slerp, text_diff_embeddings
from .options import check_sampler, model_device
from .pipeline_io import PARTS, Progress, call_settings, check_image, load_parts, output_images, save_parts

__all__ = [
    "Generation",
    "UnCLIPOutput",
    "UnCLIP",
]


@dataclass
class Generation:
    """Everything one `UnCLIP.generate` call made, row r = prompt r // n_per_prompt."""

    images: torch.Tensor  # (N, 3, S, S) final images in [-1, 1] (upsampled when an upsampler ran)
    low_res: torch.Tensor  # (N, 3, s, s) the decoder's images in [-1, 1]
    image_emb: torch.Tensor  # (N, D) unit-norm image embeddings the decoder drew from (z_i)
    text_emb: torch.Tensor  # (N, D) unit-norm CLIP text embeddings of the prompts (z_t)
    prompts: list[str]  # (N,) the prompt of each row


@dataclass
class UnCLIPOutput:
    """What calling the pipeline diffusers-style returns: ``pipe(prompt, num_images_per_prompt=4).images``.

    `images` is a list of PIL images (``output_type="pil"``, the default), a float array
    (N, H, W, 3) in [0, 1] (``"np"``) or a float tensor (N, 3, H, W) in [0, 1] (``"pt"``), rows
    grouped by prompt as in `UnCLIP.generate`; `prompts` gives each row's prompt.
    """

    images: Any
    prompts: list[str]


# --------------------------------------------------------------------------------------------
# 1. Input checks (images: `pipeline_io.check_image`)
# --------------------------------------------------------------------------------------------


def _guidance_scale(name: str, value: object) -> float | None:
    """A checked guidance scale for the samplers: None (conditional model alone) or a number in [0, MAX_GUIDANCE]."""
    scale = V.guidance(name, value)
    return None if scale == 1 else scale  # s = 1 is the conditional model: skip the null half


def _generator(seed: object, generator: object) -> torch.Generator:
    """The noise source of a call: `generator` when given, else a CPU generator seeded with `seed`."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    return torch.Generator().manual_seed(V.seed("seed", seed))


def _schedule_length(part: nn.Module, default: int = V.MAX_STEPS) -> int:
    schedule = getattr(part, "schedule", None)
    return int(getattr(schedule, "num_timesteps", default))


# --------------------------------------------------------------------------------------------
# 2. The pipeline
# --------------------------------------------------------------------------------------------

#: Rows the decoder and upsampler draw at once: memory stays flat however many images a call asks for.
DECODE_CHUNK = 64

class UnCLIP(nn.Module):
    """CLIP + diffusion prior + decoder (+ upsampler): text-to-image and the §3 edits.

    ``generate(prompts)`` runs the whole stack; ``variations``, ``interpolate`` and ``text_diff``
    edit real images through their CLIP embedding; ``invert`` and ``decode`` expose the two
    halves (image → (z_i, x_T), (z_i, x_T) → image) that the edits are built from. Calling the
    pipeline diffusers-style, ``pipe(prompt, num_images_per_prompt=4, generator=g).images``,
    gives PIL images. ``from_pretrained`` / ``save_pretrained`` read and write weights folders.

    Every argument is checked before any work (`dalle_mini_core.validate`): seeds in
    [0, 2**32 − 1], guidance in [0, 100], step counts within the model's schedule, at most
    `validate.MAX_IMAGES` images per call (drawn `DECODE_CHUNK` at a time).
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
        self.dataset = "shapes"  # the file-name prefix save_pretrained writes (from_pretrained sets it)

    # --- loading and saving ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, dataset: str | os.PathLike = "shapes", *, folder: str | os.PathLike | None = None,
                        device: torch.device | str | None = None, upsampler: bool | None = None,
                        channels_last: bool | None = None) -> "UnCLIP":
        """Load a pipeline: ``<dataset>_{clip,prior,decoder,upsampler}.safetensors`` (+ .json).

        * ``from_pretrained("shapes")`` — the shipped weights in data/weights, each checked against
          its sha256 MANIFEST (`weights.load_pretrained`). A name is only a name: never a path.
          ``"emoji"``: its weights are not shipped yet (a clear FileNotFoundError says so).
        * ``from_pretrained("path/to/folder")`` — a folder written by `save_pretrained` or
          ``dalle-mini train all --out DIR``; ``from_pretrained("shapes", folder=DIR)`` names the
          pipeline in it explicitly. A folder's MANIFEST.json is checked when it has one; without
          one its files load with a warning (nothing can tell a damaged file from a good one).

        Weights holding NaN or infinite values are refused. ``upsampler=False`` leaves the
        upsampler out (the pipeline then ends at the decoder's size); None loads it when the
        weights have one (shipped weights always do).

        ``channels_last`` (None: on when the device is a CPU) stores the decoder's and the
        upsampler's convolution weights in channels-last memory order. Pictures agree to about
        1e-4 (the sums run in another order); on the development CPU, one thread, a guided decoder call took 0.68–0.75× the
        time and an upsampler call 0.86× (`benchmarks/bench_generate.py` measures it per picture).
        """
        dataset, loaded = load_parts(dataset, folder, device=device, upsampler=upsampler)
        pipe = cls(*loaded)
        pipe.dataset = dataset
        channels_last = V.boolean("channels_last", channels_last, allow_none=True)
        if channels_last is None:
            channels_last = model_device(pipe.clip).type == "cpu"  # where the weights now are
        if channels_last:
            pipe.use_channels_last()
        return pipe

    def use_channels_last(self, enabled: bool = True) -> "UnCLIP":
        """Store the decoder's and upsampler's weights channels-last (faster convolutions on a CPU)."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for part in (self.decoder, self.upsampler):
            if part is not None:
                part.to(memory_format=fmt)
        return self

    def save_pretrained(self, folder: str | os.PathLike, *, dataset: str | None = None) -> Path:
        """Write the pipeline to `folder`: ``<dataset>_<part>.safetensors`` + ``.json`` per part,
        ``pipeline.json`` and, last, ``MANIFEST.json`` (sha256 of every file).

        `from_pretrained(folder)` and ``dalle-mini generate --weights folder`` read it back. Each
        file is written atomically; an older MANIFEST.json is removed first, so a write cut short
        leaves a folder that loads with a warning, never one whose manifest vouches for mixed files.
        `dataset` (default: the name the pipeline was loaded as, "shapes") prefixes the files.
        """
        name = self.dataset if dataset is None else dataset
        return save_parts(folder, name, {p: getattr(self, p) for p in PARTS})

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

    def _check_prompts(self, prompts: object) -> list[str]:
        from .data.tokens import token_length

        prompts = V.prompts(prompts)
        context = self.clip.context_length
        for p in prompts:
            n = token_length(p)
            if n > context:  # the caption is cut in the message: a 10,000-character prompt stays one readable line
                shown = p if len(p) <= 120 else p[:120] + "…"
                raise ValueError(f"caption {shown!r} needs {n} tokens (with start/end) but the text encoder reads "
                                 f"{context}; shorten it")
        return prompts

    def _check_embeddings(self, name: str, emb: object) -> torch.Tensor:
        emb = V.finite_tensor(name, emb)
        D = self.clip.embed_dim
        if emb.dim() != 2 or emb.shape[1] != D or emb.shape[0] < 1:
            raise ValueError(f"{name} must have shape (B, {D}), got {tuple(emb.shape)}")
        return emb

    def _prepare(self, image: object, name: str) -> torch.Tensor:
        """A checked input image at the decoder's size (1, 3, s, s); a larger one is area-averaged down."""
        x = check_image(image, self._image_sizes(), name).to(self.device)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")  # (1, 3, s, s)
        return x

    def _no_caption_path(self, what: str) -> None:
        if getattr(self.decoder.config, "use_text", False):
            raise ValueError(f"{what} needs a decoder without a caption path (use_text=False): there is no caption to give it")

    def _inversion_steps(self, name: str, value: object) -> int:
        """Steps of a DDIM inversion: 2 … (the inversion's t_max + 1), distinct timesteps only."""
        from .decoder import INVERSION_T_MAX

        t_max = min(INVERSION_T_MAX, _schedule_length(self.decoder) - 1)
        return V.steps(name, value, t_max + 1, minimum=2,
                       why=f" (an inversion visits the distinct timesteps 0 … {t_max} of the decoder's schedule)")

    def _decode_settings(self, decoder_steps: object, decoder_guidance: object, upsampler_steps: object,
                         upsample: object, *, inverted: bool, decoder_sampler: object = None,
                         decoder_sampler_options: object = None, upsampler_sampler: object = None,
                         upsampler_sampler_options: object = None) -> dict[str, Any]:
        if inverted:
            steps = self._inversion_steps("decoder_steps", decoder_steps)
        else:
            steps = V.steps("decoder_steps", decoder_steps, _schedule_length(self.decoder))
        up_steps = V.steps("upsampler_steps", upsampler_steps,
                           _schedule_length(self.upsampler) if self.upsampler is not None else V.MAX_STEPS)
        upsample = V.boolean("upsample", upsample, allow_none=True)
        if upsample and self.upsampler is None:
            raise ValueError("upsample=True but this pipeline has no upsampler")
        samplers = {}
        for stage, name, options in (("decoder", decoder_sampler, decoder_sampler_options),
                                     ("upsampler", upsampler_sampler, upsampler_sampler_options)):
            name = GENERATE_DEFAULTS[f"{stage}_sampler"] if name is None else name
            check_sampler(name, f"{stage}_sampler")
            options = GENERATE_DEFAULTS[f"{stage}_sampler_options"] if options is None else options
            if not isinstance(options, dict):
                raise TypeError(f"{stage}_sampler_options must be a dict or None; got {type(options).__name__}")
            samplers[stage] = (name, dict(options))
        if inverted:  # an x_T from invert() is sampled with the inversion's own sampler, DDIM η = 0
            samplers["decoder"] = ("ddim", {})
        return dict(decoder_steps=steps, guidance=_guidance_scale("decoder_guidance", decoder_guidance),
                    upsampler_steps=up_steps, upsample=self.upsampler is not None and upsample is not False,
                    decoder_sampler=samplers["decoder"], upsampler_sampler=samplers["upsampler"])

    def _decode(self, emb: torch.Tensor, tokens: torch.Tensor | None, x_T: torch.Tensor | None,
                generator: torch.Generator, settings: dict[str, Any], bar: Progress) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked inputs → (images, low_res), DECODE_CHUNK rows at a time (decoder for all, then the upsampler)."""
        emb = F.normalize(emb.float(), dim=-1).to(self.device)  # the decoder was trained on unit-norm z_i
        chunks = [slice(i, i + DECODE_CHUNK) for i in range(0, emb.shape[0], DECODE_CHUNK)]
        lows = []
        with bar.stage(self.decoder, "decoder", settings["decoder_steps"] * len(chunks)):
            for sl in chunks:
                # an x_T here comes from invert() (interpolate, text_diff): sample on the inversion's schedule
                lows.append(self.decoder.sample(emb[sl], tokens=None if tokens is None else tokens[sl],
                                                x_T=None if x_T is None else x_T[sl], inverted=x_T is not None,
                                                steps=settings["decoder_steps"], guidance_scale=settings["guidance"],
                                                sampler=settings["decoder_sampler"][0],
                                                sampler_options=settings["decoder_sampler"][1] or None,
                                                generator=generator).clamp(-1, 1))
        low_res = torch.cat(lows)
        if not bool(torch.isfinite(low_res).all()):
            raise RuntimeError("the decoder produced NaN or infinite pixels: its weights are likely damaged")
        if not settings["upsample"]:
            return low_res, low_res
        highs = []
        with bar.stage(self.upsampler, "upsampler", settings["upsampler_steps"] * len(chunks)):
            for sl in chunks:
                highs.append(self.upsampler.sample(low_res[sl], steps=settings["upsampler_steps"],
                                                   sampler=settings["upsampler_sampler"][0],
                                                   sampler_options=settings["upsampler_sampler"][1] or None,
                                                   generator=generator).clamp(-1, 1))
        images = torch.cat(highs)
        if not bool(torch.isfinite(images).all()):
            raise RuntimeError("the upsampler produced NaN or infinite pixels: its weights are likely damaged")
        return images, low_res

    # --- the two halves -----------------------------------------------------------------------

    @torch.no_grad()
    def invert(self, image: object, *, steps: int = 50, progress: bool | None = False) -> tuple[torch.Tensor, torch.Tensor]:
        """An image's bipartite latent (Ramesh et al. 2022, §3.1): (z_i (1, D), x_T (1, 3, s, s)).

        z_i is CLIP's image embedding; x_T is the DDIM-inverted noise that the decoder (unguided,
        `steps` steps, 2 … 951 for a 1000-step schedule) maps back to roughly this image.
        """
        self._no_caption_path("invert")
        steps = self._inversion_steps("steps", steps)
        x = self._prepare(image, "image")
        bar = Progress(progress)
        with bar.stage(self.decoder, "inversion", steps):
            return self._invert(x, steps)

    def _invert(self, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        z_i = self.clip.encode_image(x)  # (1, D)
        return z_i, self.decoder.invert(x, z_i, steps=steps)

    @torch.no_grad()
    def decode(
        self,
        image_emb: torch.Tensor,
        *,
        x_T: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        decoder_steps: int = GENERATE_DEFAULTS["decoder_steps"],
        decoder_guidance: float | None = GENERATE_DEFAULTS["decoder_guidance"],
        upsampler_steps: int = GENERATE_DEFAULTS["upsampler_steps"],
        upsample: bool | None = None,
        progress: bool | None = False,
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
        Embeddings and x_T holding NaN or infinite values are refused.
        ``*_sampler`` name a `sampling.SAMPLERS` entry; ``*_sampler_options`` None means the
        defaults' (`GENERATE_DEFAULTS`), e.g. ``{"eta": 1.0}`` for DDIM or ``{"churn": 5}`` for Heun.
        An `x_T` from `invert` is always sampled with DDIM (η = 0), the inversion's own sampler.
        """
        emb = self._check_embeddings("image_emb", image_emb)
        B = emb.shape[0]
        if x_T is not None:
            x_T = V.finite_tensor("x_T", x_T)
            u = self.decoder.config.unet
            shape = (B, u.in_channels, u.image_size, u.image_size)
            if tuple(x_T.shape) != shape:
                raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        if tokens is not None and (not torch.is_tensor(tokens) or tokens.dim() != 2 or tokens.shape[0] != B):
            raise ValueError(f"tokens must be a (B, L) tensor with B = {B}, got {getattr(tokens, 'shape', tokens)!r}")
        settings = self._decode_settings(decoder_steps, decoder_guidance, upsampler_steps, upsample,
                                         inverted=x_T is not None, decoder_sampler=decoder_sampler,
                                         decoder_sampler_options=decoder_sampler_options,
                                         upsampler_sampler=upsampler_sampler,
                                         upsampler_sampler_options=upsampler_sampler_options)
        generator = _generator(seed, generator)
        return self._decode(emb, tokens, x_T, generator, settings, Progress(progress))

    # --- text to image ------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        n_per_prompt: int = 1,
        seed: int = 0,
        generator: torch.Generator | None = None,
        prior_steps: int = GENERATE_DEFAULTS["prior_steps"],
        prior_guidance: float | None = GENERATE_DEFAULTS["prior_guidance"],
        decoder_steps: int = GENERATE_DEFAULTS["decoder_steps"],
        decoder_guidance: float | None = GENERATE_DEFAULTS["decoder_guidance"],
        upsampler_steps: int = GENERATE_DEFAULTS["upsampler_steps"],
        best_of: int = 1,
        upsample: bool | None = None,
        use_prior: bool = True,
        return_intermediates: bool = False,
        progress: bool | None = False,
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
        Same arguments and `seed`, same images (`generator`, when given, replaces the seed).
        ``return_intermediates`` returns a `Generation` (images, low_res, image_emb, text_emb,
        prompts) instead of the images alone. ``progress`` True shows a bar per stage on stderr
        (None: when stderr is a terminal).
        """
        # 0. checks, all before any work
        prompts = self._check_prompts(prompts)
        n = V.integer("n_per_prompt", n_per_prompt, maximum=V.MAX_IMAGES)
        if len(prompts) * n > V.MAX_IMAGES:
            raise ValueError(f"{len(prompts)} prompts × n_per_prompt {n} = {len(prompts) * n} images; "
                             f"at most {V.MAX_IMAGES} per call")
        best_of = V.integer("best_of", best_of, maximum=V.MAX_BEST_OF)
        use_prior = V.boolean("use_prior", use_prior)
        return_intermediates = V.boolean("return_intermediates", return_intermediates)
        prior_steps = V.steps("prior_steps", prior_steps, _schedule_length(self.prior))
        prior_scale = _guidance_scale("prior_guidance", prior_guidance)
        check_sampler(prior_sampler, "prior_sampler")
        settings = self._decode_settings(decoder_steps, decoder_guidance, upsampler_steps, upsample, inverted=False,
                                         decoder_sampler=decoder_sampler,
                                         decoder_sampler_options=decoder_sampler_options,
                                         upsampler_sampler=upsampler_sampler,
                                         upsampler_sampler_options=upsampler_sampler_options)
        generator = _generator(seed, generator)
        bar = Progress(progress)
        rows = [p for p in prompts for _ in range(n)]  # (N,) prompt of each row
        # 1. text embeddings z_t
        tokens = self.clip.tokenize(rows)  # (N, L)
        text_emb = self.clip.encode_text(tokens)  # (N, D), unit norm
        # 2. image embeddings z_i
        if use_prior:
            with bar.stage(self.prior, "prior", prior_steps):
                image_emb = self.prior.sample_best_of(text_emb, tokens, n=best_of, steps=prior_steps,
                                                      sampler=prior_sampler,
                                                      guidance_scale=prior_scale, generator=generator)
            if not bool(torch.isfinite(image_emb).all()):
                raise RuntimeError("the prior produced NaN or infinite embeddings: its weights are likely damaged")
            image_emb = F.normalize(image_emb.float(), dim=-1)  # (N, D); CLIP's embeddings are unit vectors
        else:
            image_emb = text_emb
        # 3–4. decoder and upsampler
        dec_tokens = tokens if getattr(self.decoder.config, "use_text", False) else None
        images, low_res = self._decode(image_emb, dec_tokens, None, generator, settings, bar)
        if not return_intermediates:
            return images
        return Generation(images=images, low_res=low_res, image_emb=image_emb, text_emb=text_emb, prompts=rows)

    @torch.no_grad()
    def forward(self, prompt: str | Sequence[str] | None = None, num_images_per_prompt: int = 1,
                generator: torch.Generator | None = None, *, output_type: str = "pil", return_dict: bool = True,
                **kwargs: Any) -> UnCLIPOutput | tuple:
        """diffusers-style: ``pipe("a small red circle at the top left", num_images_per_prompt=4, generator=g).images``.

        Returns an `UnCLIPOutput` whose `images` are PIL images (``output_type="np"``: a float
        array (N, H, W, 3) in [0, 1]; ``"pt"``: a tensor (N, 3, H, W) in [0, 1]); with
        ``return_dict=False``, the tuple ``(images,)``. Keyword arguments are `generate`'s, or
        diffusers' UnCLIPPipeline names (``prior_guidance_scale``, ``decoder_num_inference_steps``,
        ...). The one-stage names ``guidance_scale`` and ``num_inference_steps`` are ambiguous in a
        three-stage pipeline and raise a TypeError that names ours.
        """
        if prompt is None:
            raise TypeError("pass a prompt: pipe('a small red circle at the top left', num_images_per_prompt=4)")
        n = V.integer("num_images_per_prompt", num_images_per_prompt, maximum=V.MAX_IMAGES)
        settings = call_settings(kwargs)
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        return_dict = V.boolean("return_dict", return_dict)
        out = self.generate(prompt, n_per_prompt=n, generator=generator, return_intermediates=True, **settings)
        images = output_images(out.images, output_type)
        return UnCLIPOutput(images=images, prompts=out.prompts) if return_dict else (images,)

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
        progress: bool | None = False,
    ) -> torch.Tensor:
        """`n` images (n, 3, S, S) that share `image`'s CLIP embedding z_i and differ in their noise.

        A simplification of Ramesh et al. (2022, §3.1): the paper decodes the bipartite latent
        (z_i, x_T), with x_T from DDIM inversion of the image, using DDIM with η > 0, so the
        variations stay near the input and spread as η grows; here every variation starts from
        fresh noise with the decoder's default sampler, so all that x_T held is redrawn.
        """
        n = V.integer("n", n, maximum=V.MAX_IMAGES)
        self._no_caption_path("variations")
        x = self._prepare(image, "image")
        settings = self._decode_settings(decoder_steps, decoder_guidance, upsampler_steps, upsample, inverted=False)
        generator = _generator(seed, None)
        z_i = self.clip.encode_image(x)  # (1, D)
        images, _ = self._decode(z_i.expand(n, -1), None, None, generator, settings, Progress(progress))
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
        progress: bool | None = False,
    ) -> torch.Tensor:
        """`n_frames` images (K, 3, S, S) from `image_a` to `image_b` (§3.2).

        Frame k at θ = k / (K − 1) decodes slerp(z_a, z_b, θ) from slerp(x_Ta, x_Tb, θ), where
        x_T are the images' DDIM-inverted noises, so the endpoints reconstruct the inputs
        (exactly up to the inversion's error with the default ``decoder_guidance=None``, the
        model the inversion used). `seed` feeds the upsampler only.
        """
        K = V.integer("n_frames", n_frames, minimum=2, maximum=V.MAX_IMAGES, why_min=" (the two endpoints)")
        self._no_caption_path("interpolate")
        settings = self._decode_settings(decoder_steps, decoder_guidance, upsampler_steps, upsample, inverted=True)
        generator = _generator(seed, None)
        a, b = self._prepare(image_a, "image_a"), self._prepare(image_b, "image_b")
        bar = Progress(progress)
        with bar.stage(self.decoder, "inversion", 2 * settings["decoder_steps"]):
            z_a, x_a = self._invert(a, settings["decoder_steps"])
            z_b, x_b = self._invert(b, settings["decoder_steps"])
        theta = torch.linspace(0, 1, K, dtype=torch.float64, device=z_a.device).view(K, 1)  # (K, 1)
        z = slerp(z_a, z_b, theta)  # (K, D)
        x_T = slerp(x_a.flatten(1), x_b.flatten(1), theta).view(K, *x_a.shape[1:])  # (K, 3, s, s)
        images, _ = self._decode(z, None, x_T, generator, settings, bar)
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
        progress: bool | None = False,
    ) -> torch.Tensor:
        """Edit `image` towards a caption change (§3.3): one image (K, 3, S, S) per strength θ.

        z_θ = slerp(z_i, normalise(z_t(to) − z_t(from)), θ) is decoded from the image's DDIM-inverted
        x_T (fixed across θ), so θ = 0 reconstructs the image and larger θ moves it further.
        The paper uses θ ∈ [0, 0.5]; strengths must lie in [0, 1] (a list, array or 1-d tensor).
        """
        captions = self._check_prompts([from_caption, to_caption])
        strengths = V.fractions("strengths", strengths)
        self._no_caption_path("text_diff")
        settings = self._decode_settings(decoder_steps, decoder_guidance, upsampler_steps, upsample, inverted=True)
        generator = _generator(seed, None)
        x = self._prepare(image, "image")
        bar = Progress(progress)
        with bar.stage(self.decoder, "inversion", settings["decoder_steps"]):
            z_i, x_T = self._invert(x, settings["decoder_steps"])
        z_from, z_to = self.clip.encode_text(captions)  # (D,), (D,)
        z = text_diff_embeddings(z_i, z_from, z_to, strengths)  # (K, D)
        images, _ = self._decode(z, None, x_T.expand(len(z), -1, -1, -1), generator, settings, bar)
        return images
