"""Banks: render a dataset once, embed it once with a CLIP, then draw seeded batches from it.

Every stage trains on batches drawn from a *bank*, a dict of tensors with one row per training
item, rendered once (worker processes may render in parallel) so that a GPU is not left waiting
for the CPU to draw shapes:

* `render` — ``{"image", "caption", "tokens"}`` for N items of "shapes" (1–2 object scenes by
  default) or "emoji" (the split's emoji, then again with other caption templates);
* `embed` — adds the CLIP's ``image_emb`` and ``text_emb`` (unit vectors) and keeps the images
  at the size a stage trains at (the emoji CLIP sees 64×64, the decoder draws 32×32);
* `BankSpec` / `make` — the two in one call, described by a hashable spec so one run can share a
  bank between stages (the prior and the decoder train on the same embedded scenes);
* `batches` — ``batch_fn(step)``, a pure function of the step (train.py's exact resume relies on
  it): rows drawn with replacement, or distinct rows (a contrastive CLIP batch needs negatives),
  optionally mirrored left-right (emoji only: shapes captions name left and right).

The one batch-seed rule is `batch_seed`: step s of a run seeded with `seed` draws its rows from
``torch.Generator().manual_seed(seed * 1_000_003 + s)``; the prime keeps runs with neighbouring
seeds from sharing batches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .options import DatasetName, check_dataset

__all__ = ["batch_seed", "BankSpec", "render", "embed", "make", "batches", "resident_device", "on_device",
           "EMOJI_CAPTION_VARIANTS"]

EMOJI_CAPTION_VARIANTS = 5  # an emoji bank repeats the split with this many caption seeds


def batch_seed(seed: int, step: int) -> int:
    """The seed of step `step`'s batch in a run seeded with `seed` (the one rule of the package)."""
    return seed * 1_000_003 + step


def _stack(items: Sequence[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([x for x, _ in items]), [c for _, c in items]


def render(dataset: DatasetName, n: int, *, image_size: int, split: str = "train",
           num_objects: int | tuple[int, ...] = (1, 2), seed: int = 0, workers: int = 0) -> dict[str, Any]:
    """`n` items rendered once: {"image": (n, 3, S, S) in [-1, 1], "caption": [n], "tokens": (n, L),
    "item": (n,) which picture each row shows (an emoji repeated with another caption keeps its item)}.

    shapes: scene i of ``ShapesDataset(split, seed=seed, num_objects=num_objects)`` (a bank of n
    rows is the first n rows of any larger one). emoji: the split's emoji in order, repeated with
    caption seeds ``seed * 5 + k`` (k = 0, 1, …) until `n` rows, at most 5 repeats.
    `workers` DataLoader processes render in parallel (0: in this process).
    """
    from .data.tokens import tokenize

    check_dataset(dataset)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a bank needs a whole number of items, at least 1, got {n!r}")
    if dataset == "shapes":
        from .data.shapes import ShapesDataset

        data: Any = ShapesDataset(split, length=n, image_size=image_size, num_objects=num_objects, seed=seed)
        items = torch.arange(n)
    else:
        from .data.emoji import EmojiDataset

        parts = [EmojiDataset(split, image_size=image_size, seed=seed * EMOJI_CAPTION_VARIANTS + k)
                 for k in range(EMOJI_CAPTION_VARIANTS)]
        data = torch.utils.data.Subset(torch.utils.data.ConcatDataset(parts), range(min(n, len(parts[0]) * len(parts))))
        items = torch.arange(len(data)) % len(parts[0])
    workers = min(workers, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(data, batch_size=512, num_workers=workers, collate_fn=_stack)
    images, captions = [], []
    for x, caps in loader:
        images.append(x)
        captions += caps
    return {"image": torch.cat(images), "caption": captions, "tokens": tokenize(captions), "item": items}


@torch.no_grad()
def embed(clip: Any, bank: Mapping[str, Any], *, image_size: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """`bank` with the CLIP's ``image_emb`` and ``text_emb`` (N, D) added (float32, CPU, unit norm).

    The CLIP encodes the bank's images as rendered; `image_size` (e.g. 32 for an emoji bank
    rendered at the emoji CLIP's 64) then shrinks the kept images by area averaging.
    """
    from .options import model_device

    device = model_device(clip)
    was_training = clip.training
    clip.eval()
    image_emb, text_emb = [], []
    for i in range(0, bank["image"].shape[0], batch_size):
        image_emb.append(clip.encode_image(bank["image"][i : i + batch_size].to(device)).float().cpu())
        text_emb.append(clip.encode_text(bank["tokens"][i : i + batch_size].to(device)).float().cpu())
    clip.train(was_training)
    images = bank["image"]
    if image_size is not None and image_size != images.shape[-1]:
        if images.shape[-1] % image_size:
            raise ValueError(f"image_size {image_size} does not divide the bank's {images.shape[-1]}-pixel images "
                             f"(area averaging shrinks them by a whole factor)")
        images = F.avg_pool2d(images, images.shape[-1] // image_size)
    return {**bank, "image": images, "image_emb": torch.cat(image_emb), "text_emb": torch.cat(text_emb)}


@dataclass(frozen=True)
class BankSpec:
    """What a stage trains on: `n` items of `dataset` kept at `image_size`; `embedded` ones are
    rendered at the CLIP's own size and carry its embeddings. Equal specs are the same bank."""

    dataset: str
    n: int
    image_size: int
    embedded: bool = False
    num_objects: tuple[int, ...] = (1, 2)
    split: str = "train"


def make(spec: BankSpec, *, seed: int = 0, clip: Any = None, workers: int = 0) -> dict[str, Any]:
    """The bank `spec` describes (an embedded one needs the `clip`)."""
    if spec.embedded and clip is None:
        raise ValueError("an embedded bank needs the CLIP that embeds it")
    size = int(clip.image_size) if spec.embedded else spec.image_size
    bank = render(spec.dataset, spec.n, image_size=size, split=spec.split, num_objects=spec.num_objects, seed=seed,
                  workers=workers)
    return embed(clip, bank, image_size=spec.image_size) if spec.embedded else bank


def resident_device() -> torch.device:
    """Where a bank's tensors live while a stage trains: the GPU when training runs on one (one process;
    under torchrun each rank copies its own batches), else the CPU."""
    from .device import get_device

    dev = get_device()
    if dev.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1") or 1) == 1:
        return dev
    return torch.device("cpu")


def on_device(bank: Mapping[str, Any], device: torch.device | None = None) -> dict[str, Any]:
    """`bank` with its tensors moved to `device` (default `resident_device`) once, so that each step's
    batch is cut on the GPU instead of being copied there; on the CPU the same tensors, untouched."""
    dev = resident_device() if device is None else torch.device(device)
    if dev.type == "cpu":
        return dict(bank)
    return {k: v.to(dev) if torch.is_tensor(v) and k != "item" else v for k, v in bank.items()}


def batches(bank: Mapping[str, Any], keys: Sequence[str], batch_size: int, *, seed: int = 0, distinct: bool = False,
            flip: bool = False, device: torch.device | None = None) -> Callable[[int], dict[str, Any]]:
    """``batch_fn(step) -> {key: rows}``: `batch_size` rows of `bank`, seeded by `batch_seed(seed, step)`.

    Rows are drawn with replacement, or with `distinct` all showing different pictures (rows of
    different ``item``, when the bank has that key; at most as many as there are pictures);
    `flip` mirrors each image left-right with probability 1/2. The rows are cut where the bank's
    tensors are moved once (`on_device`: the GPU when training runs on one, else the CPU, where
    nothing moves); the row choices are drawn on the CPU either way, so they are the same.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number, at least 1, got {batch_size!r}")
    missing = [k for k in keys if k not in bank]
    if missing:
        raise ValueError(f"the bank has no {missing} (it has {sorted(bank)})")
    rows = {k: bank[k] for k in keys}
    dev = resident_device() if device is None else torch.device(device)
    if dev.type != "cpu":
        rows = on_device(rows, dev)
    n = rows[keys[0]].shape[0]
    items = bank.get("item") if distinct else None
    if items is not None:
        items = items.cpu()
    if items is not None and torch.unique(items).numel() == n:
        items = None  # every row a different picture (shapes): a permutation is enough

    def batch_fn(step: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(batch_seed(seed, step))
        if distinct:
            idx = torch.randperm(n, generator=g)
            if items is not None:  # keep each picture's first row in the permutation
                _, inverse = torch.unique(items[idx], return_inverse=True)
                first = torch.full((int(inverse.max()) + 1,), n).scatter_reduce(0, inverse, torch.arange(n), "amin")
                idx = idx[first.sort().values]
            idx = idx[:batch_size]
        else:
            idx = torch.randint(0, n, (batch_size,), generator=g)
        if dev.type != "cpu":
            idx = idx.to(dev)
        out = {k: rows[k][idx] for k in keys}
        if flip:
            mirror = (torch.rand(idx.shape[0], generator=g) < 0.5).to(out["image"].device)
            out["image"] = torch.where(mirror[:, None, None, None], out["image"].flip(-1), out["image"])
        return out

    return batch_fn
