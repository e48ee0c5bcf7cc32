"""Lesson 08 (the decoder): exercise references, cases and plausible wrong answers.

Four exercises, easiest first:

1. ``08.image_tokens`` (implement): the context-token path, z_i → √D·z_i → Linear → n tokens.
2. ``08.drop_to_null`` (implement): classifier-free guidance's condition dropout.
3. ``08.batched_guidance`` (find the bug): guidance computed on one doubled batch, halves swapped.
4. ``08.guidance_match`` (predict, then measure): the decoded pictures' match to their source at
   guidance 0, 3 and 8 (the verdict also describes the measured diversity when it is passed in).

Notebook 08 shows none of these references; its check cells name the exercise only.
"""
from __future__ import annotations

import math

import torch

from dalle_mini_core.exercises import Exercise, exercise, register

# --------------------------------------------------------------------------------------------
# 1. implement: the context-token path
# --------------------------------------------------------------------------------------------


def _image_tokens_cases():
    g = torch.Generator().manual_seed(8)
    cases = []
    for batch, dim, n, width in ((3, 5, 4, 6), (2, 8, 2, 3), (1, 4, 4, 2)):
        z_i = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=-1)
        W = torch.randn(n * width, dim, generator=g) / math.sqrt(dim)
        b = torch.randn(n * width, generator=g)
        cases.append((z_i, W, b, n))
    return cases


def _tokens_unscaled(z_i, W, b, n):  # forgot the √D scale rule
    return (z_i @ W.T + b).view(z_i.shape[0], n, -1)


def _tokens_interleaved(z_i, W, b, n):  # token k takes every n-th number instead of a block of w
    z = math.sqrt(z_i.shape[-1]) * z_i
    out = z @ W.T + b
    return out.view(z_i.shape[0], -1, n).transpose(1, 2)


@exercise("08.image_tokens", "implement", "image_tokens (z_i → n context tokens)",
          hint="scale the unit embedding by √D first (the course's one rule), then one linear map gives n·w "
               "numbers per row; token k is the k-th consecutive block of w of them",
          cases=_image_tokens_cases,
          wrong=(("forgot the √D scale", _tokens_unscaled),
                 ("tokens taken as every n-th number", _tokens_interleaved)))
def image_tokens(z_i: torch.Tensor, W: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    z = math.sqrt(z_i.shape[-1]) * z_i  # (B, D)
    return torch.nn.functional.linear(z, W, b).reshape(z_i.shape[0], n, -1)  # (B, n, w)


# --------------------------------------------------------------------------------------------
# 2. implement: condition dropout
# --------------------------------------------------------------------------------------------


def _drop_cases():
    g = torch.Generator().manual_seed(9)
    return [
        (torch.randn(6, 3, generator=g), torch.randn(3, generator=g), 0.5, 0),
        (torch.randn(4, 4, generator=g), torch.randn(4, generator=g), 0.5, 3),  # B == D: broadcasting hides nothing
        (torch.randn(8, 2, generator=g), torch.randn(2, generator=g), 0.1, 1),
        (torch.randn(3, 5, generator=g), torch.randn(5, generator=g), 0.0, 2),
    ]


def _uniforms(batch, seed):
    return torch.rand(batch, generator=torch.Generator().manual_seed(seed))


def _drop_keeps_share_p(z, null, p, seed):  # the comparison the wrong way round
    keep = _uniforms(z.shape[0], seed) < p
    return torch.where(keep[:, None], z, null)


def _drop_to_zeros(z, null, p, seed):  # the paper's other option, but not what was asked
    drop = _uniforms(z.shape[0], seed) < p
    return torch.where(drop[:, None], torch.zeros_like(z), z)


def _drop_no_column(z, null, p, seed):  # the (B,) mask broadcast along the last axis, not down the rows
    drop = _uniforms(z.shape[0], seed) < p
    return torch.where(drop, null, z)


@exercise("08.drop_to_null", "implement", "drop_to_null (condition dropout)",
          hint="one uniform number per ROW (torch.rand(B, generator=...)); a row whose number is below p is "
               "replaced, as a whole, by the null embedding: the (B,) mask needs a column axis to select rows",
          cases=_drop_cases,
          wrong=(("keeps a share p instead of dropping it", _drop_keeps_share_p),
                 ("zeros instead of the null embedding", _drop_to_zeros),
                 ("mask without [:, None]", _drop_no_column)))
def drop_to_null(z: torch.Tensor, null: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    drop = _uniforms(z.shape[0], seed) < p  # (B,) bool
    return torch.where(drop[:, None], null.to(z.dtype).expand_as(z), z)  # (B, D)


# --------------------------------------------------------------------------------------------
# 3. find the bug: guidance on one doubled batch
# --------------------------------------------------------------------------------------------


class ToyDenoiser:
    """A stand-in for the decoder: ε(x_t, t, z) from fixed random weights (deterministic)."""

    def __init__(self, channels: int, dim: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(channels, channels, generator=g) / math.sqrt(channels)
        self.read = torch.randn(dim, channels, generator=g)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bchw,cd->bdhw", x_t, self.mix)
        return torch.tanh(h + (z @ self.read)[:, :, None, None] + 1e-3 * t.float()[:, None, None, None])

    def __repr__(self) -> str:
        return "ToyDenoiser(x_t, t, z)"


def _guidance_cases():
    g = torch.Generator().manual_seed(10)
    cases = []
    for batch, channels, dim, s in ((2, 3, 5, 3.0), (3, 2, 4, 1.0), (1, 3, 6, 8.0)):
        model = ToyDenoiser(channels, dim, seed=batch)
        x_t = torch.randn(batch, channels, 4, 4, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        z = torch.randn(batch, dim, generator=g)
        null = torch.randn(dim, generator=g)
        cases.append((model, x_t, t, z, null, s))
    return cases


def _doubled(model, x_t, t, z, null):
    B = x_t.shape[0]
    eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([z, null.expand(B, -1)]))
    return eps.chunk(2)  # (conditional, unconditional): the order of the concatenation


def batched_guidance_buggy(model, x_t, t, z, null, s):
    """The version notebook 08 shows (the halves are read back in the wrong order)."""
    B = x_t.shape[0]
    eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([z, null.expand(B, -1)]))
    eps_uncond, eps_cond = eps.chunk(2)
    return eps_uncond + s * (eps_cond - eps_uncond)


def _guidance_ho_salimans_w_as_s(model, x_t, t, z, null, s):  # (1 + w)ε_c − wε_u with w = s: the other convention
    eps_cond, eps_uncond = _doubled(model, x_t, t, z, null)
    return (1 + s) * eps_cond - s * eps_uncond


@exercise("08.batched_guidance", "find the bug", "batched_guidance (find the bug)",
          hint="at s = 1 guidance must return the conditional prediction exactly; check which half of the "
               "doubled batch was built from z and which from the null embedding",
          cases=_guidance_cases, buggy=batched_guidance_buggy,
          wrong=(("Ho & Salimans' (1 + w)ε_c − wε_u with w = s", _guidance_ho_salimans_w_as_s),))
def batched_guidance(model, x_t, t, z, null, s):
    eps_cond, eps_uncond = _doubled(model, x_t, t, z, null)
    return eps_uncond + s * (eps_cond - eps_uncond)


# --------------------------------------------------------------------------------------------
# 4. predict, then measure: guidance 0 vs 3 vs 8
# --------------------------------------------------------------------------------------------

GUIDANCE_OPTIONS = {
    "a": "the match keeps improving: clearly better at 8 than at 3, and at 3 than at 0",
    "b": "it rises from 0 to 3, then levels off: 8 is about the same as 3",
    "c": "it rises from 0 to 3, then falls: 8 is clearly worse than 3",
    "d": "guidance hardly matters: 0, 3 and 8 are about the same",
}


def _change(p_from: float, p_to: float, n: int) -> str:
    """'up', 'down' or 'same': a change counts when it is at least two pictures AND two standard errors."""
    diff = p_to - p_from
    se = math.sqrt(p_from * (1 - p_from) / n + p_to * (1 - p_to) / n)
    if abs(diff) * n >= 2 - 1e-9 and abs(diff) > 2 * se:
        return "up" if diff > 0 else "down"
    return "same"


def _diversity_sentence(diversity) -> str:
    """What the measured diversity (RMS distance between two samples of one embedding, by scale) shows."""
    d = {float(k): float(v) for k, v in dict(diversity).items()}
    if not {0.0, 3.0, 8.0} <= set(d) or any(not math.isfinite(v) or v < 0 for v in d.values()):
        raise ValueError("diversity must map the guidance scales 0, 3 and 8 (and optionally 1) to non-negative distances")
    listed = ", ".join(f"{d[s]:.3f} at {s:g}" for s in sorted(d))
    text = f" Diversity (the RMS pixel distance between two samples of one embedding): {listed}."
    total = d[0.0] - d[8.0]
    if 1.0 in d and d[1.0] <= d[0.0] and total > 0.1 * d[0.0]:
        text += (f" Of the drop from guidance 0 to 8, {(d[0.0] - d[1.0]) / total:.0%} already happened between 0 and 1, "
                 "that is, between ignoring the embedding and using it plainly, before any guidance above 1.")
    rel = (d[8.0] - d[3.0]) / d[3.0] if d[3.0] > 0 else 0.0
    if abs(rel) < 0.1:
        text += (f" From 3 to 8 it changed by {100 * rel:+.1f}%: here more guidance did not make the samples of one embedding "
                 "noticeably more alike either.")
    elif rel < 0:
        text += f" From 3 to 8 it fell by {-rel:.0%}: more guidance made the samples of one embedding more alike."
    else:
        text += f" From 3 to 8 it rose by {rel:.0%}: the samples of one embedding became less alike."
    return text


def judge_guidance_match(measured) -> tuple[str, str]:
    """measured = (share right at guidance 0, at 3, at 8, pictures per scale[, diversity]).

    The optional fifth item maps guidance scales (0, 3, 8, optionally 1) to the measured diversity,
    the RMS pixel distance between two samples of one embedding; the verdict then describes it.
    Every sentence of the verdict is built from the values passed in.
    """
    if len(measured) not in (4, 5):
        raise ValueError("pass (share at 0, share at 3, share at 8, pictures per scale[, diversity by scale])")
    p0, p3, p8, n = measured[:4]
    p0, p3, p8 = float(p0), float(p3), float(p8)
    if not (isinstance(n, int) and n > 0) or not all(0.0 <= p <= 1.0 for p in (p0, p3, p8)):
        raise ValueError("pass (share at 0, share at 3, share at 8, pictures per scale) with shares in [0, 1]")
    div = _diversity_sentence(measured[4]) if len(measured) == 5 and measured[4] is not None else ""
    numbers = (f"Measured on {n} pictures per scale: {p0:.0%} at guidance 0, {p3:.0%} at 3, {p8:.0%} at 8 "
               f"(a change counts only when it is at least two pictures and two standard errors).")
    first, second = _change(p0, p3, n), _change(p3, p8, n)
    if first != "up":
        return "d", (numbers + f" Guidance 3 did not beat guidance 0 by that margin here. With {n} pictures per scale "
                     "this can mean too few pictures (or sampling steps) to tell, or a decoder that has not learned to "
                     "use its embedding; a larger measurement separates the two." + div)
    if second == "up":
        return "a", (numbers + f" At 3, {1 - p3:.0%} of the pictures still missed an attribute, and 8 recovered part of "
                     "that by more than the noise: pushing further still bought fidelity." + div)
    if second == "down":
        return "c", (numbers + f" From {p3:.0%} at 3 to {p8:.0%} at 8 is a drop beyond the noise. Look at the guidance-8 "
                     "row of the picture grid to see what the reader misread; one possible cause, which this "
                     "measurement does not test, is that a large scale pushes x̂₀ beyond the range of real pictures." + div)
    return "b", (numbers + f" Guidance 0 ignores the embedding ({p0:.0%} right). From 3 to 8 the change, "
                 f"{p3:.0%} → {p8:.0%}, is within the noise of {n} pictures per scale: once the pictures show the "
                 "embedding's attributes, more guidance adds no measurable fidelity." + div)


register(Exercise(
    name="08.guidance_match", kind="predict", title="guidance_match (predict, then measure)",
    hint="guidance mixes ε(∅) + s·(ε(z) − ε(∅)); think about what s = 0 means, and what is left to gain once "
         "the picture already shows every attribute",
    options=GUIDANCE_OPTIONS, judge=judge_guidance_match,
    wrong=(("more is always better", ("a", (0.0, 1.0, 1.0, 12))),
           ("guidance hardly matters", ("d", (0.0, 0.92, 1.0, 12))),
           ("over-guidance must break it", ("c", (0.0, 1.0, 0.92, 12))),
           ("over-guidance must break it (with diversity)",
            ("c", (0.0, 0.92, 0.75, 12, {0.0: 0.399, 1.0: 0.088, 3.0: 0.067, 8.0: 0.066})))),
))
