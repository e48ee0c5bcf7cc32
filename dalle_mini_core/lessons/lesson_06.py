"""Lesson 06 (CLIP): exercise references, cases and plausible wrong answers.

Four exercises, graded: the symmetric contrastive loss (*implement*; the notebook shows only its
image-side half), the rank of each caption's own picture (*find the bug*: a transposed similarity
matrix), and two *predict, then measure* questions (the temperature at evaluation time; colour
binding against the relation test of the notebook), and `colour_swap_captions`, the sample of
scenes exercise 4 measures (the notebook and its solutions call it, so both measure the same scenes).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from dalle_mini_core.clip import contrastive_loss
from dalle_mini_core.exercises import Exercise, exercise, register


# --------------------------------------------------------------------------------------------
# 1. Implement: the symmetric contrastive loss
# --------------------------------------------------------------------------------------------


def _noisy_pairs(n: int, dim: int, seed: int, noise: float = 0.8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    v = F.normalize(u + noise * torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    return u.to(dtype), v.to(dtype)


def _loss_cases():
    a = _noisy_pairs(4, 8, seed=1)
    b = _noisy_pairs(7, 16, seed=2)
    c = _noisy_pairs(5, 8, seed=3, dtype=torch.float64)
    return [(*a, 10.0), (*b, torch.tensor(1 / 0.07)), (*c, 1.0)]


def _image_half(i, t, s):  # rows only: each image picks its caption
    logits = s * i @ t.T
    return (logits.logsumexp(dim=1) - logits.diagonal()).mean()


def _halves_summed(i, t, s):
    logits = s * i @ t.T
    d = logits.diagonal()
    return (logits.logsumexp(dim=1) - d).mean() + (logits.logsumexp(dim=0) - d).mean()


def _no_scale(i, t, s):
    logits = i @ t.T
    d = logits.diagonal()
    return ((logits.logsumexp(dim=1) - d).mean() + (logits.logsumexp(dim=0) - d).mean()) / 2


def _one_softmax_over_everything(i, t, s):
    logits = s * i @ t.T
    return (logits.flatten().logsumexp(dim=0) - logits.diagonal()).mean()


@exercise("06.symmetric_loss", "implement", "symmetric contrastive loss",
          hint="two cross-entropies over the same scaled similarity matrix: rows (each image picks its caption) "
               "and columns (each caption picks its image), the right answer always on the diagonal; the loss is "
               "their mean",
          cases=_loss_cases, atol=1e-5, rtol=1e-4,
          wrong=(("the image side only (rows)", _image_half),
                 ("the two halves added, not averaged", _halves_summed),
                 ("the temperature left out", _no_scale),
                 ("one softmax over the whole matrix", _one_softmax_over_everything)))
def symmetric_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale) -> torch.Tensor:
    return contrastive_loss(image_emb, text_emb, scale)


# --------------------------------------------------------------------------------------------
# 2. Find the bug: the rank of each caption's own picture
# --------------------------------------------------------------------------------------------


def _rank_cases():
    # noisy partners, so own pictures land at many ranks and the two directions disagree
    return [_noisy_pairs(6, 8, seed=11, noise=1.5), _noisy_pairs(10, 8, seed=12, noise=1.2),
            _noisy_pairs(5, 4, seed=13, noise=2.0, dtype=torch.float64)]


def buggy_own_picture_rank(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """The broken version notebook 06 shows (the similarity matrix is the wrong way round)."""
    sim = image_emb @ text_emb.T  # similarity of every caption with every picture
    own = sim.diagonal()  # caption i with its own picture i
    return (sim > own[:, None]).sum(dim=1) + 1  # pictures more similar than the own one, + 1


@exercise("06.own_picture_rank", "find the bug", "rank of each caption's own picture",
          hint="a row of the similarity matrix must hold ONE caption against EVERY picture; check which "
               "embedding is on the left of the matrix product (the diagonal is the same either way, the rows are not)",
          cases=_rank_cases, buggy=buggy_own_picture_rank,
          wrong=(("ranks counted from 0", lambda i, t: (t @ i.T > (t @ i.T).diagonal()[:, None]).sum(dim=1)),
                 ("ranks as a float tensor", lambda i, t: ((t @ i.T > (t @ i.T).diagonal()[:, None]).sum(dim=1) + 1).float()),
                 ("the index of the best picture, not the rank of the own one", lambda i, t: (t @ i.T).argmax(dim=1))))
def own_picture_rank(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    sim = text_emb @ image_emb.T  # (captions, pictures)
    return (sim > sim.diagonal()[:, None]).sum(dim=1) + 1


# --------------------------------------------------------------------------------------------
# 3. Predict, then measure: the temperature at evaluation time
# --------------------------------------------------------------------------------------------

TEMPERATURE_OPTIONS = {
    "a": "nothing much changes: the loss and top-1 both stay about where they were",
    "b": "the loss rises towards log N (chance), but top-1 does not change at all",
    "c": "the loss rises towards log N and top-1 falls towards chance (1/N)",
    "d": "the loss falls and top-1 rises: a softer softmax is an easier task",
}


def _judge_temperature(m: dict[str, Any]) -> tuple[str, str]:
    loss_s, loss_1 = float(m["loss_learned"]), float(m["loss_at_1"])
    top_s, top_1, log_n = float(m["top1_learned"]), float(m["top1_at_1"]), float(m["log_n"])
    same_top1 = abs(top_1 - top_s) < 1e-9
    rise = loss_1 - loss_s
    if same_top1 and rise > 0.1 * log_n:
        letter = "b"
    elif same_top1 and rise < -0.1 * log_n:
        letter = "d"
    elif same_top1:
        letter = "a"
    else:
        letter = "c" if top_1 < top_s else "d"
    why = (f"Measured on one batch: loss {loss_s:.3f} at the learned s = {float(m['scale']):.1f} against {loss_1:.3f} at "
           f"s = 1 (log N = {log_n:.3f}); top-1 {top_s:.3f} against {top_1:.3f}. Multiplying every similarity by the "
           f"same positive number never changes which picture is the most similar, so retrieval cannot move; but "
           f"cosines live in [−1, 1], so at s = 1 the softmax over N candidates is nearly flat and the loss sits "
           f"close to log N whatever the embeddings. That is why CLIP learns s: without a large s the loss could "
           f"not reward a confident, correct ranking.")
    if not same_top1:
        why += " (Top-1 moved here: ties between equal similarities are the only way that can happen.)"
    return letter, why


# A made-up but plausible measurement, fed only to the test suite's wrong answers (it is not a record
# of any run: the message a student sees is always written from the measurement the notebook passes in).
_EXAMPLE_BATCH = {"scale": 30.0, "loss_learned": 0.2, "loss_at_1": 4.0, "top1_learned": 0.9,
                  "top1_at_1": 0.9, "log_n": math.log(128)}

register(Exercise(
    name="06.temperature", kind="predict", title="temperature at evaluation time",
    hint="argmax and softmax react differently to multiplying every logit by the same number",
    options=TEMPERATURE_OPTIONS, judge=_judge_temperature,
    wrong=(("retrieval falls with the softmax", ("c", _EXAMPLE_BATCH)),
           ("nothing changes", ("a", _EXAMPLE_BATCH))),
))


# --------------------------------------------------------------------------------------------
# 4. Predict, then measure: does CLIP bind colours to shapes better than it reads relations?
# --------------------------------------------------------------------------------------------

COLOUR_SWAP_OPTIONS = {
    "a": "about half the time, like the relation test",
    "b": "clearly more often than chance, but far from always (between 60% and 90%)",
    "c": "nearly always (90% or more)",
}


def colour_swap_captions(dataset, n: int) -> tuple[list[int], list[str], list[str]]:
    """Exercise 4's sample: among items ``0 … n-1`` of a two-object shapes dataset, the scenes whose two
    objects differ in colour and in shape (so swapping the colours makes the caption false).

    Returns (indices, true captions, colour-swapped captions); a true caption states the first relation
    `relations_between` finds ("a red circle left of a blue square"), its swap exchanges the two colours
    ("a blue circle left of a red square")."""
    from dalle_mini_core.data.attributes import relations_between

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if n > len(dataset):
        raise ValueError(f"n = {n} is more than the dataset's {len(dataset)} items")
    indices, true, swapped = [], [], []
    for i in range(n):
        objects = dataset.scene(i).objects
        if len(objects) != 2:
            raise ValueError(f"colour_swap_captions needs two-object scenes; item {i} has {len(objects)} objects")
        a, b = objects
        if a.colour == b.colour or a.shape == b.shape:
            continue
        relation = relations_between(a, b)[0]
        indices.append(i)
        true.append(f"a {a.colour} {a.shape} {relation} a {b.colour} {b.shape}")
        swapped.append(f"a {b.colour} {a.shape} {relation} a {a.colour} {b.shape}")
    return indices, true, swapped


def _judge_colour_swap(measured: Any) -> tuple[str, str]:
    relation = None
    if isinstance(measured, dict):
        share, n = float(measured["share"]), int(measured["n"])
        relation = measured.get("relation_share")
    else:
        share, n = float(measured), None
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share must lie in [0, 1], got {share}")
    letter = "a" if share < 0.6 else ("b" if share < 0.9 else "c")
    of = f" of {n} scenes" if n else ""
    why = f"CLIP preferred the true colours over the swapped ones in {share:.1%}{of} (chance is 50%). "
    if relation is not None:
        relation = float(relation)
        why += f"The relation test (the true relation against its mirror image) gave {relation:.1%}. "
    if letter == "c":
        why += ("So this CLIP does not read a caption as a bag of words: it binds each colour to the shape named next "
                "to it, a local link (adjacent words, one object's pixels).")
        if relation is not None and relation < share - 0.1:
            why += (" The relation, a comparison of two objects' positions across the whole picture and sentence, "
                    "is read far less well (discussion question 2 asks whether training gives it less signal).")
    elif letter == "b":
        why += "Binding is partly learnt, but CLIP still often treats a caption as a bag of words."
        if relation is not None:
            why += (" It binds colours better than it reads the relation." if relation < share - 0.05 else
                    " It reads the relation about as well, or better.")
    else:
        why += ("Here CLIP treats the caption as a bag of words for colours (an undertrained CLIP, as in smoke "
                "mode, does this for everything).")
    return letter, why


register(Exercise(
    name="06.colour_swap", kind="predict", title="colour binding vs the relation test",
    hint="a colour sits next to its shape, in the caption and in the picture; a relation compares two objects",
    options=COLOUR_SWAP_OPTIONS, judge=_judge_colour_swap,
    wrong=(("chance, like the relation", ("a", {"share": 0.95, "n": 200, "relation_share": 0.5})),
           ("partly learnt", ("b", {"share": 0.95, "n": 200})),
           ("nearly always, for a CLIP that reads bags of words", ("c", {"share": 0.52, "n": 200, "relation_share": 0.5}))),
))
