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

import contextlib
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import validate as V
from .defaults import GENERATE_DEFAULTS
from .sampling import SAMPLERS

__all__ = [
    "PARTS",
    "Generation",
    "UnCLIPOutput",
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
    V.finite_tensor("a", a)
    V.finite_tensor("b", b)
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t holds NaN or infinite values")
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
    if image.device.type == "meta":
        raise ValueError(f"{name} is on the meta device: it holds no pixels")
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


#: Pipelines whose weights data/weights ships.
SHIPPED: tuple[str, ...] = ("shapes",)
#: Pipelines the course defines whose weights are not shipped yet (a folder of your own works).
NOT_SHIPPED_YET: tuple[str, ...] = ("emoji",)
#: ``pipeline.json`` in a folder written by `UnCLIP.save_pretrained`.
PIPELINE_FORMAT = "dalle-mini-core/pipeline/v1"
#: Rows the decoder and upsampler draw at once: memory stays flat however many images a call asks for.
DECODE_CHUNK = 64
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

# diffusers' UnCLIPPipeline names → ours (for ``pipe(prompt, ...)``); the one-stage names are ambiguous here
_DIFFUSERS_NAMES = {
    "prior_num_inference_steps": "prior_steps",
    "decoder_num_inference_steps": "decoder_steps",
    "super_res_num_inference_steps": "upsampler_steps",
    "prior_guidance_scale": "prior_guidance",
    "decoder_guidance_scale": "decoder_guidance",
}
_AMBIGUOUS = {
    "guidance_scale": "prior_guidance=... and/or decoder_guidance=... (diffusers' UnCLIPPipeline calls them "
                      "prior_guidance_scale and decoder_guidance_scale; both work here)",
    "num_inference_steps": "prior_steps=..., decoder_steps=... and/or upsampler_steps=... (diffusers' "
                           "UnCLIPPipeline: prior_num_inference_steps, decoder_num_inference_steps, "
                           "super_res_num_inference_steps; these work here too)",
}
_CALL_OPTIONS = ("seed", "prior_steps", "prior_guidance", "decoder_steps", "decoder_guidance", "upsampler_steps",
                 "best_of", "upsample", "use_prior", "progress")


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


class _Progress:
    """A tqdm bar per stage on stderr, advanced once per call of the stage's network (one per step).

    ``show`` True/False, or None: only when stderr is a terminal.
    """

    def __init__(self, show: object) -> None:
        show = V.boolean("progress", show, allow_none=True)
        self.show = _stderr_is_tty() if show is None else show

    @contextlib.contextmanager
    def stage(self, module: object, desc: str, total: int) -> Iterator[None]:
        if not self.show or not isinstance(module, nn.Module):
            yield
            return
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"{desc:>10}", file=sys.stderr, unit="step", leave=True, dynamic_ncols=True)

        def step(module: nn.Module, args: tuple) -> None:  # a pre-hook must return None (a value replaces the args)
            bar.update(1)

        handle = module.register_forward_pre_hook(step)
        try:
            yield
        finally:
            handle.remove()
            bar.close()


def _loading(what: Path | str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a loader; any failure becomes one clear ValueError that names the file (FileNotFoundError stays)."""
    try:
        return fn(*args, **kwargs)
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}: not valid JSON ({exc})") from exc
    except ValueError as exc:
        if str(what) in str(exc):
            raise
        raise ValueError(f"{what}: {exc}") from exc
    except Exception as exc:  # SafetensorError, AttributeError, ImportError, TypeError: a damaged or foreign file
        raise ValueError(f"cannot load {what}: {type(exc).__name__}: {exc}") from exc


def _folder_dataset(folder: Path) -> tuple[str, tuple[str, ...] | None]:
    """The pipeline a folder holds: (name, parts) from its pipeline.json, else the one ``<name>_clip`` in it."""
    info = folder / "pipeline.json"
    if info.is_file():
        meta = _loading(info, lambda: json.loads(info.read_text()))
        parts = meta.get("parts") if isinstance(meta, dict) else None
        if (not isinstance(meta, dict) or meta.get("format") != PIPELINE_FORMAT
                or not isinstance(meta.get("dataset"), str) or not _PLAIN_NAME.match(meta["dataset"])
                or not isinstance(parts, list) or not set(PARTS[:-1]) <= set(parts) <= set(PARTS)):
            raise ValueError(f"{info} is not a dalle-mini-core pipeline description (written by save_pretrained)")
        return meta["dataset"], tuple(p for p in PARTS if p in parts)
    found = sorted(p.name[: -len("_clip.safetensors")] for p in folder.glob("*_clip.safetensors"))
    found = [f for f in found if _PLAIN_NAME.match(f)]
    if len(found) == 1:
        return found[0], None
    if not found:
        raise FileNotFoundError(
            f"no pipeline weights in {_shown(folder)} (no <name>_clip.safetensors). Train them with `dalle-mini "
            "train all`, or write a pipeline there with UnCLIP.save_pretrained(folder)")
    raise ValueError(f"{_shown(folder)} holds several pipelines ({', '.join(found)}); pick one: "
                     f"UnCLIP.from_pretrained({found[0]!r}, folder={str(folder)!r})")


def _locate(dataset: object, folder: object) -> tuple[str, Path | None, tuple[str, ...] | None]:
    """(pipeline name, folder or None for the shipped weights, parts the folder says it holds or None)."""
    if folder is not None:
        if isinstance(folder, bytes) or not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
        if not isinstance(dataset, str) or not _PLAIN_NAME.match(dataset):
            raise ValueError(f"with folder=..., dataset must be a plain name such as 'shapes', got {dataset!r}")
        return dataset, Path(folder), None
    if isinstance(dataset, os.PathLike) or (
        isinstance(dataset, str) and dataset not in SHIPPED + NOT_SHIPPED_YET
        and (not _PLAIN_NAME.match(dataset) or Path(dataset).is_dir())
    ):
        path = Path(dataset)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{_shown(path)} is not a folder. Give a pipeline name ({', '.join(map(repr, SHIPPED))}) or a folder "
                "written by UnCLIP.save_pretrained or `dalle-mini train all` (a name is never a path into data/weights)")
        name, parts = _folder_dataset(path)
        return name, path, parts
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a pipeline name such as 'shapes' or a folder, got {dataset!r}")
    if dataset not in SHIPPED + NOT_SHIPPED_YET:
        raise ValueError(f"unknown pipeline {dataset!r}: the shipped one is {SHIPPED[0]!r}; for weights of your own, "
                         "give their folder: UnCLIP.from_pretrained('path/to/folder')")
    return dataset, None, None


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
          its sha256 MANIFEST (`checkpoints.load_pretrained`). A name is only a name: never a path.
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
        from .checkpoints import UnverifiedWeightsWarning, load_from_folder, load_pretrained
        from .clip import CLIPModel
        from .decoder import Decoder
        from .device import get_device
        from .paths import data_dir
        from .prior import DiffusionPrior
        from .upsampler import Upsampler

        dataset, folder, folder_parts = _locate(dataset, folder)
        upsampler = V.boolean("upsampler", upsampler, allow_none=True)
        device = get_device() if device is None else V.device(device)
        builders = {"clip": CLIPModel, "prior": DiffusionPrior, "decoder": Decoder, "upsampler": Upsampler}
        weights = data_dir() / "weights" if folder is None else folder
        if folder is not None and not weights.is_dir():
            raise FileNotFoundError(f"weights folder {_shown(weights)} not found")
        if upsampler is None:
            upsampler = folder_parts is None or "upsampler" in folder_parts
        parts = PARTS if upsampler else PARTS[:-1]
        missing = [f"{dataset}_{p}" for p in parts if not (weights / f"{dataset}_{p}.safetensors").is_file()]
        if missing and folder is None and dataset in NOT_SHIPPED_YET:
            raise FileNotFoundError(
                f"the {dataset} pipeline's weights are not shipped yet (only {', '.join(map(repr, SHIPPED))} is); "
                f"if you trained them, give their folder: UnCLIP.from_pretrained('path/to/folder')")
        if missing:
            raise FileNotFoundError(
                f"no {dataset} pipeline weights in {_shown(weights)} (missing: {', '.join(missing)}). "
                f"Train them with `dalle-mini train all` (a GPU run; see the README), or build a pipeline "
                f"from your own parts with UnCLIP(clip, prior, decoder, upsampler)."
            )
        if folder is not None and not (weights / "MANIFEST.json").is_file():
            warnings.warn(UnverifiedWeightsWarning(
                f"{_shown(weights)} has no MANIFEST.json: its files are loaded unchecked, so a damaged "
                "file could give wrong pictures without an error (save_pretrained and `dalle-mini train` "
                "write one)"), stacklevel=2)
        loaded = []
        for p in parts:
            name = f"{dataset}_{p}"
            where = _shown(weights / name)
            if folder is None:
                model = _loading(where, load_pretrained, name, builders[p], device=device)
            else:  # checked against the folder's MANIFEST.json; without one, warned about once above
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UnverifiedWeightsWarning)
                    model = _loading(where, load_from_folder, weights, name, builders[p], device=device)
            loaded.append(model.float().eval())
        pipe = cls(*loaded)
        pipe.dataset = dataset
        channels_last = V.boolean("channels_last", channels_last, allow_none=True)
        if channels_last is None:
            channels_last = device.type == "cpu"
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
        from .checkpoints import save_checkpoint, write_manifest

        folder = V.output_folder("folder", folder)
        name = self.dataset if dataset is None else dataset
        if not isinstance(name, str) or not _PLAIN_NAME.match(name):
            raise ValueError(f"dataset must be a plain name such as 'shapes', got {name!r}")
        (folder / "MANIFEST.json").unlink(missing_ok=True)
        files, parts = [], []
        for p in PARTS:
            part = getattr(self, p)
            if part is None:
                continue
            stem = save_checkpoint(folder / f"{name}_{p}", part, getattr(part, "config", None))
            files += [f"{stem.name}.safetensors", f"{stem.name}.json"]
            parts.append(p)
        info = {"format": PIPELINE_FORMAT, "dataset": name, "parts": parts}
        V.atomic_write(folder / "pipeline.json", lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))
        write_manifest(folder, files + ["pipeline.json"])
        return folder

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
            if name not in SAMPLERS:
                raise ValueError(f"{stage}_sampler must be one of {', '.join(sorted(SAMPLERS))}; got {name!r}")
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
                generator: torch.Generator, settings: dict[str, Any], bar: _Progress) -> tuple[torch.Tensor, torch.Tensor]:
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
        bar = _Progress(progress)
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
        return self._decode(emb, tokens, x_T, generator, settings, _Progress(progress))

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
        if prior_sampler not in SAMPLERS:
            raise ValueError(f"prior_sampler must be one of {', '.join(sorted(SAMPLERS))}; got {prior_sampler!r}")
        settings = self._decode_settings(decoder_steps, decoder_guidance, upsampler_steps, upsample, inverted=False,
                                         decoder_sampler=decoder_sampler,
                                         decoder_sampler_options=decoder_sampler_options,
                                         upsampler_sampler=upsampler_sampler,
                                         upsampler_sampler_options=upsampler_sampler_options)
        generator = _generator(seed, generator)
        bar = _Progress(progress)
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
        settings: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in _AMBIGUOUS:
                raise TypeError(f"{key} is ambiguous in unCLIP's three stages: pass {_AMBIGUOUS[key]}")
            ours = _DIFFUSERS_NAMES.get(key, key)
            if ours not in _CALL_OPTIONS:
                raise TypeError(f"UnCLIP() got an unexpected keyword argument {key!r}; it takes num_images_per_prompt, "
                                f"generator, output_type, return_dict and {', '.join(_CALL_OPTIONS)}")
            if ours in settings:
                raise TypeError(f"{key} repeats {ours}, given already")
            settings[ours] = value
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        return_dict = V.boolean("return_dict", return_dict)
        out = self.generate(prompt, n_per_prompt=n, generator=generator, return_intermediates=True, **settings)
        x = (out.images.detach().float().cpu().clamp(-1, 1) + 1) / 2  # (N, 3, S, S) in [0, 1]
        if output_type == "pt":
            images: Any = x
        elif output_type == "np":
            images = x.permute(0, 2, 3, 1).numpy()
        else:
            from PIL import Image

            from .viz import to_uint8

            images = [Image.fromarray(a) for a in to_uint8(out.images)]
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
        images, _ = self._decode(z_i.expand(n, -1), None, None, generator, settings, _Progress(progress))
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
        bar = _Progress(progress)
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
        bar = _Progress(progress)
        with bar.stage(self.decoder, "inversion", settings["decoder_steps"]):
            z_i, x_T = self._invert(x, settings["decoder_steps"])
        z_from, z_to = self.clip.encode_text(captions)  # (D,), (D,)
        z = text_diff_embeddings(z_i, z_from, z_to, strengths)  # (K, D)
        images, _ = self._decode(z, None, x_T.expand(len(z), -1, -1, -1), generator, settings, bar)
        return images
