"""Measuring a diffusion prior: are its samples the image embeddings their captions ask for?

A prior maps a caption's CLIP text embedding z_t to an image embedding z_i (Ramesh et al. 2022,
§2.2). It is scored against two baselines that need no training — z_t itself
(`text_embedding_baseline`) and the image embedding of the training caption whose z_t is closest
(`nearest_neighbour_baseline`) — with:

* `retrieval_top1` / `retrieval_hits` — is the predicted embedding closest (cosine) to its own
  caption's true image embedding among n (chance 1/n)? Optionally any scene the caption fits counts;
* `cosine_to_true` — mean cosine to the true image embedding;
* `mean_pairwise_cosine_distance` — the spread of several samples for one caption (diversity).

`embed_dataset` embeds a dataset with a frozen CLIP once (the pairs a prior trains and is scored
on); `evaluate_prior` runs every measure for the prior, the baselines and, when given, a perfect
prior's samples, on n held-out captions with distinct text. The model is in ``dalle_mini_core/prior.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..diffusion import check_embeddings

if TYPE_CHECKING:
    from ..prior import DiffusionPrior

__all__ = [
    "text_embedding_baseline",
    "nearest_neighbour_baseline",
    "cosine_to_true",
    "retrieval_hits",
    "retrieval_top1",
    "mean_pairwise_cosine_distance",
    "embed_dataset",
    "evaluate_prior",
]


# ---------------------------------------------------------------------------------------------
# Baselines and metrics
# ---------------------------------------------------------------------------------------------


def text_embedding_baseline(text_emb: torch.Tensor) -> torch.Tensor:
    """The simplest "prior": use the caption's text embedding as if it were the image embedding."""
    return text_emb


def nearest_neighbour_baseline(
    text_emb: torch.Tensor, train_text_emb: torch.Tensor, train_image_emb: torch.Tensor
) -> torch.Tensor:
    """For each caption, the image embedding of the training pair whose TEXT embedding is closest (cosine).

    text_emb (B, D), train_text_emb (N, D), train_image_emb (N, D) → (B, D).
    """
    if train_text_emb.shape != train_image_emb.shape:
        raise ValueError("train_text_emb and train_image_emb must have the same shape (N, D)")
    sim = F.normalize(text_emb, dim=-1) @ F.normalize(train_text_emb, dim=-1).T  # (B, N)
    return train_image_emb[sim.argmax(dim=1)]


def cosine_to_true(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean cosine similarity between each predicted embedding and its true one (both (B, D))."""
    if pred.shape != true.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and true {tuple(true.shape)} differ in shape")
    return F.cosine_similarity(pred.float(), true.float(), dim=-1).mean().item()


def retrieval_hits(pred: torch.Tensor, gallery: torch.Tensor, relevance: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool, row by row: is the gallery embedding most similar to pred[i] a hit? (see `retrieval_top1`)."""
    if pred.shape != gallery.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gallery {tuple(gallery.shape)} differ in shape")
    sim = F.normalize(pred.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T  # (B, B)
    best = sim.argmax(dim=1)  # (B,)
    if relevance is None:
        return best == torch.arange(pred.shape[0], device=pred.device)
    if relevance.shape != sim.shape or relevance.dtype != torch.bool:
        raise ValueError(f"relevance must be a ({sim.shape[0]}, {sim.shape[1]}) bool tensor, got "
                         f"{tuple(relevance.shape)} {relevance.dtype}")
    if not bool(relevance.diagonal().all()):
        raise ValueError("relevance[i, i] must be True: each caption describes its own scene")
    return relevance.to(best.device)[torch.arange(len(best), device=best.device), best]


def retrieval_top1(pred: torch.Tensor, gallery: torch.Tensor, relevance: torch.Tensor | None = None) -> float:
    """Fraction of rows i whose most similar gallery embedding (cosine) is gallery[i].

    pred (B, D) are predicted image embeddings, gallery (B, D) the true image embeddings of the
    same B captions, in the same order. Chance is 1 / B. With `relevance` (B, B) bool — does
    caption i describe gallery scene j? (`evaluation.clip.shapes_relevance`) — row i is a hit when the
    retrieved scene fits caption i, its own scene or another one the caption equally describes.
    """
    return retrieval_hits(pred, gallery, relevance).float().mean().item()


def mean_pairwise_cosine_distance(samples: torch.Tensor) -> float:
    """Diversity of n samples (n, D): the mean of 1 − cos over the n(n−1)/2 distinct pairs."""
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise ValueError(f"need samples of shape (n >= 2, D), got {tuple(samples.shape)}")
    z = F.normalize(samples.float(), dim=-1)
    sim = z @ z.T  # (n, n)
    n = z.shape[0]
    off_diagonal = sim[~torch.eye(n, dtype=torch.bool, device=z.device)]
    return (1.0 - off_diagonal).mean().item()


# ---------------------------------------------------------------------------------------------
# Embedding a dataset once, and the whole evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def embed_dataset(clip_model: Any, dataset: Any, n: int, *, start: int = 0, batch_size: int = 256) -> dict[str, Any]:
    """CLIP embeddings of items ``start … start + n − 1`` of `dataset`, to train a prior fast.

    Returns {"text_emb": (n, D), "image_emb": (n, D), "tokens": (n, L) long, "caption": [n]}
    on the CPU; every row is a batch-ready training pair for `DiffusionPrior.loss`. The CLIP is
    frozen (run once here), so prior training never touches images again.
    """
    from .clip import encode_dataset
    from ..data.tokens import tokenize

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if start < 0 or start + n > len(dataset):
        raise ValueError(f"items {start}..{start + n - 1} do not fit a dataset of {len(dataset)} items")
    image_emb, text_emb, captions = encode_dataset(clip_model, dataset, range(start, start + n), batch_size=batch_size)
    tokens = tokenize(captions, context_length=clip_model.context_length)
    return {"text_emb": text_emb, "image_emb": image_emb, "tokens": tokens, "caption": captions}


def _distinct_rows(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first `n` rows whose token sequences (captions) are all different."""
    seen: set[tuple[int, ...]] = set()
    keep: list[int] = []
    for i, row in enumerate(tokens.tolist()):
        key = tuple(row)
        if key not in seen:
            seen.add(key)
            keep.append(i)
            if len(keep) == n:
                break
    if len(keep) < n:
        raise ValueError(f"the test set has only {len(keep)} distinct captions; asked for n={n}")
    return torch.tensor(keep)


@torch.no_grad()
def evaluate_prior(
    prior: DiffusionPrior,
    train: Mapping[str, torch.Tensor],
    test: Mapping[str, torch.Tensor],
    *,
    n: int = 200,
    seed: int = 0,
    steps: int = 64,
    guidance_scale: float | None = None,
    best_of: int = 1,
    diversity_captions: int = 8,
    diversity_samples: int = 8,
    relevance: Callable[[torch.Tensor], torch.Tensor] | None = None,
    oracle: Callable[[torch.Tensor], torch.Tensor] | None = None,
    groups: Callable[[torch.Tensor], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Score the prior against the two baselines on `n` held-out captions with distinct text.

    `train` / `test` are `embed_dataset` outputs (the nearest-neighbour baseline searches
    `train`). Methods: ``prior`` (a sample, as the decoder would get it: `steps`,
    `guidance_scale`, best of `best_of`), ``text_embedding`` and ``nearest_neighbour``.
    Returns a dict with, per method:

    * ``retrieval_top1`` — fraction of captions whose predicted embedding is closest (cosine) to
      their own true image embedding among the n true image embeddings (chance 1/n). Strict:
      where another gallery scene also fits a caption (shapes captions leave attributes out),
      retrieving it counts as a miss, for every method alike;
    * ``cosine_to_true`` — mean cosine similarity to the true image embedding;
    * ``cosine_to_unrelated`` — the same against another caption's image embedding (a floor);
    * ``diversity`` — mean pairwise cosine distance of `diversity_samples` predictions for one
      caption, averaged over `diversity_captions` captions (the others are deterministic: 0);

    With `relevance` — a function (rows) → (n, n) bool "caption i describes scene j" for the
    chosen test rows (`evaluation.clip.shapes_relevance` on shapes) — also ``retrieval_top1_relevant``: a hit
    when the retrieved scene fits the caption (a sample may land on another scene the caption
    allows, which the strict score counts as a miss).

    With `oracle` — a function (rows) → (n, D): the CLIP image embeddings of *fresh* scenes that
    the chosen captions describe (`evaluation.clip.shapes_oracle_embeddings`), i.e. samples of a perfect
    prior — also the method ``oracle_sample``: what a faithful sampler scores (not a retrieval
    ceiling: an under-dispersed prior, close to its mean, can retrieve better), and its
    ``diversity`` (the spread of real images of one caption, which the prior's should match). With
    `groups` — a function (rows) → one label per row (`evaluation.clip.shapes_caption_kind`) — also
    ``retrieval_top1_by_group`` {label: {"n": count, "strict": {method: …}, "relevant": {…}}}.

    plus ``prior_mean``: the first three scores of the prior's *mean* (one denoising step from
    pure noise, the network's estimate of E[z_i | y]: the centre of the images a caption allows,
    a point rather than a sample), and ``n``, ``seed``, ``chance_top1``, the sampling settings and
    ``rows`` (the test rows scored, in order).
    """
    # 1. n distinct test captions, and an unrelated partner for each (a seeded derangement)
    rows = _distinct_rows(test["tokens"], n)
    text_emb, image_emb = test["text_emb"][rows], test["image_emb"][rows]
    tokens = test["tokens"][rows] if prior.config.use_tokens else None
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    partner = torch.empty(n, dtype=torch.long)
    partner[perm] = perm.roll(1)  # partner[i] != i for every i (n ≥ 2)

    # 2. predictions of the three methods
    was_training = prior.training
    prior.eval()
    sample_kwargs = dict(steps=steps, guidance_scale=guidance_scale, generator=g)
    if best_of > 1:
        prior_pred = prior.sample_best_of(text_emb, tokens, n=best_of, **sample_kwargs).cpu()
    else:
        prior_pred = prior.sample(text_emb, tokens, **sample_kwargs).cpu()
    prior_mean = prior.sample(text_emb, tokens, steps=1, guidance_scale=guidance_scale, generator=g).cpu()
    predictions = {
        "prior": prior_pred,
        "text_embedding": text_embedding_baseline(text_emb),
        "nearest_neighbour": nearest_neighbour_baseline(text_emb, train["text_emb"], train["image_emb"]),
    }
    if oracle is not None:
        predictions["oracle_sample"] = check_embeddings("oracle(rows)", oracle(rows), image_emb.shape[1]).float().cpu()
        if predictions["oracle_sample"].shape != image_emb.shape:
            raise ValueError(f"oracle(rows) must return ({n}, {image_emb.shape[1]}), got {tuple(predictions['oracle_sample'].shape)}")

    # 3. diversity: several draws for the same caption
    k = min(diversity_captions, n)
    rep_text = text_emb[:k].repeat_interleave(diversity_samples, dim=0)
    rep_tokens = None if tokens is None else tokens[:k].repeat_interleave(diversity_samples, dim=0)
    draws = prior.sample(rep_text, rep_tokens, **sample_kwargs).cpu().view(k, diversity_samples, -1)
    prior_diversity = sum(mean_pairwise_cosine_distance(d) for d in draws) / k
    prior.train(was_training)

    result: dict[str, Any] = {"n": n, "seed": seed, "steps": steps, "guidance_scale": guidance_scale, "best_of": best_of,
                              "rows": rows.tolist()}
    result["retrieval_top1"] = {m: retrieval_top1(p, image_emb) for m, p in predictions.items()}
    rel = relevance(rows) if relevance is not None else None
    if rel is not None:
        result["retrieval_top1_relevant"] = {m: retrieval_top1(p, image_emb, rel) for m, p in predictions.items()}
        result["retrieval_top1_relevant"]["prior_mean"] = retrieval_top1(prior_mean, image_emb, rel)
    result["cosine_to_true"] = {m: cosine_to_true(p, image_emb) for m, p in predictions.items()}
    result["cosine_to_unrelated"] = {m: cosine_to_true(p, image_emb[partner]) for m, p in predictions.items()}
    result["diversity"] = {"prior": prior_diversity, "text_embedding": 0.0, "nearest_neighbour": 0.0}
    if oracle is not None:  # the spread of real images of one caption: what the prior's diversity should match
        fresh = oracle(rows[:k].repeat_interleave(diversity_samples)).float().cpu().view(k, diversity_samples, -1)
        result["diversity"]["oracle_sample"] = sum(mean_pairwise_cosine_distance(d) for d in fresh) / k
    if groups is not None:
        labels = list(groups(rows))
        if len(labels) != n:
            raise ValueError(f"groups(rows) must give one label per row ({n}), got {len(labels)}")
        scored = {**predictions, "prior_mean": prior_mean}
        hits = {m: retrieval_hits(p, image_emb) for m, p in scored.items()}
        hits_rel = {m: retrieval_hits(p, image_emb, rel) for m, p in scored.items()} if rel is not None else None
        by_group: dict[str, Any] = {}
        for label in sorted(set(labels)):
            mask = torch.tensor([lab == label for lab in labels])
            entry: dict[str, Any] = {"n": int(mask.sum()),
                                     "strict": {m: h[mask].float().mean().item() for m, h in hits.items()}}
            if hits_rel is not None:
                entry["relevant"] = {m: h[mask].float().mean().item() for m, h in hits_rel.items()}
            by_group[label] = entry
        result["retrieval_top1_by_group"] = by_group
    result["prior_mean"] = {
        "retrieval_top1": retrieval_top1(prior_mean, image_emb),
        "cosine_to_true": cosine_to_true(prior_mean, image_emb),
        "cosine_to_unrelated": cosine_to_true(prior_mean, image_emb[partner]),
    }
    result["chance_top1"] = 1.0 / n
    return result
