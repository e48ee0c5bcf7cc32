"""Measuring a decoder: does a decoded image show what the embedded one showed?

* `decoded_attribute_accuracy` (shapes) — encode one-object test scenes with CLIP, decode the
  embeddings, and read shape, colour, size and position back with the attribute reader
  (`data.reader`): the share of pictures right for each, and for all four;
* `decoded_retrieval` (any dataset, e.g. emoji, which has no attribute reader) — encode the
  decoded pictures with CLIP again and retrieve their sources among the bank's embeddings.

The model is in ``dalle_mini_core/decoder.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..options import model_device

if TYPE_CHECKING:
    from ..decoder import Decoder

__all__ = ["decoded_attribute_accuracy", "decoded_retrieval"]


@torch.no_grad()
def decoded_attribute_accuracy(
    decoder: Decoder,
    clip: nn.Module,
    *,
    num_images: int = 100,
    guidance_scale: float | None = 3.0,
    steps: int = 25,
    seed: int = 0,
    batch_size: int = 100,
    split: str = "test",
) -> dict[str, Any]:
    """Encode one-object test scenes with CLIP, decode the embeddings, read the attributes back.

    Each decoded image is scored (`data.reader.score_caption`) against the full caption of the
    scene it came from ("a small red circle at the top left"). Returns the fraction of images
    right for shape, colour, size, position and all four, plus the images and captions.
    Chance for position is 1/9.
    """
    from ..data.attributes import caption
    from ..data.reader import score_caption
    from ..data.shapes import ShapesDataset

    u = decoder.config.unet
    dataset = ShapesDataset(split, length=num_images, image_size=u.image_size, num_objects=1, seed=seed)
    captions = [caption(dataset.scene(i), template=0) for i in range(num_images)]
    generator = torch.Generator().manual_seed(seed)
    was_training = decoder.training
    decoder.eval()
    samples = []
    for s in range(0, num_images, batch_size):
        real = torch.stack([dataset[i][0] for i in range(s, min(num_images, s + batch_size))])
        emb = clip.encode_image(real)  # (b, D), unit norm
        samples.append(decoder.sample(emb, steps=steps, guidance_scale=guidance_scale, generator=generator).float().cpu())
    decoder.train(was_training)
    images = torch.cat(samples)
    scores = [score_caption(img, text) for img, text in zip(images, captions)]
    out: dict[str, Any] = {k: sum(s[k] for s in scores) / num_images for k in ("shape", "colour", "size", "position", "all")}
    out["images"], out["captions"] = images, captions
    return out


@torch.no_grad()
def decoded_retrieval(decoder: Decoder, clip: nn.Module, bank: Mapping[str, Any], *, clip_size: int | None = None,
                      guidance_scale: float | None = 3.0, steps: int = 25, seed: int = 0) -> dict[str, Any]:
    """Does a decoded image keep its source's identity? Decode every embedding of `bank`, encode the
    decoded images with `clip` again (upsampled to `clip_size` first, e.g. 64 for the emoji CLIP),
    and retrieve among the bank's own image embeddings: top-1 / top-5 of the source, chance 1/N.

    The measure for datasets without an attribute reader (emoji). Returns {"top1", "top5",
    "cosine_to_source", "n", "images"}.
    """
    emb = bank["image_emb"]
    images = decoder.sample(emb.to(decoder.device), steps=steps, guidance_scale=guidance_scale,
                            generator=torch.Generator().manual_seed(seed)).float().clamp(-1, 1)
    x = images if clip_size is None else F.interpolate(images, size=(clip_size, clip_size), mode="bilinear",
                                                       align_corners=False)
    device = model_device(clip)
    back = F.normalize(clip.encode_image(x.to(device)).float().cpu(), dim=-1)  # (N, D)
    sim = back @ F.normalize(emb.float(), dim=-1).T  # (N, N)
    order = sim.argsort(dim=1, descending=True)
    target = torch.arange(len(emb))[:, None]
    return {"top1": (order[:, :1] == target).any(1).float().mean().item(),
            "top5": (order[:, :5] == target).any(1).float().mean().item(),
            "cosine_to_source": sim.diagonal().mean().item(), "n": len(emb), "images": images.cpu()}
