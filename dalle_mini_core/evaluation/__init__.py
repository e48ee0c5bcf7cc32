"""Measuring every stage, and the whole pipeline: one place for the course's evaluation.

==================  ===========================================================================
module              measures
==================  ===========================================================================
`clip`              retrieval among N pairs, zero-shot classification and attributes, the
                    relevance of shapes captions, the embedding map (notebook 06)
`prior`             the prior against its two baselines: retrieval top-1, cosine to the true
                    image embedding, diversity; `embed_dataset`, `evaluate_prior` (notebook 07)
`decoder`           decoded pictures read back: attributes (shapes), retrieval (emoji) (notebook 08)
`captions`          caption accuracy of generated shapes, clean share, prompt sets, CLIP score,
                    R-precision (notebooks 05, 07, 09, 10)
`images`            FID and KID on given features, identity retrieval
`emoji`             the emoji pipeline: identity among the 1,870 emoji, FID/KID on CLIP features,
                    full path vs no prior vs the decoder's reconstruction (``dalle-mini eval emoji``)
`report`            ``dalle-mini eval``: one JSON report of what each trained stage knows
==================  ===========================================================================

These modules may import the stage modules and the datasets; the stage modules (clip.py,
prior.py, decoder.py, upsampler.py) never import this package. The names students use are
re-exported here: ``from dalle_mini_core.evaluation import evaluate_prior``.
"""
from __future__ import annotations

from .captions import (
    CLEAN_THRESHOLD,
    KINDS,
    attribute_scores,
    background_roughness,
    calibrate_clean_threshold,
    caption_accuracy,
    clean_share,
    clip_score,
    evaluate_captions,
    is_clean,
    prompt_set,
    r_precision,
)
from .clip import (
    confusion_matrix,
    embedding_map,
    encode_dataset,
    evaluate_retrieval,
    retrieval_metrics,
    shapes_caption_kind,
    shapes_oracle_embeddings,
    shapes_prompts,
    shapes_relevance,
    zero_shot_attribute_accuracy,
    zero_shot_classify,
)
from .decoder import decoded_attribute_accuracy, decoded_retrieval
from .emoji import draw_emoji, emoji_names, emoji_report
from .images import clip_image_features, frechet_distance, identity_retrieval, kernel_distance, pixel_features
from .prior import (
    cosine_to_true,
    embed_dataset,
    evaluate_prior,
    mean_pairwise_cosine_distance,
    nearest_neighbour_baseline,
    retrieval_hits,
    retrieval_top1,
    text_embedding_baseline,
)
from .report import evaluate, load_stage

__all__ = [
    # clip
    "retrieval_metrics", "encode_dataset", "shapes_relevance", "shapes_caption_kind", "shapes_oracle_embeddings",
    "evaluate_retrieval", "zero_shot_classify", "confusion_matrix", "embedding_map", "shapes_prompts",
    "zero_shot_attribute_accuracy",
    # prior
    "text_embedding_baseline", "nearest_neighbour_baseline", "cosine_to_true", "retrieval_hits", "retrieval_top1",
    "mean_pairwise_cosine_distance", "embed_dataset", "evaluate_prior",
    # decoder
    "decoded_attribute_accuracy", "decoded_retrieval",
    # captions
    "CLEAN_THRESHOLD", "KINDS", "background_roughness", "is_clean", "clean_share", "calibrate_clean_threshold",
    "prompt_set", "attribute_scores", "caption_accuracy", "evaluate_captions", "clip_score", "r_precision",
    # images
    "frechet_distance", "kernel_distance", "identity_retrieval", "clip_image_features", "pixel_features",
    # emoji
    "emoji_names", "draw_emoji", "emoji_report",
    # report
    "evaluate", "load_stage",
]
