"""The decoder stage's recipe: a 32×32 U-Net conditioned on CLIP image embeddings.

The bank is rendered once and embedded once by the frozen CLIP (`banks.embed`; the same bank
as the prior's when the sizes agree); each step draws rows with replacement. AdamW, EMA with
warm-up (sampled from); bf16 autocast and channels_last on CUDA.

gpu: measured on an H100 (bf16 autocast, channels_last): 0.11 s per step of 256 images for the
shapes gpu U-Net (base 64, two blocks per level, attention at 16 and 8). cpu shows the mechanics;
pictures that look right need the gpu recipe (or the shipped weights). The emoji gpu decoder is
smaller (base 32, three blocks per level): the four shipped emoji parts must fit in about 10 MB
of float16 together, and the decoder, which makes the pictures, takes the largest share of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..banks import BankSpec, batches as draw, make
from ..decoder import Decoder, DecoderConfig
from ..unet import UNetConfig
from .common import BatchHook, Recipe, fit, pick

__all__ = ["DecoderRecipe", "RECIPES", "NEEDS_CLIP", "bank_spec", "build", "batches", "train"]

NEEDS_CLIP = True
IMAGE_SIZE = 32  # the decoder draws 32×32; the upsampler takes it to 64×64


@dataclass(kw_only=True)
class DecoderRecipe(Recipe):
    """How big a decoder, on how much data, for how long."""

    base_channels: int  # U-Net width at full resolution
    num_res_blocks: int  # residual blocks per U-Net level
    attention_resolutions: tuple[int, ...] = (16, 8)  # U-Net resolutions with attention (the middle always has it)
    num_objects: tuple[int, ...] = (1, 2)  # objects per training scene (shapes)
    spatial: str = "attention"  # `DecoderConfig.spatial`: how the U-Net learns where things are
    use_text: bool = False  # also condition on the caption's tokens (GLIDE's text path)
    num_groups: int | None = None  # GroupNorm groups (None: min(32, base_channels))


_SHAPES = {
    "smoke": DecoderRecipe(steps=3, batch_size=8, bank=64, base_channels=32, num_res_blocks=1, warmup_steps=1,
                           ema_decay=0.9),
    "cpu": DecoderRecipe(steps=600, batch_size=32, bank=4000, base_channels=32, num_res_blocks=1, lr=1e-3,
                         warmup_steps=50, ema_decay=0.99),
    "gpu": DecoderRecipe(steps=1600, batch_size=256, bank=200_000, base_channels=64, num_res_blocks=2, lr=4e-4,
                         warmup_steps=200, ema_decay=0.999, workers=16),
}
RECIPES: dict[str, dict[str, DecoderRecipe]] = {
    "shapes": _SHAPES,
    # emoji: the shapes sizes on the 8,465 emoji rows (1,693 pictures, five captions each)
    "emoji": {"smoke": _SHAPES["smoke"],
              "cpu": DecoderRecipe(steps=600, batch_size=32, bank=8465, base_channels=32, num_res_blocks=1, lr=1e-3,
                                   warmup_steps=50, ema_decay=0.99),
              # gpu: sized for the shipped-weights budget (the four emoji parts at most 10 MB in float16 together,
              # tests/test_vocab_trim.py): base 32 with THREE blocks per level, attention at 16 and 8, 2.6 M weights
              # (5.2 MB), the largest part. What was traded: the shapes gpu U-Net (base 64, two blocks, 7.8 M
              # weights, 15.5 MB) alone is half again the whole budget; at a quarter of the width
              # squared, a third block per level keeps the depth (its FLOPs per image are about 0.4 of the shapes
              # decoder's). 8 GroupNorm groups: min(32, base) would give one channel per group at full resolution
              # (instance norm, which throws away each channel's mean: the picture's colours). Time: NOT measured
              # on a GPU; the shapes decoder trained 2,209 images/s on an H100 (data/weights/train_report.json,
              # bf16, banks on the CPU, before fused AdamW), so 800 steps of 256 take at most about 93 s if this
              # smaller U-Net is no slower (about 120 passes over the 1,693 pictures; hundreds are needed, so
              # scripts/gpu_emoji.sh lets the decoder run to its time budget, past these steps).
              "gpu": DecoderRecipe(steps=800, batch_size=256, bank=8465, base_channels=32, num_res_blocks=3, lr=4e-4,
                                   warmup_steps=200, ema_decay=0.999, num_groups=8)},
}


def bank_spec(recipe: DecoderRecipe, dataset: str, n: int | None = None) -> BankSpec:
    """Embedded scenes at the decoder's 32×32."""
    return BankSpec(dataset, recipe.bank if n is None else n, IMAGE_SIZE, embedded=True,
                    num_objects=tuple(recipe.num_objects))


def build(recipe: DecoderRecipe, dataset: str = "shapes", *, seed: int = 0, embed_dim: int | None = 64) -> Decoder:
    """The untrained decoder for `embed_dim`-dimensional CLIP embeddings, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    unet = UNetConfig(image_size=IMAGE_SIZE, base_channels=recipe.base_channels, channel_mult=(1, 2, 2),
                      num_res_blocks=recipe.num_res_blocks, attention_resolutions=recipe.attention_resolutions,
                      num_heads=4, num_groups=recipe.num_groups or min(32, recipe.base_channels))
    return Decoder(DecoderConfig(unet=unet, embed_dim=embed_dim, spatial=recipe.spatial, use_text=recipe.use_text,
                                 context_width=2 * recipe.base_channels))


def batches(recipe: DecoderRecipe, bank: dict[str, Any], dataset: str = "shapes", *, seed: int = 0
            ) -> Callable[[int], dict]:
    return draw(bank, ("image", "image_emb", "tokens"), recipe.batch_size, seed=seed)


def train(dataset: str = "shapes", mode: str | None = None, *, recipe: DecoderRecipe | None = None,
          steps: int | None = None, bank: dict[str, Any] | None = None, clip: Any = None, model: Any = None,
          out_dir: str | Path | None = None, max_seconds: float | None = None, seed: int = 0, progress: bool = True,
          wrap: BatchHook | None = None) -> tuple[Decoder, Any]:
    """Train a decoder at 32×32; return (EMA decoder in eval mode, TrainResult).

    `bank` holds ``image``, ``image_emb`` and ``tokens`` rows (`banks.make` of `bank_spec`); without
    one, `clip` embeds ``RECIPES[dataset][mode]``'s bank. The other arguments as `recipes.clip.train`.
    """
    recipe, _ = pick(RECIPES, dataset, mode, recipe)
    if bank is None:
        if clip is None:
            raise ValueError("the decoder trains on a CLIP's image embeddings: give clip= (or a bank= of them)")
        bank = make(bank_spec(recipe, dataset), seed=seed, clip=clip, workers=recipe.workers)
    model = model if model is not None else build(recipe, dataset, seed=seed, embed_dim=bank["image_emb"].shape[1])
    return fit(model, batches(recipe, bank, dataset, seed=seed), recipe, steps=steps, out_dir=out_dir,
               max_seconds=max_seconds, seed=seed, progress=progress, wrap=wrap, channels_last=True)
