"""Measuring a CLIP: does each caption find its picture, and what does the space know?

* `retrieval_metrics` / `evaluate_retrieval` — top-k retrieval among N pairs, text → image and
  image → text, over seeded galleries of a dataset; `encode_dataset` embeds the items once;
* on shapes, captions leave attributes out, so several pictures can fit one caption:
  `shapes_relevance` says which (read by the dataset's own caption parser), `shapes_caption_kind`
  how much of its scene a caption pins down, and `shapes_oracle_embeddings` embeds fresh scenes
  that fit each caption (the samples a perfect prior would draw);
* `zero_shot_classify` (the most similar prompt wins), `confusion_matrix`, and
  `zero_shot_attribute_accuracy`: shape, colour, size and position of one-object scenes read
  zero-shot against all 324 one-object captions (`shapes_prompts`);
* `embedding_map` — both kinds of embedding on their top two principal axes.

The model itself (`clip.CLIPModel`) is in ``dalle_mini_core/clip.py``; nothing here trains.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from ..clip import CLIPModel

__all__ = [
    "retrieval_metrics",
    "encode_dataset",
    "shapes_relevance",
    "shapes_caption_kind",
    "shapes_oracle_embeddings",
    "evaluate_retrieval",
    "zero_shot_classify",
    "confusion_matrix",
    "embedding_map",
    "shapes_prompts",
    "zero_shot_attribute_accuracy",
]


# --------------------------------------------------------------------------------------------
# 1. Retrieval
# --------------------------------------------------------------------------------------------


def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    *,
    ks: Sequence[int] = (1, 5),
    groups: Sequence[Any] | None = None,
    relevant: torch.Tensor | None = None,
) -> dict[str, float]:
    """Top-k retrieval accuracy over a gallery of N pairs (image i belongs with text i).

    ``text_to_image_top{k}``: fraction of captions with a correct image among the k images
    most similar to it; ``image_to_text_top{k}`` the other way round. By default only the
    item's own partner is correct. `groups` (one label per pair, e.g. the caption) makes
    items with the same label interchangeable; `relevant` (N texts, N images) bool says
    directly which images each caption correctly describes (its diagonal must be True).
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must both be (N, D), got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    n = image_emb.shape[0]
    if any(not isinstance(k, int) or k < 1 or k > n for k in ks):
        raise ValueError(f"every k must be an int in [1, {n}], got {list(ks)}")
    if groups is not None and relevant is not None:
        raise ValueError("pass groups or relevant, not both")
    sim = text_emb.float() @ image_emb.float().T  # (N texts, N images)
    if relevant is not None:
        if relevant.shape != (n, n) or relevant.dtype != torch.bool:
            raise ValueError(f"relevant must be a bool tensor of shape ({n}, {n}), got {relevant.dtype} {tuple(relevant.shape)}")
        if not bool(relevant.diagonal().all()):
            raise ValueError("relevant must mark every caption's own image as correct (diagonal all True)")
        same = relevant.to(sim.device)
    elif groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} labels for {n} pairs")
        ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        label = torch.tensor([ids[g] for g in groups], device=sim.device)
        same = label[:, None] == label[None, :]  # (N, N): text i may retrieve image j
    else:
        same = torch.eye(n, dtype=torch.bool, device=sim.device)
    out: dict[str, float] = {}
    for name, s, ok in (("text_to_image", sim, same), ("image_to_text", sim.T, same.T)):
        order = s.argsort(dim=1, descending=True)  # (N, N): best match first
        hit = ok.gather(1, order)  # (N, N): is the r-th retrieved item correct?
        for k in ks:
            out[f"{name}_top{k}"] = hit[:, :k].any(dim=1).float().mean().item()
    return out


@torch.no_grad()
def encode_dataset(clip: CLIPModel, dataset: Any, indices: Sequence[int], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Image and text embeddings (N, D) on the CPU, and the captions, of `dataset[i]` for i in `indices`."""
    image_emb, text_emb, captions = [], [], []
    was_training = clip.training
    clip.eval()
    for s in range(0, len(indices), batch_size):
        images, caps = zip(*(dataset[int(i)] for i in indices[s:s + batch_size]))
        image_emb.append(clip.encode_image(torch.stack(images)).cpu())
        text_emb.append(clip.encode_text(list(caps)).cpu())
        captions.extend(caps)
    clip.train(was_training)
    return torch.cat(image_emb), torch.cat(text_emb), captions


def shapes_relevance(captions: Sequence[str], scenes: Sequence[Any]) -> torch.Tensor:
    """(N captions, N scenes) bool: does caption i truly describe scene j?

    Shapes captions state only some attributes ("a red circle left of a blue square" says
    nothing of sizes or cells), so several images of a gallery can fit one caption. A
    two-object caption may name the scene's objects in either order.
    """
    from ..data.attributes import describes, parse_caption

    parsed = [parse_caption(c) for c in captions]
    out = torch.zeros(len(captions), len(scenes), dtype=torch.bool)
    for j, scene in enumerate(scenes):
        orders = [scene.objects] if len(scene.objects) == 1 else [scene.objects, scene.objects[::-1]]
        for i, attrs in enumerate(parsed):
            out[i, j] = any(describes(attrs, objs) for objs in orders)
    return out


def shapes_caption_kind(text: str) -> str:
    """How much of its scene a shapes caption pins down: "one object" (everything stated),
    "two objects, cells stated" (everything stated), or "two objects, relation" (the cells, and
    for one template the sizes, are left open: many different layouts fit the caption)."""
    from ..data.attributes import parse_caption

    attrs = parse_caption(text)
    if len(attrs.objects) == 1:
        return "one object"
    return "two objects, relation" if attrs.relation is not None else "two objects, cells stated"


@torch.no_grad()
def shapes_oracle_embeddings(clip: CLIPModel, captions: Sequence[str], *, seed: int = 0, image_size: int = 32,
                             batch_size: int = 256) -> torch.Tensor:
    """(N, D) CLIP image embeddings of a *fresh* random scene for each caption: a perfect prior's samples.

    Each scene is `data.shapes.scene_for_caption(captions[i], rng)` (what the caption states is
    fixed; cells, sizes, jitter and background it leaves open are drawn anew), rendered and
    encoded. No learned prior can match the caption's distribution of images better, so these
    are the reference a prior's samples are compared with (`evaluate_prior`'s ``oracle``). They
    are not a retrieval ceiling: a sampler that collapses towards the caption's mean image can
    retrieve better than a faithful one (notebook 07). The same seed gives the same scenes.
    """
    from ..data.shapes import render, scene_for_caption

    rng = np.random.default_rng(seed)
    images = [render(scene_for_caption(c, rng), image_size) for c in captions]
    was_training = clip.training
    clip.eval()
    out = torch.cat([clip.encode_image(torch.stack(images[s:s + batch_size])).cpu()
                     for s in range(0, len(images), batch_size)])
    clip.train(was_training)
    return out


def evaluate_retrieval(
    clip: CLIPModel,
    dataset: Any,
    *,
    gallery_size: int = 100,
    num_galleries: int = 10,
    ks: Sequence[int] = (1, 5),
    seed: int = 0,
) -> dict[str, float]:
    """Zero-shot retrieval on `dataset`: mean top-k over `num_galleries` galleries of `gallery_size`.

    Each gallery is `gallery_size` distinct items drawn (seeded) from the dataset; every caption
    looks for its image among the gallery's images and vice versa. On shapes (a dataset with
    ``scene(i)``) an image counts as correct when the caption truly describes it
    (`shapes_relevance`), and keys ending ``_strict`` count only the item's own image;
    elsewhere items with identical captions are interchangeable.
    """
    if gallery_size * num_galleries > len(dataset):
        raise ValueError(f"{num_galleries} galleries of {gallery_size} need {gallery_size * num_galleries} items; "
                         f"the dataset has {len(dataset)}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)[: gallery_size * num_galleries].tolist()
    image_emb, text_emb, captions = encode_dataset(clip, dataset, order)
    is_shapes = callable(getattr(dataset, "scene", None))
    totals: dict[str, float] = {}
    for j in range(num_galleries):
        sl = slice(j * gallery_size, (j + 1) * gallery_size)
        if is_shapes:
            relevant = shapes_relevance(captions[sl], [dataset.scene(i) for i in order[sl]])
            m = retrieval_metrics(image_emb[sl], text_emb[sl], ks=ks, relevant=relevant)
            strict = retrieval_metrics(image_emb[sl], text_emb[sl], ks=ks)
            m.update({f"{key}_strict": v for key, v in strict.items()})
        else:
            m = retrieval_metrics(image_emb[sl], text_emb[sl], ks=ks, groups=captions[sl])
        for key, v in m.items():
            totals[key] = totals.get(key, 0.0) + v / num_galleries
    return totals


# --------------------------------------------------------------------------------------------
# 2. Zero-shot classification and the embedding map
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def zero_shot_classify(clip: CLIPModel, images: torch.Tensor, prompts: Sequence[str] | Sequence[Sequence[str]]) -> torch.Tensor:
    """For each image, the index of its most similar prompt: (N,) long.

    `prompts` is one list of K class prompts shared by every image, or one list of K prompts per
    image (a per-image prompt set, as `zero_shot_attribute_accuracy` builds them).
    """
    image_emb = clip.encode_image(images)  # (N, D)
    if len(prompts) and isinstance(prompts[0], str):
        text_emb = clip.encode_text(list(prompts))  # (K, D)
        return (image_emb @ text_emb.T).argmax(dim=1).cpu()
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {len(prompts)} prompt sets for {images.shape[0]} images")
    k = len(prompts[0])
    if any(len(p) != k for p in prompts):
        raise ValueError("every image's prompt set must have the same number of prompts")
    text_emb = clip.encode_text([p for ps in prompts for p in ps]).view(len(prompts), k, -1)  # (N, K, D)
    return torch.einsum("nd,nkd->nk", image_emb, text_emb).argmax(dim=1).cpu()


def confusion_matrix(true: torch.Tensor | Sequence[int], pred: torch.Tensor | Sequence[int], num_classes: int) -> torch.Tensor:
    """(K, K) counts: entry [i, j] is how often class i was predicted as class j."""
    true, pred = torch.as_tensor(true, dtype=torch.long), torch.as_tensor(pred, dtype=torch.long)
    if true.shape != pred.shape or true.dim() != 1:
        raise ValueError(f"true and pred must be 1-D and the same length, got {tuple(true.shape)} and {tuple(pred.shape)}")
    if len(true) and (min(true.min(), pred.min()) < 0 or max(true.max(), pred.max()) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    return torch.bincount(true * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def embedding_map(image_emb: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both kinds of embedding projected on the top two principal axes of all of them together.

    Returns (image_xy (N, 2), text_xy (M, 2)). Each axis's sign is fixed so that its largest
    coordinate is positive, so the same embeddings always give the same picture.
    """
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError("image_emb and text_emb must be (N, D) and (M, D) with the same D")
    x = torch.cat([image_emb, text_emb]).double()
    if x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError("need at least two embeddings of at least two dimensions")
    x = x - x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # rows of vh: principal axes, largest first
    axes = vh[:2]  # (2, D)
    sign = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))  # (2, 1)
    xy = (x @ (axes * sign).T).float()  # (N + M, 2)
    return xy[: image_emb.shape[0]], xy[image_emb.shape[0]:]


# --------------------------------------------------------------------------------------------
# 3. Zero-shot attributes on shapes
# --------------------------------------------------------------------------------------------


def shapes_prompts(template: int = 0) -> tuple[list[str], list[dict[str, str]]]:
    """Every one-object shapes caption in one template, with the attributes each one states.

    3 shapes × 6 colours × 2 sizes × 9 positions = 324 prompts, written by the dataset's own
    `caption` function so prompts and training captions cannot drift apart.
    """
    from ..data.attributes import COLOURS, POSITIONS, SHAPES, SIZES, Scene, ShapeObject, caption

    prompts, attrs = [], []
    for shape in SHAPES:
        for colour in COLOURS:
            for size in SIZES:
                for position in POSITIONS:
                    obj = ShapeObject(shape, colour, size, position)
                    prompts.append(caption(Scene((obj,)), template=template))
                    attrs.append(obj.as_dict())
    return prompts, attrs


@torch.no_grad()
def zero_shot_attribute_accuracy(clip: CLIPModel, dataset: Any, *, n: int = 500, template: int = 0, batch_size: int = 256) -> dict[str, Any]:
    """Zero-shot attribute classification of one-object shapes scenes.

    Each of the first `n` images is matched against all 324 one-object captions
    (`shapes_prompts`); every attribute — shape, colour, size, position — is read from the
    winning caption and compared with the truth. Returns ``accuracy`` {attribute: fraction},
    ``all_correct`` (all four right), ``confusion`` {attribute: (K, K) counts, rows = truth}
    and ``labels`` {attribute: class names in matrix order}.
    """
    from ..data.attributes import ATTRIBUTES, COLOURS, POSITIONS, SHAPES, SIZES

    labels = {"shape": tuple(SHAPES), "colour": tuple(COLOURS), "size": tuple(SIZES), "position": tuple(POSITIONS)}
    if not callable(getattr(dataset, "attributes", None)):
        raise TypeError("zero_shot_attribute_accuracy needs a shapes dataset (with attributes(i))")
    if not 0 < n <= len(dataset):
        raise ValueError(f"n must be in [1, {len(dataset)}], got {n}")
    truth = [dataset.attributes(i) for i in range(n)]
    if any(len(t) != 1 for t in truth):
        raise ValueError("zero_shot_attribute_accuracy reads one object per image: use ShapesDataset(..., num_objects=1)")
    prompts, prompt_attrs = shapes_prompts(template)
    was_training = clip.training
    clip.eval()
    text_emb = clip.encode_text(prompts)  # (324, D)
    winners = []
    for s in range(0, n, batch_size):
        images = torch.stack([dataset[i][0] for i in range(s, min(n, s + batch_size))])
        winners.append((clip.encode_image(images) @ text_emb.T).argmax(dim=1).cpu())  # (B,)
    clip.train(was_training)
    winner = torch.cat(winners).tolist()
    out: dict[str, Any] = {"accuracy": {}, "confusion": {}, "labels": labels, "n": n}
    correct_all = torch.ones(n, dtype=torch.bool)
    for name in ATTRIBUTES:
        true = torch.tensor([labels[name].index(t[0][name]) for t in truth])
        pred = torch.tensor([labels[name].index(prompt_attrs[w][name]) for w in winner])
        out["accuracy"][name] = (true == pred).float().mean().item()
        out["confusion"][name] = confusion_matrix(true, pred, len(labels[name]))
        correct_all &= true == pred
    out["all_correct"] = correct_all.float().mean().item()
    return out
