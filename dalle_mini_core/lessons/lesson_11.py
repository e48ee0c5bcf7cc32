"""Lesson 11 (unCLIP on real pictures, the emoji pipeline): exercise references, cases and wrong answers.

Three exercises: where the pipeline's top-5 identity falls against its chance level of 5 / 1,870
(predict, then measure), the identity measure's nearest-emoji rule (implement), and whether the
decoder, given the true CLIP embedding of a keycap, draws the right glyph (predict, then measure).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.evaluation.images import pixel_features
from dalle_mini_core.exercises import Exercise, exercise, register

GALLERY = 1870  # emoji in the identity measure's gallery
KEYCAPS = 13  # keycap: #, *, 0-9, 10


# --- 1. predict, then measure: top-5 identity against chance ------------------------------------

TOP5_OPTIONS = {
    "a": "at chance: top-5 under twice its chance level (2 × 5/1870, about 0.5%)",
    "b": "above chance, but under 10%",
    "c": "between 10% and 50%",
    "d": "at least half (the bar the course sets before it ships emoji weights)",
}


def judge_top5(measured) -> tuple[str, str]:
    """`measured` = the full path's top-5 identity on train names (a share in [0, 1])."""
    share = float(measured)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share must lie in [0, 1], got {share}")
    chance = 5 / GALLERY
    facts = (f"Measured: the asked-for emoji is among the 5 nearest for {share:.1%} of the train names; chance is "
             f"5/{GALLERY} = {chance:.2%}, so that is {share / chance:.0f}× chance.")
    if share < 2 * chance:
        return "a", facts + (" The pictures carry no more of their emoji than noise would: the parts are too little "
                             "trained (a few minutes on a CPU, or the smoke recipes) for the decoder to draw more than "
                             "a palette, or the prior hands it the wrong embedding.")
    if share < 0.10:
        return "b", facts + (f" Something of the emoji gets through (a colour, a rough outline): {share / chance:.1f}× "
                             f"chance, yet under one name in ten finds its own emoji among the five nearest of 1,870.")
    if share < 0.5:
        return "c", facts + (" Often recognisable, yet most names still land elsewhere: compare the decoder's ceiling "
                             "(the true image embedding) to see whether the prior or the decoder loses the rest.")
    return "d", facts + " Most names draw their own emoji: the pipeline passes the course's bar for shipping weights."


register(Exercise(
    name="11.top5_level", kind="predict", title="top-5 identity against chance",
    hint="chance is 5 of 1,870 emoji (0.27%); think of what a few minutes of CPU training can teach a 32×32 decoder",
    options=TOP5_OPTIONS, judge=judge_top5,
    wrong=(("at chance (measured 30%)", ("a", 0.30)),
           ("at least half (measured 0%)", ("d", 0.0)),
           ("above chance, under 10% (measured 60%)", ("b", 0.60))),
))


# --- 2. implement: the nearest emoji ------------------------------------------------------------

def _nearest_cases():
    g = torch.Generator().manual_seed(11)
    cases = []
    # a gallery with pictures p and greyer, slightly changed copies 0.3 p + noise: the Euclidean distance
    # finds the grey copy nearest to a grey query, the cosine (blind to length) the bright original;
    # queries at 64×64
    p = torch.rand(3, 3, 32, 32, generator=g) * 1.6 - 0.8
    grey = 0.3 * p + 0.05 * torch.randn(3, 3, 32, 32, generator=g)
    gallery = torch.cat([p, grey, torch.rand(4, 3, 32, 32, generator=g) * 2 - 1])  # (10, 3, 32, 32)
    query = 0.35 * p + 0.02 * torch.randn(3, 3, 32, 32, generator=g)
    cases.append((F.interpolate(query, scale_factor=2, mode="nearest"), gallery))
    # fine detail that averages out over each 2×2 block but not in its top-left pixel: area average ≠ subsampling
    a, b = torch.rand(2, 3, 32, 32, generator=g) * 0.6 - 0.3
    block = torch.zeros(2, 2)
    block[0, 0], block[1, 1] = 1.0, -1.0  # sums to 0 over the block
    pattern = block.repeat(32, 32)  # (64, 64)
    up_a = F.interpolate(a[None], scale_factor=2, mode="nearest")[0]
    d = F.interpolate((0.8 * (b - a))[None], scale_factor=2, mode="nearest")[0]
    tricky = (up_a + d * pattern)[None]  # area average = a; top-left pixels = a + 0.8 (b - a)
    cases.append((torch.cat([tricky, F.interpolate(b[None], scale_factor=2, mode="nearest")]), torch.stack([a, b])))
    # plain random pictures, some already at 32×32
    gallery = torch.rand(12, 3, 32, 32, generator=g) * 2 - 1
    cases.append(((gallery[[4, 7, 1]] + 0.5 * torch.randn(3, 3, 32, 32, generator=g)).clamp(-1, 1), gallery))
    return cases


def _by_cosine(pictures, gallery):
    q = F.normalize(pixel_features(pictures, 32), dim=-1)
    return (q @ F.normalize(gallery.flatten(1), dim=-1).T).argmax(1)


def _farthest(pictures, gallery):
    return torch.cdist(pixel_features(pictures, 32), gallery.flatten(1)).argmax(1)


def _subsampled(pictures, gallery):  # every other pixel instead of the 2×2 average
    small = pictures[..., ::pictures.shape[-1] // 32, ::pictures.shape[-1] // 32]
    return torch.cdist(small.flatten(1), gallery.flatten(1)).argmin(1)


@exercise("11.nearest_emoji", "implement", "nearest emoji",
          hint="shrink each picture to 32×32 by averaging each 2×2 block (F.interpolate(..., mode='area')), flatten it "
               "and the gallery to rows of 3,072 pixels, and return for each picture the index of the gallery row at "
               "the smallest Euclidean distance (torch.cdist, then argmin over the gallery)",
          cases=_nearest_cases,
          wrong=(("cosine similarity instead of the Euclidean distance", _by_cosine),
                 ("the farthest row (argmax)", _farthest),
                 ("every other pixel instead of the 2×2 average", _subsampled)))
def nearest_emoji(pictures: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    return torch.cdist(pixel_features(pictures, 32), pixel_features(gallery, 32)).argmin(1)


# --- 3. predict, then measure: can the decoder write the glyph on a keycap? ----------------------

KEYCAP_OPTIONS = {
    "a": "at least 75% of all the keycap pictures: the embedding holds the glyph (digit, 10, # or *) and the "
         "decoder draws it",
    "b": "above chance (at least 2 in 13 of the pictures, 15%) but under 75%",
    "c": "about chance (under 2 in 13 of the pictures, 15%): the glyph is a guess",
}


def judge_keycaps(measured) -> tuple[str, str]:
    """`measured` = the share of decoder pictures, drawn from the TRUE CLIP image embedding of a keycap, whose
    nearest keycap (of the 13, in pixels at 32×32) is the one asked for."""
    share = float(measured)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share must lie in [0, 1], got {share}")
    facts = f"Measured: {share:.0%} of the keycap pictures are nearest to their own keycap (chance: 1 in {KEYCAPS}, 8%)."
    if share >= 0.75:
        return "a", facts + (" This decoder and its CLIP keep the glyphs apart: the text-rendering failure of the paper "
                             "(§7) does not show at this scale on 13 keys (it may on longer text).")
    if share >= 2 / KEYCAPS:
        return "b", facts + (" Some glyphs survive, many do not: the keys differ only in a few pixels of glyph, a "
                             "small part of what CLIP's embedding has room to hold and of the decoder's loss.")
    return "c", facts + (" The decoder's pictures do not tell the keycaps apart. Either it draws the key without its "
                         "glyph — thirteen pictures that differ in a few pixels of glyph are nearly one thing to the "
                         "embedding and the loss: the paper's text-rendering failure (§7) — or, for weights trained "
                         "minutes on a CPU, it draws no detail at all. Look at the pictures to tell which.")


register(Exercise(
    name="11.keycap_digits", kind="predict", title="glyphs on keycaps",
    hint="the 13 keycaps share their key shape and differ only in a small glyph; how much of the embedding, and of "
         "the decoder's pixel loss, does that glyph account for?",
    options=KEYCAP_OPTIONS, judge=judge_keycaps,
    wrong=(("nearly always (measured 8%)", ("a", 1 / 13)),
           ("about chance (measured 85%)", ("c", 0.85)),
           ("sometimes (measured 0%)", ("b", 0.0))),
))
