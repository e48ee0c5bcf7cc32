"""Lesson 03 (the U-Net): exercise references, cases and plausible wrong answers."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.unet import ResBlock, timestep_embedding

# ------------------------------------------------------------------------------------------------
# 1. Find the bug: a time embedding ported from another codebase
# ------------------------------------------------------------------------------------------------


def _embedding_cases():
    return [(torch.tensor([0, 7, 999]), 8), (torch.arange(5), 32)]


def buggy_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The version notebook 03 shows: ported from Ho et al.'s code, so it differs from the course's in two places."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -scale)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def _only_order_fixed(t, dim):
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _only_frequencies_fixed(t, dim):
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / half))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


@exercise("03.timestep_embedding", "find the bug", "timestep embedding",
          hint="two things differ from section 1's definition: which function fills the first half of the channels "
               "(cosines first), and how the frequencies are spaced (ω_k = 10000^(−k/(d/2)), so the exponent divides "
               "by d/2, not d/2 − 1)",
          cases=_embedding_cases, buggy=buggy_timestep_embedding,
          wrong=(("only the order fixed", _only_order_fixed),
                 ("only the frequencies fixed", _only_frequencies_fixed)))
def timestep_embedding_reference(t: torch.Tensor, dim: int) -> torch.Tensor:
    return timestep_embedding(t, dim)


# ------------------------------------------------------------------------------------------------
# 2. Implement: GroupNorm (without its learned scale and shift)
# ------------------------------------------------------------------------------------------------


def _group_norm_cases():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(2, 6, 3, 3, generator=g), 3),
            (3 * torch.randn(1, 8, 4, 2, generator=g) + 2, 2),
            (torch.randn(2, 4, 2, 2, generator=g), 4)]


def _per_channel(x, groups):  # instance norm: statistics per channel, groups ignored
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _whole_example(x, groups):  # layer norm: one group of all channels
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _unbiased(x, groups):  # torch's default var divides by n − 1
    B, C, H, W = x.shape
    xg = x.reshape(B, groups, -1)
    out = (xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, keepdim=True) + 1e-5)
    return out.reshape(B, C, H, W)


def _strided_groups(x, groups):  # channels 0, G, 2G, … in one group instead of consecutive ones
    B, C, H, W = x.shape
    xg = x.reshape(B, C // groups, groups, H, W).transpose(1, 2).reshape(B, groups, -1)
    out = (xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, keepdim=True, unbiased=False) + 1e-5)
    return out.reshape(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


@exercise("03.group_norm", "implement", "group norm",
          hint="each group holds C/groups CONSECUTIVE channels; take the mean and the variance (divide by n, not "
               "n − 1) over those channels and all pixels of one example, then (x − mean)/√(var + 1e-5)",
          cases=_group_norm_cases,
          wrong=(("per channel (instance norm)", _per_channel),
                 ("over the whole example (layer norm)", _whole_example),
                 ("unbiased variance", _unbiased),
                 ("every groups-th channel in one group", _strided_groups)))
def group_norm(x: torch.Tensor, groups: int) -> torch.Tensor:
    return F.group_norm(x, groups, eps=1e-5)


# ------------------------------------------------------------------------------------------------
# 3. Implement: a ResBlock's parameter count, by formula
# ------------------------------------------------------------------------------------------------


def _resblock_cases():
    return [(64, 64, 256, 3), (64, 128, 256, 3), (192, 64, 128, 3), (64, 96, 128, 1), (32, 48, 64, 5)]


def _formula(cin, cout, emb, k, *, scale_shift=2, skip=None, norms=True):
    total = (2 * cin + 2 * cout if norms else 0) + (k * k * cin * cout + cout) + (k * k * cout * cout + cout) + \
        (emb * scale_shift * cout + scale_shift * cout)
    if (cin != cout) if skip is None else skip:
        total += cin * cout + cout
    return total


def _one_times_cout(cin, cout, emb, k):  # the scale-shift Linear sized for the scale only
    return _formula(cin, cout, emb, k, scale_shift=1)


def _always_skip(cin, cout, emb, k):
    return _formula(cin, cout, emb, k, skip=True)


def _no_norms(cin, cout, emb, k):
    return _formula(cin, cout, emb, k, norms=False)


def _fixed_3x3(cin, cout, emb, k):  # ignores k: always 3×3 convolutions
    return _formula(cin, cout, emb, 3)


@exercise("03.resblock_params", "implement", "ResBlock parameters",
          hint="count weight and bias of every layer: a k×k conv from a to b channels has a·b·k² + b, a Linear from a "
               "to b has a·b + b, a GroupNorm over c channels 2c; the scale-shift Linear outputs a scale AND a shift "
               "per output channel, and the 1×1 skip exists only when cin ≠ cout",
          cases=_resblock_cases,
          wrong=(("scale-shift Linear without the 2×", _one_times_cout),
                 ("a 1×1 skip even when cin == cout", _always_skip),
                 ("GroupNorms not counted", _no_norms),
                 ("3×3 whatever k is", _fixed_3x3)))
def resblock_params(cin: int, cout: int, emb: int, k: int) -> int:
    total = _formula(cin, cout, emb, k)
    if k == 3:  # the package's ResBlock is the 3×3 case: the formula must agree with it
        built = sum(p.numel() for p in ResBlock(cin, cout, emb, dropout=0.0, num_groups=8).parameters())
        if built != total:
            raise AssertionError(f"formula {total} != ResBlock's {built} parameters for {(cin, cout, emb)}")
    return total


# ------------------------------------------------------------------------------------------------
# 4. Predict, then measure: doubling the base channels
# ------------------------------------------------------------------------------------------------


def _judge_double_channels(measured) -> tuple[str, str]:
    narrow, wide = (int(v) for v in measured)
    if narrow <= 0 or wide <= 0:
        raise ValueError(f"expected two positive parameter counts (base, doubled), got {measured!r}")
    ratio = wide / narrow
    letter = "d" if ratio < 1.5 else "a" if ratio < 3 else "b" if ratio < 6 else "c"
    why = (f"Measured: {narrow:,} parameters with the base width, {wide:,} with it doubled, {ratio:.2f} times as "
           f"many. ")
    if letter == "b":
        why += ("Almost every parameter sits in a convolution or a Linear whose input AND output widths both "
                "double, and a weight matrix of a×b becomes 2a×2b: four times the numbers. Only biases and norms "
                "(one number per channel) grow two-fold, which is why the ratio is a little under 4.")
    return letter, why


register(Exercise(
    name="03.double_channels", kind="predict", title="doubling the base channels",
    hint="a convolution's weight count is in_channels × out_channels × k²: what happens when both double?",
    options={"a": "about twice as many parameters (1.5× to 3×)",
             "b": "about four times as many (3× to 6×)",
             "c": "about eight times as many (6× or more)",
             "d": "hardly more (under 1.5×)"},
    judge=_judge_double_channels,
    wrong=(("twice the channels, twice the parameters", ("a", (6_949_187, 27_742_851))),
           ("a cube law", ("c", (6_949_187, 27_742_851)))),
))


# ------------------------------------------------------------------------------------------------
# 5. Find the bug: splitting a feature map's channels into attention heads
# ------------------------------------------------------------------------------------------------


def _split_heads_cases():
    g = torch.Generator().manual_seed(5)
    # non-square maps, so that mixing up rows and columns, or pixels and channels, shows
    return [(torch.randn(2, 8, 3, 4, generator=g), 2), (torch.randn(1, 12, 2, 5, generator=g), 3)]


def buggy_split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """The version notebook 03 shows: tokens-first code ported to a (B, C, H, W) map; the shape is right."""
    B, C, H, W = x.shape
    return x.reshape(B, H * W, heads, C // heads).transpose(1, 2)  # (B, heads, L, d)


def _reshape_only(x, heads):
    B, C, H, W = x.shape
    return x.reshape(B, heads, H * W, C // heads)


def _heads_interleaved(x, heads):  # head i gets channels i, i + heads, i + 2·heads, …
    return rearrange(x, "b (d heads) h w -> b heads (h w) d", heads=heads)


def _columns_first(x, heads):  # tokens in column order: (x, y) instead of (y, x)
    return rearrange(x, "b (heads d) h w -> b heads (w h) d", heads=heads)


@exercise("03.split_heads", "find the bug", "splitting channels into heads",
          hint="the shape is right but the numbers are not: in a (B, C, H, W) map the H·W pixels of ONE channel "
               "sit next to each other, so a reshape that reads pixels first mixes channels and pixels. Head i "
               "owns the consecutive channels i·d … (i+1)·d − 1, and token l is pixel (l // W, l % W); write the "
               "move as a rearrange pattern, or reshape first and then transpose",
          cases=_split_heads_cases, buggy=buggy_split_heads,
          wrong=(("a reshape alone", _reshape_only),
                 ("heads interleaved: (d heads) instead of (heads d)", _heads_interleaved),
                 ("tokens in column order", _columns_first)))
def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return rearrange(x, "b (heads d) h w -> b heads (h w) d", heads=heads)
