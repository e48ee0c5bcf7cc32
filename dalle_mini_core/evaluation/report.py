"""``dalle-mini eval shapes|emoji --json FILE``: one report of what each trained stage knows.

Sections (each carries the sample count and seed it used):

* ``clip``  — zero-shot retrieval on the held-out test split: ``text_to_image_top1``,
  ``text_to_image_top5`` among ``gallery_size`` candidates (mean over galleries), and on shapes
  ``zero_shot_attribute_accuracy`` (colour, shape, size, position of one-object test scenes);
* ``prior`` — ``retrieval_top1`` (strict: only the caption's own scene counts), on shapes
  ``retrieval_top1_relevant`` (any gallery scene the caption describes counts), and
  ``cosine_to_true`` of prior samples (at the pipeline's prior guidance) against the true image
  embeddings of held-out captions, keyed ``prior``, ``text_embedding`` and ``nearest_neighbour``
  (the two baselines of notebook 07), when prior weights exist; on shapes also ``oracle_sample``
  (fresh scenes of each caption through CLIP: a perfect prior's samples, what a faithful
  sampler scores) and ``retrieval_top1_by_group`` (the same scores per kind of caption,
  `evaluation.clip.shapes_caption_kind`);
* ``emoji`` (emoji, when the prior and decoder exist; `evaluation.emoji.emoji_report`) — identity
  of generated pictures among the 1,870 emoji in pixel space (top-1/top-5, chance), FID and KID on
  CLIP image features beside the real-vs-real floor, for the full path, the path without the prior
  and the decoder's reconstruction from true image embeddings; train names and the 82 unseen test
  names; ``n_emoji`` train names (default by run mode). Without those weights the section holds
  ``skipped``: the one-line reason and the command that trains them;
* ``caption_accuracy`` (shapes) — the whole text-to-image pipeline (CLIP → prior → decoder →
  upsampler) draws images for fixed one-object prompts (`captions.prompt_set`), and the
  attribute reader checks every attribute each prompt stated: ``seen`` and ``heldout``
  (colour–shape pairs never in the training split), ``per_attribute`` for both, with ``n``
  prompts per kind, ``n_per_prompt``, ``seed`` and the generation settings; when all four
  pipeline weights exist. Beside it ``clean_share``: the share of those same pictures whose
  background is as flat as the data's (`captions.clean_share`), per stage output — ``decoder``
  (its 32×32 pictures) and ``upsampler`` (the final ones) — overall and for seen and held-out.

The weights are ``<dataset>_{clip,prior,decoder,upsampler}`` in a folder (``--weights``, e.g. the
output of ``dalle-mini train``), or the shipped ones in ``data/weights``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..defaults import GENERATE_DEFAULTS
from ..device import get_device, run_mode

__all__ = ["evaluate", "load_stage"]

DATASETS = ("shapes", "emoji")


#: The model class of each stage, by its registered name (`checkpoints.registered_classes`).
STAGE_CLASSES = {"clip": "CLIPModel", "prior": "DiffusionPrior", "decoder": "Decoder", "upsampler": "Upsampler"}


def load_stage(dataset: str, stage: str, weights: str | Path | None = None) -> torch.nn.Module | None:
    """`<dataset>_<stage>` from `weights` (a folder) or the shipped data/weights; None if absent.

    The model class is the stage's own (`STAGE_CLASSES`), never one a file names: a folder is
    loaded with `checkpoints.load_from_folder` (its MANIFEST.json checked, or a warning without
    one), the shipped weights with `checkpoints.load_pretrained` (sha256-checked).
    """
    from ..checkpoints import load_from_folder, load_pretrained, resolve_class

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if stage not in STAGE_CLASSES:
        raise ValueError(f"stage must be one of {tuple(STAGE_CLASSES)}, got {stage!r}")
    build = resolve_class(STAGE_CLASSES[stage], "model", source="evaluation.report.STAGE_CLASSES")
    name = f"{dataset}_{stage}"
    if weights is None:
        try:
            model = load_pretrained(name, build, device=get_device())
        except FileNotFoundError:
            return None
    else:
        if not (Path(weights) / f"{name}.safetensors").is_file():
            return None
        model = load_from_folder(weights, name, build, device=get_device())
    return model.float().eval()


def _datasets(dataset: str, n_train: int, n_test: int):
    if dataset == "shapes":
        from ..data.shapes import ShapesDataset

        return (ShapesDataset("train", length=n_train, image_size=32, seed=0),
                ShapesDataset("test", length=n_test, image_size=32, seed=0))
    from ..data.emoji import EmojiDataset

    return EmojiDataset("train", image_size=64), EmojiDataset("test", image_size=64)


@torch.no_grad()
def evaluate(dataset: str, *, weights: str | Path | None = None, n: int | None = None, seed: int = 0,
             gallery_size: int | None = None, captions: bool = True, n_prompts: int | None = None,
             n_per_prompt: int = 1, generate_kwargs: dict[str, Any] | None = None,
             n_emoji: int | None = None) -> dict[str, Any]:
    """The report described in the module docstring, as a JSON-ready dict."""
    from .clip import evaluate_retrieval, zero_shot_attribute_accuracy
    from .prior import embed_dataset, evaluate_prior

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    from .. import validate as V

    smoke = run_mode() == "smoke"  # None means the run mode's default; 0 is refused, not "default"
    n = (16 if smoke else 200) if n is None else V.integer("n", n, maximum=2000)
    n_prompts = None if n_prompts is None else V.integer("n_prompts", n_prompts, maximum=54)
    n_per_prompt = V.integer("n_per_prompt", n_per_prompt, maximum=16)
    seed = V.seed("seed", seed)
    clip = load_stage(dataset, "clip", weights)
    if clip is None:
        raise FileNotFoundError(missing_weights_message(dataset, weights, [f"{dataset}_clip"]))
    n_test = max(1000, n) if dataset == "shapes" else None
    train_set, test_set = _datasets(dataset, n_train=max(2000, 4 * n) if not smoke else 64, n_test=n_test or 0)
    gallery = gallery_size or min(100, len(test_set))
    galleries = max(1, min(10, len(test_set) // gallery))
    report: dict[str, Any] = {"dataset": dataset, "weights": str(weights or "data/weights"), "run_mode": run_mode()}

    # 1. CLIP: retrieval over galleries of held-out items, and zero-shot attributes (shapes)
    r = evaluate_retrieval(clip, test_set, gallery_size=gallery, num_galleries=galleries, seed=seed)
    section: dict[str, Any] = {"text_to_image_top1": r["text_to_image_top1"], "text_to_image_top5": r["text_to_image_top5"],
                               "image_to_text_top1": r["image_to_text_top1"], "gallery_size": gallery,
                               "num_galleries": galleries, "n": gallery * galleries, "seed": seed}
    if dataset == "shapes":
        from ..data.shapes import ShapesDataset

        one = ShapesDataset("test", length=n, image_size=32, num_objects=1, seed=seed)
        acc = zero_shot_attribute_accuracy(clip, one, n=n)
        section["zero_shot_attribute_accuracy"] = dict(acc["accuracy"], all=acc["all_correct"], n=n, seed=seed)
    report["clip"] = section

    # 2. Prior against its baselines, when a prior exists
    prior = load_stage(dataset, "prior", weights)
    if prior is not None:
        train_emb = embed_dataset(clip, train_set, len(train_set))
        test_emb = embed_dataset(clip, test_set, len(test_set))
        n_prior = min(n, len(set(test_emb["caption"])))
        relevance = oracle = groups = None
        if dataset == "shapes":
            from .clip import shapes_caption_kind, shapes_oracle_embeddings, shapes_relevance

            def captions_of(rows: torch.Tensor) -> list[str]:
                return [test_emb["caption"][int(i)] for i in rows]

            def relevance(rows: torch.Tensor) -> torch.Tensor:
                return shapes_relevance(captions_of(rows), [test_set.scene(int(i)) for i in rows])

            def oracle(rows: torch.Tensor) -> torch.Tensor:  # a perfect prior: fresh scenes of each caption
                return shapes_oracle_embeddings(clip, captions_of(rows), seed=seed)

            def groups(rows: torch.Tensor) -> list[str]:
                return [shapes_caption_kind(c) for c in captions_of(rows)]

        guidance = GENERATE_DEFAULTS["prior_guidance"]  # the prior as the pipeline samples it
        ev = evaluate_prior(prior, train_emb, test_emb, n=n_prior, seed=seed, steps=8 if smoke else 64,
                            guidance_scale=guidance, relevance=relevance, oracle=oracle, groups=groups)
        report["prior"] = {"retrieval_top1": ev["retrieval_top1"], "cosine_to_true": ev["cosine_to_true"],
                           "cosine_to_unrelated": ev["cosine_to_unrelated"], "diversity": ev["diversity"],
                           "chance_top1": ev["chance_top1"],
                           "prior_mean": ev["prior_mean"], "n": ev["n"], "seed": seed, "steps": ev["steps"],
                           "guidance_scale": guidance}
        for key in ("retrieval_top1_relevant", "retrieval_top1_by_group"):
            if key in ev:
                report["prior"][key] = ev[key]

    # 3. Caption accuracy of the whole pipeline, when one exists (shapes: the reader grades it)
    if dataset == "shapes" and captions and all(_has(dataset, p, weights) for p in ("prior", "decoder", "upsampler")):
        report["caption_accuracy"] = caption_report(weights, n_prompts=(4 if smoke else 54) if n_prompts is None else n_prompts,
                                                    n_per_prompt=n_per_prompt, seed=seed,
                                                    generate_kwargs=generate_kwargs)

    # 4. Emoji: identity, FID/KID and the decoder's ceiling of the whole pipeline (evaluation/emoji.py)
    if dataset == "emoji" and captions:
        missing = [f"emoji_{p}" for p in ("prior", "decoder") if not _has(dataset, p, weights)]
        if missing:
            report["emoji"] = {"skipped": missing_weights_message(dataset, weights, missing)}
        else:
            from ..pipeline import UnCLIP
            from .emoji import emoji_report

            pipe = UnCLIP.from_pretrained("emoji", folder=weights,
                                          upsampler=_has(dataset, "upsampler", weights))
            report["emoji"] = emoji_report(pipe, n_train=n_emoji, n_test=None if n_emoji is None else min(82, n_emoji),
                                           seed=seed, generate_kwargs=generate_kwargs)
    return report


def missing_weights_message(dataset: str, weights: str | Path | None, missing: list[str]) -> str:
    """One line: which weights are missing where, and the command that makes them."""
    where = weights or "data/weights"
    if dataset == "emoji":
        how = ("the emoji pipeline is not shipped yet: train it with `dalle-mini train all --dataset emoji --mode gpu "
               "--out runs/emoji` (about 6 minutes on one GPU; scripts/gpu_emoji.sh does it and evaluates), or "
               "`--mode cpu` for a short CPU run, then give --weights runs/emoji")
    else:
        how = "train them first, e.g. `dalle-mini train clip --out runs/weights` for shapes"
    return f"no {', '.join(missing)} weights in {where}; {how}"


def _has(dataset: str, stage: str, weights: str | Path | None) -> bool:
    from ..paths import data_dir

    folder = data_dir() / "weights" if weights is None else Path(weights)
    return (folder / f"{dataset}_{stage}.safetensors").is_file()


@torch.no_grad()
def caption_report(weights: str | Path | None = None, *, n_prompts: int = 54, n_per_prompt: int = 1, seed: int = 0,
                   generate_kwargs: dict[str, Any] | None = None, pipeline: Any = None) -> dict[str, Any]:
    """The ``caption_accuracy`` section: `captions.evaluate_captions` on the shapes pipeline in `weights`.

    Generation settings are `GENERATE_DEFAULTS` updated by `generate_kwargs`; they are recorded
    in the section with the wall time and the seconds per image on this machine.
    """
    import time

    from .captions import evaluate_captions
    from ..pipeline import UnCLIP

    pipe = pipeline if pipeline is not None else UnCLIP.from_pretrained("shapes", folder=weights)
    settings = {**GENERATE_DEFAULTS, **(generate_kwargs or {})}
    recorder = _StageRecorder(pipe)
    t0 = time.perf_counter()
    out = evaluate_captions(recorder, n=n_prompts, n_per_prompt=n_per_prompt, seed=seed, **settings)
    seconds = time.perf_counter() - t0
    images = 2 * n_prompts * n_per_prompt
    out.update(settings=settings, seconds=round(seconds, 1), seconds_per_image=round(seconds / images, 4),
               device=str(pipe.device), clean_share=recorder.clean_report(n_prompts * n_per_prompt))
    return out


class _StageRecorder:
    """Passes `generate` calls to a pipeline and keeps each stage's pictures for `clean_report`."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.low, self.high = pipe, [], []

    def generate(self, prompts: Any, **kwargs: Any) -> torch.Tensor:
        g = self.pipe.generate(prompts, return_intermediates=True, **kwargs)
        self.low.append(g.low_res.float().cpu())
        self.high.append(g.images.float().cpu())
        return g.images

    def clean_report(self, n_seen: int) -> dict[str, Any]:
        """Clean share of every picture made, per stage output; the first `n_seen` are the seen prompts'."""
        from .captions import CLEAN_THRESHOLD, background_roughness

        report: dict[str, Any] = {"threshold": CLEAN_THRESHOLD}
        stages = {"decoder": torch.cat(self.low)}
        if self.pipe.upsampler is not None and not torch.equal(torch.cat(self.high), stages["decoder"]):
            stages["upsampler"] = torch.cat(self.high)
        for stage, images in stages.items():
            clean = background_roughness(images) <= CLEAN_THRESHOLD  # (N,)
            report[stage] = {"all": float(clean.float().mean()), "seen": float(clean[:n_seen].float().mean()),
                             "heldout": float(clean[n_seen:].float().mean()), "n": int(clean.numel()),
                             "image_size": int(images.shape[-1])}
        return report
