"""What a pipeline exchanges with the outside: weights folders, input images, progress bars.

* **Weights folders.** A pipeline is ``<dataset>_{clip,prior,decoder,upsampler}.safetensors``
  (+ ``.json``) side by side. `locate` reads what ``UnCLIP.from_pretrained`` was given (a
  pipeline name such as ``"shapes"`` — the shipped weights in ``data/weights``, never a path —
  or a folder written by ``save_pretrained`` or ``dalle-mini train all``), `load_parts` loads the
  parts, each checked against its SHA-256 manifest (`dalle_mini_core.weights`), and `save_parts`
  writes a folder with its ``pipeline.json`` and ``MANIFEST.json``. Every failure is one clear
  error naming the file.
* **Input images.** `check_image` turns one RGB image (a tensor in [−1, 1] or a PIL image) into
  a (1, 3, S, S) tensor, or refuses it in one line; nothing is converted silently.
* **Progress.** `Progress` shows a tqdm bar per stage on stderr, advanced once per network call.
* **diffusers-style calls.** ``pipe(prompt, num_images_per_prompt=4).images``: `call_settings`
  maps diffusers' UnCLIPPipeline keyword names to ours (refusing the ambiguous one-stage names),
  `output_images` turns images in [−1, 1] into PIL images, a NumPy array or a tensor in [0, 1].
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from . import validate as V

__all__ = [
    "PARTS",
    "SHIPPED",
    "NOT_SHIPPED_YET",
    "PIPELINE_FORMAT",
    "check_image",
    "stderr_is_tty",
    "Progress",
    "locate",
    "load_parts",
    "save_parts",
    "call_settings",
    "output_images",
]

#: The shipped weights of a pipeline: data/weights/<dataset>_<part>.safetensors (+ .json).
PARTS: tuple[str, ...] = ("clip", "prior", "decoder", "upsampler")
#: Pipelines whose weights data/weights ships.
SHIPPED: tuple[str, ...] = ("shapes",)
#: Pipelines the course defines whose weights are not shipped yet (a folder of your own works).
NOT_SHIPPED_YET: tuple[str, ...] = ("emoji",)
#: ``pipeline.json`` in a folder written by `UnCLIP.save_pretrained`.
PIPELINE_FORMAT = "dalle-mini-core/pipeline/v1"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------------------------
# Input images and progress
# --------------------------------------------------------------------------------------------


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


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (messages stay machine-independent)."""
    from .paths import repo_root

    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def stderr_is_tty() -> bool:
    """Whether stderr is a terminal (progress bars then show by default)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A tqdm bar per stage on stderr, advanced once per call of the stage's network (one per step).

    ``show`` True/False, or None: only when stderr is a terminal.
    """

    def __init__(self, show: object) -> None:
        show = V.boolean("progress", show, allow_none=True)
        self.show = stderr_is_tty() if show is None else show

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


# --------------------------------------------------------------------------------------------
# Weights folders
# --------------------------------------------------------------------------------------------


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
            f"no pipeline weights in {shown(folder)} (no <name>_clip.safetensors). Train them with `dalle-mini "
            "train all`, or write a pipeline there with UnCLIP.save_pretrained(folder)")
    raise ValueError(f"{shown(folder)} holds several pipelines ({', '.join(found)}); pick one: "
                     f"UnCLIP.from_pretrained({found[0]!r}, folder={str(folder)!r})")


def locate(dataset: object, folder: object) -> tuple[str, Path | None, tuple[str, ...] | None]:
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
                f"{shown(path)} is not a folder. Give a pipeline name ({', '.join(map(repr, SHIPPED))}) or a folder "
                "written by UnCLIP.save_pretrained or `dalle-mini train all` (a name is never a path into data/weights)")
        name, parts = _folder_dataset(path)
        return name, path, parts
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a pipeline name such as 'shapes' or a folder, got {dataset!r}")
    if dataset not in SHIPPED + NOT_SHIPPED_YET:
        raise ValueError(f"unknown pipeline {dataset!r}: the shipped one is {SHIPPED[0]!r}; for weights of your own, "
                         "give their folder: UnCLIP.from_pretrained('path/to/folder')")
    return dataset, None, None


def load_parts(dataset: object, folder: object, *, device: object = None,
               upsampler: object = None) -> tuple[str, list[nn.Module]]:
    """(pipeline name, [clip, prior, decoder (, upsampler)]) for `UnCLIP.from_pretrained`: see there.

    The shipped weights (`folder` None) are checked against data/weights/MANIFEST.json
    (`weights.load_pretrained`); a folder against its own MANIFEST.json, or loaded with one
    `UnverifiedWeightsWarning` when it has none. Parts come back in float32, in eval mode.
    """
    from .clip import CLIPModel
    from .decoder import Decoder
    from .device import get_device
    from .paths import data_dir
    from .prior import DiffusionPrior
    from .upsampler import Upsampler
    from .weights import UnverifiedWeightsWarning, load_from_folder, load_pretrained

    dataset, folder, folder_parts = locate(dataset, folder)
    upsampler = V.boolean("upsampler", upsampler, allow_none=True)
    device = get_device() if device is None else V.device(device)
    builders = {"clip": CLIPModel, "prior": DiffusionPrior, "decoder": Decoder, "upsampler": Upsampler}
    weights = data_dir() / "weights" if folder is None else folder
    if folder is not None and not weights.is_dir():
        raise FileNotFoundError(f"weights folder {shown(weights)} not found")
    if upsampler is None:
        upsampler = folder_parts is None or "upsampler" in folder_parts
    parts = PARTS if upsampler else PARTS[:-1]
    missing = [f"{dataset}_{p}" for p in parts if not (weights / f"{dataset}_{p}.safetensors").is_file()]
    if missing and folder is None and dataset in NOT_SHIPPED_YET:
        raise FileNotFoundError(
            f"the {dataset} pipeline's weights are not shipped yet (only {', '.join(map(repr, SHIPPED))} is): train "
            f"them with `dalle-mini train all --dataset {dataset} --mode gpu --out runs/{dataset}` (minutes on one "
            f"GPU; scripts/gpu_emoji.sh) or `--mode cpu` (a short, weak CPU run), then load that folder: "
            f"UnCLIP.from_pretrained({dataset!r}, folder='runs/{dataset}') or `dalle-mini generate --dataset "
            f"{dataset} --weights runs/{dataset}`")
    if missing:
        raise FileNotFoundError(
            f"no {dataset} pipeline weights in {shown(weights)} (missing: {', '.join(missing)}). "
            f"Train them with `dalle-mini train all` (a GPU run; see the README), or build a pipeline "
            f"from your own parts with UnCLIP(clip, prior, decoder, upsampler)."
        )
    if folder is not None and not (weights / "MANIFEST.json").is_file():
        warnings.warn(UnverifiedWeightsWarning(
            f"{shown(weights)} has no MANIFEST.json: its files are loaded unchecked, so a damaged "
            "file could give wrong pictures without an error (save_pretrained and `dalle-mini train` "
            "write one)"), stacklevel=3)  # the caller of UnCLIP.from_pretrained
    loaded = []
    for p in parts:
        name = f"{dataset}_{p}"
        where = shown(weights / name)
        if folder is None:
            model = _loading(where, load_pretrained, name, builders[p], device=device)
        else:  # checked against the folder's MANIFEST.json; without one, warned about once above
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnverifiedWeightsWarning)
                model = _loading(where, load_from_folder, weights, name, builders[p], device=device)
        loaded.append(model.float().eval())
    return dataset, loaded


def save_parts(folder: object, name: object, parts: dict[str, nn.Module | None]) -> Path:
    """Write `parts` ({part: model or None}) to `folder` for `UnCLIP.save_pretrained`: see there.

    ``<name>_<part>.safetensors`` + ``.json`` per part, then ``pipeline.json``, then, last,
    ``MANIFEST.json``; an older manifest is removed first, so a write cut short never leaves a
    manifest that vouches for mixed files.
    """
    from .checkpoints import save_checkpoint
    from .weights import write_manifest

    folder = V.output_folder("folder", folder)
    if not isinstance(name, str) or not _PLAIN_NAME.match(name):
        raise ValueError(f"dataset must be a plain name such as 'shapes', got {name!r}")
    (folder / "MANIFEST.json").unlink(missing_ok=True)
    files, written = [], []
    for p in PARTS:
        part = parts.get(p)
        if part is None:
            continue
        stem = save_checkpoint(folder / f"{name}_{p}", part, getattr(part, "config", None))
        files += [f"{stem.name}.safetensors", f"{stem.name}.json"]
        written.append(p)
    info = {"format": PIPELINE_FORMAT, "dataset": name, "parts": written}
    V.atomic_write(folder / "pipeline.json", lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))
    write_manifest(folder, files + ["pipeline.json"])
    return folder


# --------------------------------------------------------------------------------------------
# diffusers-style calls: ``pipe(prompt, num_images_per_prompt=4, generator=g).images``
# --------------------------------------------------------------------------------------------

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


def call_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`UnCLIP.generate`'s keyword arguments from a diffusers-style call's (ours or UnCLIPPipeline's names)."""
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
    return settings


def output_images(images: torch.Tensor, output_type: str) -> Any:
    """Images (N, 3, S, S) in [-1, 1] as ``"pil"`` (a list of PIL images), ``"np"`` (an array
    (N, S, S, 3) in [0, 1]) or ``"pt"`` (a tensor (N, 3, S, S) in [0, 1])."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2  # (N, 3, S, S) in [0, 1]
    if output_type == "pt":
        return x
    if output_type == "np":
        return x.permute(0, 2, 3, 1).numpy()
    from PIL import Image

    from .viz import to_uint8

    return [Image.fromarray(a) for a in to_uint8(images)]
