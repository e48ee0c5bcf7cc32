"""Lesson 07 (the diffusion prior): exercise references, cases and plausible wrong answers.

Four exercises, easiest first: find the bug in a prefix mask (causal, with the caption tokens
reading each other both ways), implement the k nearest training captions, implement the diversity
of embeddings within groups (the "spread of real images" of the notebook), and predict what the prior's guidance scale 0 against
a high scale does to retrieval (measured in the notebook's guidance sweep).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.prior import causal_mask as _causal_mask


# --- 1. find the bug: a prefix mask --------------------------------------------------------------

def buggy_prefix_mask(n: int, L: int) -> torch.Tensor:
    """The notebook's broken mask: True where query i may read key j."""
    i = torch.arange(n)
    mask = i[:, None] > i[None, :]  # causal: a position reads the positions before it
    mask[:L, :L] = True  # the L caption tokens read each other in both directions
    return mask


def _prefix_plain_causal(n: int, L: int) -> torch.Tensor:  # forgets the prefix block
    return _causal_mask(n)


def _prefix_transposed(n: int, L: int) -> torch.Tensor:  # the noisy x_t would be read by the caption tokens
    return prefix_mask(n, L).T.contiguous()


def _prefix_as_float(n: int, L: int) -> torch.Tensor:  # right pattern, but 1.0/0.0 where a boolean mask is needed
    return prefix_mask(n, L).float()


def _prefix_one_too_many(n: int, L: int) -> torch.Tensor:  # the z_t slot joins the bidirectional block
    return prefix_mask(n, min(n, L + 1))


@exercise("07.prefix_mask", "find the bug", "prefix mask",
          hint="every position must be allowed to read itself: with L = 0 (no caption tokens), what does softmax "
               "return for the first row, where every key is masked?",
          cases=lambda: [(4, 0), (1, 0), (6, 2), (9, 3), (3, 3)],
          buggy=buggy_prefix_mask,
          wrong=(("plain causal mask, prefix ignored", _prefix_plain_causal),
                 ("upper triangle (future instead of past)", _prefix_transposed),
                 ("ones and zeros as floats", _prefix_as_float),
                 ("prefix block one slot too large", _prefix_one_too_many)))
def prefix_mask(n: int, L: int) -> torch.Tensor:
    mask = _causal_mask(n).clone()
    mask[:L, :L] = True
    return mask


# --- 2. implement: the k nearest training captions -----------------------------------------------

def _nearest_caption_cases():
    g = torch.Generator().manual_seed(11)
    return [
        (torch.randn(3, 8, generator=g), torch.randn(20, 8, generator=g), 4),
        # training text embeddings of very different lengths: only cosine (not the dot product) finds the right rows
        (torch.randn(2, 5, generator=g), torch.randn(6, 5, generator=g) * torch.arange(1.0, 7.0)[:, None], 2),
        (torch.randn(4, 6, generator=g), torch.randn(9, 6, generator=g), 1),
    ]


def _nearest_by_dot_product(text_emb, train_text, k):  # forgets that the inputs need not be unit vectors
    return (text_emb @ train_text.T).topk(k, dim=1).indices


def _nearest_least_similar_first(text_emb, train_text, k):  # the right k rows, in the wrong order
    return nearest_captions(text_emb, train_text, k).flip(1)


def _nearest_similarities(text_emb, train_text, k):  # returns the similarities, not the indices
    sim = F.normalize(text_emb, dim=-1) @ F.normalize(train_text, dim=-1).T
    return sim.topk(k, dim=1).values


@exercise("07.nearest_captions", "implement", "k nearest captions",
          hint="compare directions, not lengths (cosine: normalise both sides), and for each test caption return the "
               "INDICES of the k most similar training rows, most similar first (torch.topk)",
          cases=_nearest_caption_cases,
          wrong=(("dot product instead of cosine", _nearest_by_dot_product),
                 ("least similar first", _nearest_least_similar_first),
                 ("similarities instead of indices", _nearest_similarities)))
def nearest_captions(text_emb: torch.Tensor, train_text: torch.Tensor, k: int) -> torch.Tensor:
    sim = F.normalize(text_emb.float(), dim=-1) @ F.normalize(train_text.float(), dim=-1).T  # (B, N)
    return sim.topk(k, dim=1).indices


# --- 3. implement: diversity within groups ---------------------------------------------------------

def _diversity_cases():
    g = torch.Generator().manual_seed(12)
    return [(torch.randn(7, 8, generator=g), ["a", "b", "a", "a", "c", "b", "b"]),
            (torch.randn(5, 4, generator=g) * 3.0, ["x", "x", "y", "y", "y"]),
            (torch.eye(3), ["p", "p", "p"])]


def _pairwise(z: torch.Tensor) -> torch.Tensor:  # 1 − cos over the distinct pairs of rows
    z = F.normalize(z.float(), dim=-1)
    n = z.shape[0]
    return (1.0 - z @ z.T)[torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)]


def _groups(labels):
    out = {}
    for i, lab in enumerate(labels):
        out.setdefault(lab, []).append(i)
    return out


def _diversity_pooled(embeddings, labels):  # pools every within-group pair: big groups weigh more
    return torch.cat([_pairwise(embeddings[idx]) for idx in _groups(labels).values() if len(idx) >= 2]).mean().item()


def _diversity_singletons_as_zero(embeddings, labels):  # a group of one counted with diversity 0
    vals = [_pairwise(embeddings[idx]).mean().item() if len(idx) >= 2 else 0.0 for idx in _groups(labels).values()]
    return sum(vals) / len(vals)


def _diversity_with_diagonal(embeddings, labels):  # averages over all n² pairs, the zero self-distances included
    vals = []
    for idx in _groups(labels).values():
        if len(idx) >= 2:
            z = F.normalize(embeddings[idx].float(), dim=-1)
            vals.append((1.0 - z @ z.T).mean().item())
    return sum(vals) / len(vals)


def _diversity_unnormalised(embeddings, labels):  # 1 − dot product: only right for unit vectors
    vals = []
    for idx in _groups(labels).values():
        if len(idx) >= 2:
            s = embeddings[idx].float()
            n = s.shape[0]
            vals.append((1.0 - s @ s.T)[torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)].mean().item())
    return sum(vals) / len(vals)


@exercise("07.group_diversity", "implement", "diversity within groups",
          hint="group the rows by label; for each label with at least two rows, average 1 − cos over its pairs of "
               "DIFFERENT rows (normalise first); then average those per-label values, one vote per label",
          cases=_diversity_cases,
          wrong=(("every pair pooled (big groups weigh more)", _diversity_pooled),
                 ("groups of one counted as 0", _diversity_singletons_as_zero),
                 ("the diagonal counted", _diversity_with_diagonal),
                 ("rows not normalised", _diversity_unnormalised)))
def group_diversity(embeddings: torch.Tensor, labels) -> float:
    vals = [_pairwise(embeddings[idx]).mean().item() for idx in _groups(labels).values() if len(idx) >= 2]
    return float(sum(vals) / len(vals))


# --- 4. predict, then measure: guidance 0 against a high scale ----------------------------------

GUIDANCE_OPTIONS = {
    "a": "about the same at both scales: a prior sample carries its caption whatever the guidance",
    "b": "far worse at scale 0 than at the high scale: at 0 retrieval is near chance",
    "c": "better at scale 0: unguided samples are more varied, so more of them land on the right image",
}


def judge_guidance(measured) -> tuple[str, str]:
    """`measured` = (strict top-1 at guidance 0, strict top-1 at the highest scale, number of captions)."""
    top1_0, top1_hi, n = (float(measured[0]), float(measured[1]), int(measured[2]))
    chance = 1.0 / n
    facts = f"Measured: strict top-1 {top1_0:.3f} at scale 0 and {top1_hi:.3f} at the highest scale (chance {chance:.3f})."
    near_chance = lambda v: v < 5 * chance  # noqa: E731
    if top1_hi - top1_0 > 0.1:
        return "b", (facts + " Scale 0 is the UNCONDITIONAL model: x̂₀(∅) + 0·(x̂₀(y) − x̂₀(∅)) = x̂₀(∅) ignores the caption, so its "
                     "samples are image embeddings of *some* scene and land near their own caption's image only by luck"
                     + (" (here: near chance)" if near_chance(top1_0) else "") + ". Any scale ≥ 1 puts the caption back in.")
    if top1_0 - top1_hi > 0.1:
        return "c", (facts + " Here scale 0 won, and the high scale "
                     + ("is near chance too: this prior's samples do not carry their caption yet (too few training steps)."
                        if near_chance(top1_hi) else "lost by more than 0.1: look at the sweep's diversity column."))
    return "a", (facts + (" Both are near chance: this prior's samples do not carry their caption at either scale yet "
                          "(too few training steps), so the guidance scale cannot show what it does."
                          if near_chance(top1_0) and near_chance(top1_hi) else
                          " The two scales score within 0.1 of each other: in this run the unconditional model (scale 0) "
                          "retrieved about as well as the guided one."))


register(Exercise(
    name="07.guidance_retrieval", kind="predict", title="guidance 0 against a high scale",
    hint="scale 0 is one end of the guidance formula: which of the two predictions is left?",
    options=GUIDANCE_OPTIONS, judge=judge_guidance,
    wrong=(("same at both (trained prior)", ("a", (0.0, 0.88, 200))),
           ("scale 0 better (trained prior)", ("c", (0.0, 0.88, 200)))),
))
