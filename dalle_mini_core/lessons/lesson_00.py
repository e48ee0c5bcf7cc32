"""Lesson 00 (introduction): exercise references, cases and plausible wrong answers.

The introduction's exercises are optional warm-ups: one small function (images back to pixels) and
one prediction about the pipeline's four learned parts.
"""
from __future__ import annotations

import torch

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.viz import to_uint8


def _to_pixels_cases():
    g = torch.Generator().manual_seed(0)
    return [(torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.2]).view(3, 1, 2),),  # 1.2: a value outside [-1, 1]
            (1.1 * (torch.rand(3, 4, 5, generator=g) * 2 - 1),)]


def _no_clamp(image):  # 1.2 → 280.5, which wraps around in uint8
    return ((image + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)


def _truncated(image):  # .to(uint8) cuts 63.75 to 63 instead of rounding to 64
    return ((image.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(1, 2, 0)


def _channels_first(image):
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _float_pixels(image):
    return ((image.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0)


@exercise("00.to_pixels", "implement", "to_pixels",
          hint="clamp to [-1, 1] first, map -1 → 0 and 1 → 255 with (x + 1)·127.5, round to the nearest level, "
               "store as uint8, and move the channel axis last: (C, H, W) → (H, W, C)",
          cases=_to_pixels_cases,
          wrong=(("no clamp: 1.2 wraps around in uint8", _no_clamp),
                 ("truncated instead of rounded", _truncated),
                 ("channels left first", _channels_first),
                 ("float, not uint8", _float_pixels)))
def to_pixels(image: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(to_uint8(image))


# ------------------------------------------------------------------------------------------------
# Predict, then measure: which learned part is the biggest?
# ------------------------------------------------------------------------------------------------

PARTS = {"a": "clip", "b": "prior", "c": "decoder", "d": "upsampler"}


def _judge_biggest_part(measured: dict) -> tuple[str, str]:
    counts = {str(k).lower(): int(v) for k, v in dict(measured).items()}
    missing = [p for p in PARTS.values() if p not in counts]
    if missing:
        raise ValueError(f"the measurement must count every part; missing: {missing}")
    total = sum(counts[p] for p in PARTS.values())
    biggest = max(PARTS.values(), key=counts.get)
    letter = next(k for k, v in PARTS.items() if v == biggest)
    listed = ", ".join(f"{p} {counts[p] / 1e6:.1f} M" for p in PARTS.values())
    why = (f"Measured parameters: {listed}; the {biggest} holds {counts[biggest] / total:.0%} of the {total / 1e6:.1f} M. ")
    if biggest == "decoder":
        why += ("The decoder turns one embedding vector into every pixel of the 32×32 picture: a wide U-Net "
                "with attention that reads tokens made from the embedding. The prior maps one vector to another, "
                "and the upsampler starts from a picture that already holds the layout, so a smaller U-Net "
                "is enough there.")
    else:
        why += "Compare each part's job: what goes in, what comes out, and at what resolution it works."
    return letter, why


register(Exercise(
    name="00.biggest_part", kind="predict", title="the biggest learned part",
    hint="think of what each part produces: one vector, or every pixel of a picture",
    options={"a": "CLIP (text and image encoders)", "b": "the prior", "c": "the decoder", "d": "the upsampler"},
    judge=_judge_biggest_part,
    wrong=(("the upsampler, because it draws the biggest picture",
            ("d", {"clip": 3_733_185, "prior": 4_921_920, "decoder": 7_740_675, "upsampler": 1_644_291})),
           ("CLIP, because it reads both text and images",
            ("a", {"clip": 3_733_185, "prior": 4_921_920, "decoder": 7_740_675, "upsampler": 1_644_291}))),
))
