"""Measuring the emoji pipeline: is a picture drawn from an emoji's name that emoji?

Three measures, each on three generation paths (``PATHS``), for emoji names of the train split
(seen in training) and of the test split (82 names never seen):

* ``full``           — text → CLIP text embedding → prior → decoder (the pipeline);
* ``no_prior``       — the text embedding given to the decoder directly (the paper's baseline, §5.1);
* ``reconstruction`` — the decoder given the TRUE image embedding of the asked-for emoji: the
  decoder's ceiling (what a perfect prior would give it).

**Identity** (`identity`): every picture (the decoder's 32×32 output) is compared with all 1,870
emoji in pixel space at 32×32 (`images.pixel_features`, Euclidean distance), a feature space the
generator was never trained against, so a picture cannot "score" by pleasing the CLIP that
conditioned it. Top-1 / top-5 say how often the asked-for emoji is the nearest / among the five
nearest; chance is k / 1,870. ``full_upsampled`` scores the final 64×64 pictures (area-averaged
to 32×32) of the full path.

**FID and KID on CLIP image features** (`fid_kid`): the pipeline's own CLIP embeds every set; no
Inception network is downloaded (Kynkäänniemi et al. 2023 argue for CLIP features). Every set
has the same number of rows ``m`` (at most 82, sub-sampled with the seed: FID is biased by the set
size, so only equal sizes compare) and is compared with the same reference, the real test emoji.
The floor is real against real: ``m`` real train emoji against that reference. ``decoder_32``
measures 32×32 pictures (each set, real ones included, shrunk to 32×32 and enlarged back to the
CLIP's 64×64), ``upsampler_64`` the full path's final pictures against the real 64×64 emoji.

Sizes come from the run mode (`EMOJI_EVAL_SIZES`); the same seed gives the same numbers. The
command is ``dalle-mini eval emoji --weights DIR --json FILE`` (`report.evaluate`).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..defaults import GENERATE_DEFAULTS
from .images import clip_image_features, frechet_distance, identity_retrieval, kernel_distance, pixel_features

__all__ = ["EMOJI_EVAL_SIZES", "PATHS", "FID_ROWS", "emoji_names", "emoji_gallery", "nearest_emoji", "draw_emoji",
           "emoji_report"]

#: Names generated per split and sampler steps, by run mode (the test split has 82 names).
EMOJI_EVAL_SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"n_train": 6, "n_test": 6, "steps": {"prior_steps": 2, "decoder_steps": 2, "upsampler_steps": 2}},
    "cpu": {"n_train": 100, "n_test": 82, "steps": {}},
    "gpu": {"n_train": 1693, "n_test": 82, "steps": {}},
}
PATHS: tuple[str, ...] = ("full", "no_prior", "reconstruction")
FID_ROWS = 82  # at most this many rows per FID/KID set: the size of the real test split
_GENERATE_KEYS = ("prior_steps", "prior_guidance", "decoder_steps", "decoder_guidance", "upsampler_steps",
                  "prior_sampler", "decoder_sampler", "decoder_sampler_options", "upsampler_sampler",
                  "upsampler_sampler_options")


def emoji_names(split: str, n: int, *, seed: int = 0) -> dict[str, Any]:
    """`n` emoji of `split` ("train" or "test"): {"names" (clean Unicode names), "gallery" (their rows
    in the 1,870-emoji gallery, ``EmojiDataset("all")``), "images" (N, 3, 64, 64) in [-1, 1]}.

    All of the split when `n` is at least its size, else a seeded choice (same seed, same names), in
    gallery order.
    """
    from ..data.emoji import EmojiDataset

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number of names, at least 1, got {n!r}")
    data = EmojiDataset(split, image_size=64, templates=False)
    rows = torch.arange(len(data))
    if n < len(data):
        rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    rows = rows.tolist()
    return {"names": [data.clean_names[i] for i in rows], "gallery": [int(data.indices[i]) for i in rows],
            "images": torch.stack([data.image(i) for i in rows])}


def emoji_gallery() -> dict[str, Any]:
    """All 1,870 emoji as the identity measure sees them: {"images" (1870, 3, 32, 32) in [-1, 1] (the
    64×64 pictures area-averaged to 32×32), "features" (1870, 3072: `pixel_features` at 32×32), "names" (clean
    Unicode names), "splits" ("train", "val" or "test" per row)}, rows in the dataset's order.
    """
    from ..data.emoji import EmojiDataset, load_emoji_arrays

    everything = EmojiDataset("all", image_size=32, templates=False)
    images = torch.from_numpy(everything.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (1870, 3, 64, 64)
    images = F.interpolate(images, size=(32, 32), mode="area")
    splits = load_emoji_arrays()["splits"][everything.indices].tolist()
    return {"images": images, "features": pixel_features(images, 32), "names": list(everything.clean_names),
            "splits": [str(s) for s in splits]}


def nearest_emoji(pictures: torch.Tensor, *, among: Sequence[int] | None = None, k: int = 1,
                  gallery: dict[str, Any] | None = None) -> torch.Tensor:
    """The `k` emoji nearest to each picture (N, 3, H, W) in [-1, 1], as rows of the 1,870-emoji gallery.

    The identity measure's own rule: pixels at 32×32 (area average), Euclidean distance.
    `among` restricts the candidates to those gallery rows (a family, such as the 12 keycaps);
    the result still names gallery rows, nearest first: a (N, k) long tensor. `gallery` is
    `emoji_gallery()` (pass it to avoid re-reading the dataset in a loop).
    """
    if not torch.is_tensor(pictures) or pictures.dim() != 4 or pictures.shape[1] != 3:
        raise ValueError(f"pictures must be a (N, 3, H, W) tensor; got {getattr(pictures, 'shape', type(pictures))}")
    gallery = emoji_gallery() if gallery is None else gallery
    features = gallery["features"]
    rows = torch.arange(len(features)) if among is None else torch.as_tensor(list(among), dtype=torch.long)
    if rows.numel() == 0 or int(rows.min()) < 0 or int(rows.max()) >= len(features):
        raise ValueError(f"among must name rows of the {len(features)}-emoji gallery (0 to {len(features) - 1})")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= rows.numel():
        raise ValueError(f"k must be a whole number from 1 to {rows.numel()} (the candidates), got {k!r}")
    distances = torch.cdist(pixel_features(pictures.float().cpu(), 32), features[rows])  # (N, R)
    return rows[distances.topk(k, dim=1, largest=False).indices]  # (N, k), nearest first


def _settings(overrides: dict[str, Any] | None) -> dict[str, Any]:
    settings = {k: GENERATE_DEFAULTS[k] for k in _GENERATE_KEYS}
    unknown = sorted(set(overrides or {}) - set(settings))
    if unknown:
        raise ValueError(f"unknown generation settings {unknown}; choose from {sorted(settings)}")
    return {**settings, **(overrides or {})}


@torch.no_grad()
def draw_emoji(pipe: Any, names: Sequence[str], path: str, *, real: torch.Tensor | None = None, seed: int = 0,
               upsample: bool = False, settings: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pictures of `names` by one of `PATHS`; returns (images, low_res) on the CPU in [-1, 1].

    Long names are cut at the CLIP's context length, as in training (``UnCLIP.generate`` refuses
    them instead). ``reconstruction`` needs `real`, the asked-for emoji (N, 3, 64, 64). `upsample`
    runs the upsampler too (else images is low_res). Seeded: same arguments, same pictures.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    s = _settings(settings)
    generator = torch.Generator().manual_seed(seed)
    clip, tokens = pipe.clip, None
    if path == "reconstruction":
        if real is None or real.shape[0] != len(names):
            raise ValueError("the reconstruction path needs `real`, one image per name")
        emb = torch.cat([clip.encode_image(real[i:i + 256].to(pipe.device)).float()
                         for i in range(0, len(names), 256)])
    else:
        tokens = clip.tokenize(list(names))  # (N, L), cut at the context length
        emb = clip.encode_text(tokens).float()  # (N, D)
        if path == "full":
            emb = pipe.prior.sample_best_of(emb, tokens, n=1, steps=s["prior_steps"], sampler=s["prior_sampler"],
                                            guidance_scale=s["prior_guidance"], generator=generator).float()
    emb = F.normalize(emb, dim=-1)
    dec_tokens = tokens if getattr(pipe.decoder.config, "use_text", False) else None
    images, low = pipe.decode(emb, tokens=dec_tokens, generator=generator, decoder_steps=s["decoder_steps"],
                              decoder_guidance=s["decoder_guidance"], upsampler_steps=s["upsampler_steps"],
                              upsample=upsample and pipe.upsampler is not None, decoder_sampler=s["decoder_sampler"],
                              decoder_sampler_options=s["decoder_sampler_options"],
                              upsampler_sampler=s["upsampler_sampler"],
                              upsampler_sampler_options=s["upsampler_sampler_options"])
    return images.float().cpu(), low.float().cpu()


def _identity(pictures: torch.Tensor, gallery: torch.Tensor, targets: Sequence[int]) -> dict[str, Any]:
    r = identity_retrieval(pixel_features(pictures, 32), gallery, targets, ks=(1, 5))
    ranks = torch.tensor(r["rank"], dtype=torch.float)
    return {"top1": r["top1"], "top5": r["top5"], "chance_top1": r["chance_top1"], "chance_top5": r["chance_top5"],
            "median_rank": float(ranks.median()) if len(ranks) else None, "n": r["n"], "gallery": r["gallery"]}


def _at_32(images: torch.Tensor) -> torch.Tensor:
    """Pictures as the decoder draws them: 32×32 (area average), enlarged back to 64×64 for the CLIP."""
    small = images if images.shape[-1] == 32 else F.interpolate(images.float(), size=(32, 32), mode="area")
    return F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False).clamp(-1, 1)


def _rows(x: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """`m` rows of `x` (all of them when it has m), chosen with the seed."""
    if x.shape[0] <= m:
        return x
    return x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:m]]


def _distances(features: torch.Tensor, reference: torch.Tensor, seed: int) -> dict[str, Any]:
    kid, kid_std = kernel_distance(features, reference, subsets=100, seed=seed)
    return {"fid": frechet_distance(features, reference), "kid": kid, "kid_std": kid_std, "n": int(features.shape[0]),
            "n_reference": int(reference.shape[0])}


@torch.no_grad()
def emoji_report(pipe: Any, *, mode: str | None = None, n_train: int | None = None, n_test: int | None = None,
                 seed: int = 0, generate_kwargs: dict[str, Any] | None = None,
                 return_images: bool = False) -> dict[str, Any]:
    """The ``emoji`` section of ``dalle-mini eval emoji`` (module docstring) for a loaded `UnCLIP`.

    Sizes default to ``EMOJI_EVAL_SIZES[mode]`` (mode: the run mode); `generate_kwargs` override
    `GENERATE_DEFAULTS`. `return_images` adds ``"images"``: {split: {path: pictures}} and the real
    emoji (not JSON: for a notebook's grid).
    """
    from .. import validate as V
    from ..data.emoji import EmojiDataset
    from ..device import run_mode

    mode = mode or run_mode()
    if mode not in EMOJI_EVAL_SIZES:
        raise ValueError(f"mode must be one of {tuple(EMOJI_EVAL_SIZES)}, got {mode!r}")
    sizes = EMOJI_EVAL_SIZES[mode]
    n_train = sizes["n_train"] if n_train is None else V.integer("n_train", n_train, maximum=1693)
    n_test = sizes["n_test"] if n_test is None else V.integer("n_test", n_test, maximum=82)
    seed = V.seed("seed", seed)
    settings = _settings({**sizes["steps"], **(generate_kwargs or {})})
    t0 = time.perf_counter()

    everything = EmojiDataset("all", image_size=32, templates=False)
    gallery = pixel_features(torch.from_numpy(everything.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0, 32)
    splits = {"train": emoji_names("train", n_train, seed=seed), "test": emoji_names("test", n_test, seed=seed)}
    upsample = pipe.upsampler is not None
    pictures: dict[str, dict[str, torch.Tensor]] = {}
    identity: dict[str, dict[str, Any]] = {}
    for k, (split, chosen) in enumerate(splits.items()):
        identity[split], pictures[split] = {}, {}
        for j, path in enumerate(PATHS):
            images, low = draw_emoji(pipe, chosen["names"], path, real=chosen["images"], seed=seed * 8 + 2 * k + j,
                                     upsample=upsample and path == "full", settings=settings)
            pictures[split][path] = low
            identity[split][path] = _identity(low, gallery, chosen["gallery"])
            if upsample and path == "full":
                pictures[split]["full_upsampled"] = images
                identity[split]["full_upsampled"] = _identity(images, gallery, chosen["gallery"])

    # FID / KID on the pipeline's CLIP image features, every set m rows against the real test emoji
    clip = pipe.clip
    real_test = EmojiDataset("test", image_size=64, templates=False)
    reference = torch.stack([real_test.image(i) for i in range(len(real_test))])  # (82, 3, 64, 64)
    m = min(FID_ROWS, n_train, n_test, len(reference))
    real_train = torch.stack([EmojiDataset("train", image_size=64, templates=False).image(i) for i in
                              torch.randperm(1693, generator=torch.Generator().manual_seed(seed + 1))[:m].tolist()])

    def feats(x: torch.Tensor, at_32: bool) -> torch.Tensor:
        return clip_image_features(clip, _at_32(x) if at_32 else x)

    fid: dict[str, Any] = {"rows": m, "features": f"the pipeline's CLIP image embeddings ({clip.embed_dim})",
                           "reference": f"the {len(reference)} real test emoji", "decoder_32": {}, "upsampler_64": {}}
    ref32, ref64 = feats(reference, True), feats(reference, False)
    fid["decoder_32"]["real_train_vs_real_test"] = _distances(feats(real_train, True), ref32, seed)
    fid["upsampler_64"]["real_train_vs_real_test"] = _distances(feats(real_train, False), ref64, seed)
    for split in splits:
        for path in PATHS:
            rows = _rows(pictures[split][path], m, seed)
            fid["decoder_32"][f"{split}_{path}"] = _distances(feats(rows, True), ref32, seed)
        if "full_upsampled" in pictures[split]:
            rows = _rows(pictures[split]["full_upsampled"], m, seed)
            fid["upsampler_64"][f"{split}_full"] = _distances(feats(rows, False), ref64, seed)

    report: dict[str, Any] = {
        "n_train": len(splits["train"]["names"]), "n_test": len(splits["test"]["names"]), "gallery": len(gallery),
        "seed": seed, "mode": mode, "settings": settings, "device": str(pipe.device),
        "identity_features": "pixels at 32×32, Euclidean distance, among all 1,870 emoji",
        "identity": identity, "fid_kid": fid, "seconds": round(time.perf_counter() - t0, 1)}
    if return_images:
        report["images"] = {"pictures": pictures, "real": {s: c["images"] for s, c in splits.items()},
                            "names": {s: c["names"] for s, c in splits.items()}}
    return report
