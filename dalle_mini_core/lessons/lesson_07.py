"""Lesson 07 (the diffusion prior): exercise references, cases and plausible wrong answers.

Four exercises, easiest first: find the bug in a causal mask, implement the nearest-caption
baseline, implement the diversity measure, and predict what the prior's guidance scale 0 against
a high scale does to retrieval (measured in the notebook's guidance sweep).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.prior import causal_mask as _causal_mask
from dalle_mini_core.prior import mean_pairwise_cosine_distance, nearest_neighbour_baseline


# --- 1. find the bug: the causal mask ------------------------------------------------------------

def buggy_causal_mask(n: int) -> torch.Tensor:
    """The notebook's broken mask: True where query i may read key j."""
    i = torch.arange(n)
    return i[:, None] > i[None, :]  # a position may read every position before it


def _mask_transposed(n: int) -> torch.Tensor:  # the noisy x_t would be read by the caption tokens
    i = torch.arange(n)
    return i[:, None] <= i[None, :]


def _mask_as_float(n: int) -> torch.Tensor:  # right pattern, but 1.0/0.0 where a boolean mask is needed
    return torch.tril(torch.ones(n, n))


@exercise("07.causal_mask", "find the bug", "causal mask",
          hint="a position must be allowed to read itself: what does softmax return for a row where every key is masked?",
          cases=lambda: [(1,), (4,), (9,)],
          buggy=buggy_causal_mask,
          wrong=(("upper triangle (future instead of past)", _mask_transposed),
                 ("ones and zeros as floats", _mask_as_float)))
def causal_mask(n: int) -> torch.Tensor:
    return _causal_mask(n)


# --- 2. implement: the nearest-caption baseline --------------------------------------------------

def _nearest_caption_cases():
    g = torch.Generator().manual_seed(11)
    return [
        (torch.randn(3, 8, generator=g), torch.randn(20, 8, generator=g), torch.randn(20, 8, generator=g)),
        # training text embeddings of very different lengths: only cosine (not the dot product) finds the right row
        (torch.randn(2, 5, generator=g), torch.randn(6, 5, generator=g) * torch.arange(1.0, 7.0)[:, None],
         torch.randn(6, 5, generator=g)),
    ]


def _nearest_by_dot_product(text_emb, train_text, train_image):  # forgets that the inputs need not be unit vectors
    return train_image[(text_emb @ train_text.T).argmax(dim=1)]


def _nearest_returns_text(text_emb, train_text, train_image):  # returns the matching TEXT embedding
    sim = F.normalize(text_emb, dim=-1) @ F.normalize(train_text, dim=-1).T
    return train_text[sim.argmax(dim=1)]


def _nearest_wrong_axis(text_emb, train_text, train_image):  # argmax over the test captions, not the training set
    sim = F.normalize(text_emb, dim=-1) @ F.normalize(train_text, dim=-1).T
    return train_image[sim.argmax(dim=0)]


@exercise("07.nearest_caption", "implement", "nearest caption",
          hint="compare directions, not lengths (cosine), take the best training row for each test caption, "
               "and return that row's IMAGE embedding",
          cases=_nearest_caption_cases,
          wrong=(("dot product instead of cosine", _nearest_by_dot_product),
                 ("returns the training text embedding", _nearest_returns_text),
                 ("argmax over the wrong axis", _nearest_wrong_axis)))
def nearest_caption(text_emb: torch.Tensor, train_text: torch.Tensor, train_image: torch.Tensor) -> torch.Tensor:
    return nearest_neighbour_baseline(text_emb, train_text, train_image)


# --- 3. implement: diversity ----------------------------------------------------------------------

def _diversity_cases():
    g = torch.Generator().manual_seed(12)
    return [(torch.randn(5, 8, generator=g),), (torch.eye(3),), (torch.randn(2, 4, generator=g) * 3.0,)]


def _diversity_with_diagonal(samples):  # averages over all n² pairs, the n zero self-distances included
    z = F.normalize(samples.float(), dim=-1)
    return (1.0 - z @ z.T).mean().item()


def _diversity_unnormalised(samples):  # 1 − dot product: only right for unit vectors
    s = samples.float()
    n = s.shape[0]
    sim = s @ s.T
    return (1.0 - sim[~torch.eye(n, dtype=torch.bool)]).mean().item()


def _diversity_similarity(samples):  # mean cosine similarity, not distance
    z = F.normalize(samples.float(), dim=-1)
    n = z.shape[0]
    return (z @ z.T)[~torch.eye(n, dtype=torch.bool)].mean().item()


@exercise("07.diversity", "implement", "diversity",
          hint="normalise the rows, and average 1 − cos over pairs of DIFFERENT rows only (a row's distance to "
               "itself is 0 and would pull the mean down)",
          cases=_diversity_cases,
          wrong=(("the diagonal counted", _diversity_with_diagonal),
                 ("rows not normalised", _diversity_unnormalised),
                 ("similarity instead of distance", _diversity_similarity)))
def diversity(samples: torch.Tensor) -> float:
    return mean_pairwise_cosine_distance(samples)


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
    if top1_hi - top1_0 > 0.1:
        return "b", (facts + " Scale 0 is the UNCONDITIONAL model: x̂₀(∅) + 0·(x̂₀(y) − x̂₀(∅)) = x̂₀(∅) ignores the caption, so its "
                     "samples are image embeddings of *some* scene, spread over the sphere, and land near their own "
                     "caption's image only by luck. Any scale ≥ 1 puts the caption back in.")
    if top1_0 - top1_hi > 0.1:
        return "c", (facts + " Here scale 0 won: this happens only when the prior is barely trained (smoke mode), "
                     "where no sample carries its caption yet.")
    return "a", (facts + " The two scales score alike: with a barely trained prior (smoke mode) neither sample carries "
                 "its caption; with a trained one, scale 0 (the unconditional model) should fall to chance.")


register(Exercise(
    name="07.guidance_retrieval", kind="predict", title="guidance 0 against a high scale",
    hint="scale 0 is one end of the guidance formula: which of the two predictions is left?",
    options=GUIDANCE_OPTIONS, judge=judge_guidance,
    wrong=(("same at both (trained prior)", ("a", (0.0, 0.88, 200))),
           ("scale 0 better (trained prior)", ("c", (0.0, 0.88, 200)))),
))
