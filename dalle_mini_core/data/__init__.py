"""Datasets that yield ``(image, caption)`` and the tokenizer that turns captions into ids."""
from .emoji import DataIntegrityError, EmojiDataset, load_emoji_arrays
from .folder import CaptionedImages, DataFileError, ImageCaptionFolder, TarShards
from .tokens import check_length, collate, decode, tokenize, vocab_size
