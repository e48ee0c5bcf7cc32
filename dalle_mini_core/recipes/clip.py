"""The CLIP stage's recipe: a tiny CLIP trained contrastively on a bank of captioned scenes.

Each step draws `batch_size` DISTINCT rows of a bank rendered once (a contrastive batch needs
negatives: each image is contrasted with the batch's other captions). AdamW with β₂ = 0.98 and
ε = 1e-6 (Radford et al. 2021, §2.5), weight decay 0.05, no EMA.

Measured with seed 0 (the README's results table): shapes "gpu" (the shipped CLIP) reaches
97% or more text→image top-1 among 100 test scenes; emoji: the train split is learnt by heart
within 800 steps and test-split retrieval (unseen emoji names) stops improving there.

The emoji CLIPs carry a compact vocabulary (``compact_vocab=True``; `clip` module docstring):
a token row for each BPE id that the names of all 1,870 emoji (test names included: a name's
text is not its picture) and the caption templates use, and one unknown row, instead of all
49,408: the text tower's table shrinks from 4.7 M weights to about 0.2 M (`dataset_vocab`).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..banks import BankSpec, batches as draw, make
from ..clip import CLIPConfig, CLIPModel, clip_config
from ..data.tokens import compact_vocab
from ..options import check_dataset
from .common import BatchHook, Recipe, fit, pick

__all__ = ["CLIPRecipe", "RECIPES", "NEEDS_CLIP", "build_config", "bank_spec", "build", "batches", "train",
           "load_or_train", "dataset_vocab"]

NEEDS_CLIP = False  # this stage makes the CLIP the others need


@dataclass(kw_only=True)
class CLIPRecipe(Recipe):
    """How long and how hard to train a tiny CLIP in one run mode."""

    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    config: CLIPConfig | None = None  # the architecture (None: the dataset's preset, `clip.clip_config`)
    compact_vocab: bool = False  # give the text tower rows only for the dataset's token ids (`dataset_vocab`)


RECIPES: dict[str, dict[str, CLIPRecipe]] = {
    "shapes": {
        "smoke": CLIPRecipe(steps=4, batch_size=16, bank=64, warmup_steps=2),
        "cpu": CLIPRecipe(steps=1200, batch_size=128, bank=4000),
        "gpu": CLIPRecipe(steps=2400, batch_size=128, bank=200_000, workers=16),
    },
    "emoji": {  # 1,693 train emoji, each with five caption templates: 8,465 rows
        "smoke": CLIPRecipe(steps=4, batch_size=16, bank=64, warmup_steps=2, compact_vocab=True),
        "cpu": CLIPRecipe(steps=800, batch_size=128, bank=8465, compact_vocab=True),
        # gpu: 800 steps (test retrieval stops improving there, module docstring); at the shapes CLIP's
        # measured 3,339 pairs/s on an H100 about 31 s -- an estimate: the emoji CLIP (64×64, patch 8)
        # has not been timed on a GPU. Sized for the shipped-weights budget (the four emoji parts at most
        # 10 MB in float16 together, tests/test_vocab_trim.py): the compact vocabulary (1,943 token rows
        # instead of 49,408: 0.19 M weights instead of 4.7 M, nothing learnt lost) and a ViT 96 wide instead
        # of the preset's 128 (what was traded: 0.36 M weights of image tower), 1.0 M weights (2.0 MB).
        "gpu": CLIPRecipe(steps=800, batch_size=128, bank=8465, compact_vocab=True,
                          config=clip_config("emoji", vision_width=96)),
    },
}


def build_config(recipe: CLIPRecipe, dataset: str = "shapes") -> CLIPConfig:
    """The CLIP architecture of `recipe` (its own, or the dataset's preset), with the dataset's
    compact vocabulary when the recipe asks for one and the architecture has none yet."""
    config = recipe.config if recipe.config is not None else clip_config(dataset)
    if recipe.compact_vocab and config.vocab is None:
        config = dataclasses.replace(config, vocab=dataset_vocab(dataset))
    return config


@functools.lru_cache(maxsize=None)
def dataset_vocab(dataset: str) -> tuple[int, ...]:
    """The compact vocabulary of `dataset`'s captions (`data.tokens.compact_vocab`).

    emoji: every one of the 1,870 emoji -- train, val and test -- by its cleaned name and its raw
    Unicode name, and every caption template (`data.emoji.TEMPLATES`, both articles): the words the
    CLIP can be trained or asked about (tests/test_vocab_trim.py checks that every caption of the
    dataset maps to rows of its own, none to the unknown row). Other datasets have no compact
    vocabulary (ValueError).
    """
    check_dataset(dataset)
    if dataset != "emoji":
        raise ValueError(f"only the emoji recipes use a compact vocabulary, not {dataset!r}")
    from ..data.emoji import TEMPLATES, load_emoji_arrays

    arrays = load_emoji_arrays()
    names = sorted({str(n) for n in arrays["captions"]} | {str(n) for n in arrays["names"]})
    # The tokenizer splits a caption into words at spaces before it merges bytes, and every template
    # puts spaces around {name}, so a caption's ids are its template's ids plus its name's ids.
    templates = sorted({t.format(name="", a=a) for t in TEMPLATES for a in ("a", "an")})
    return compact_vocab(names + templates)


def bank_spec(recipe: CLIPRecipe, dataset: str, n: int | None = None) -> BankSpec:
    """The scenes this stage draws from (`n` overrides the recipe's bank size)."""
    return BankSpec(dataset, recipe.bank if n is None else n, build_config(recipe, dataset).image_size)


def build(recipe: CLIPRecipe, dataset: str = "shapes", *, seed: int = 0, embed_dim: int | None = None) -> CLIPModel:
    """The untrained CLIP, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return CLIPModel(build_config(recipe, dataset))


def batches(recipe: CLIPRecipe, bank: dict[str, Any], dataset: str = "shapes", *, seed: int = 0
            ) -> Callable[[int], dict]:
    return draw(bank, ("image", "tokens"), recipe.batch_size, seed=seed, distinct=True)


def train(dataset: str = "shapes", mode: str | None = None, *, recipe: CLIPRecipe | None = None,
          steps: int | None = None, bank: dict[str, Any] | None = None, clip: Any = None, model: Any = None,
          out_dir: str | Path | None = None, max_seconds: float | None = None, seed: int = 0, progress: bool = True,
          wrap: BatchHook | None = None) -> tuple[CLIPModel, Any]:
    """Train the tiny CLIP for `dataset`; return (CLIP in eval mode, train.py's TrainResult).

    `recipe` (default ``RECIPES[dataset][mode]``, mode from `run_mode()`); `steps` overrides its
    count; `bank` reuses rendered scenes (`banks.render`); `model` an already built CLIP;
    `out_dir` a resumable run directory; `max_seconds` a wall-clock stop; `wrap` wraps the batch
    function; `clip` is unused (every stage's `train` takes it).
    """
    recipe, _ = pick(RECIPES, dataset, mode, recipe)
    if bank is None:
        bank = make(bank_spec(recipe, dataset), seed=seed, workers=recipe.workers)
    model = model if model is not None else build(recipe, dataset, seed=seed)
    return fit(model, batches(recipe, bank, dataset, seed=seed), recipe, steps=steps, out_dir=out_dir,
               max_seconds=max_seconds, seed=seed, progress=progress, wrap=wrap)


def load_or_train(dataset: str = "shapes", mode: str | None = None, *, progress: bool = False) -> CLIPModel:
    """The dataset's CLIP: the shipped weights ``data/weights/<dataset>_clip`` (sha256-checked) when
    present, else trained now with ``RECIPES[dataset][mode]`` (a few minutes in cpu mode); in eval
    mode on the default device."""
    from ..checkpoints import load_pretrained
    from ..device import get_device

    check_dataset(dataset)
    try:
        return load_pretrained(f"{dataset}_clip", CLIPModel, device=get_device()).eval()
    except FileNotFoundError:
        return train(dataset, mode, progress=progress)[0].eval()
