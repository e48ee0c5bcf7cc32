"""Datasets that yield ``(image, caption)`` and the tokenizer that turns captions into ids."""
from .emoji import DataIntegrityError, EmojiDataset, load_emoji_arrays
from .folder import CaptionedImages, DataFileError, ImageCaptionFolder, TarShards
from .tokens import check_length, collate, decode, tokenize, vocab_size
from .attributes import (
    ATTRIBUTES,
    COLOURS,
    ONE_OBJECT_TEMPLATES,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    TWO_OBJECT_TEMPLATES,
    CaptionAttributes,
    Scene,
    ShapeObject,
    caption,
    describes,
    parse_caption,
    relations_between,
    scene_attributes,
    templates_for,
)
from .shapes import (
    HELDOUT_COMBINATIONS,
    ShapesDataset,
    is_heldout,
    make_batch,
    render,
    render_corrupted,
    sample_scene,
    scene_seed,
)
from .reader import Detection, detect_objects, read_attributes, reader_accuracy, score_caption, score_captions
