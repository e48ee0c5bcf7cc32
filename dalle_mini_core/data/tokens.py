"""Captions to token ids with CLIP's byte-pair-encoding tokenizer (Radford et al. 2021, Sec. 2.4).

We use open_clip's own ``SimpleTokenizer``: its 49,152-merge BPE vocabulary ships inside the
``open_clip`` package, so tokenising works offline, and the ids match any open_clip text
encoder a user might load later. Text is lower-cased and whitespace-cleaned first.

A tokenised caption is ``[<start_of_text>, t_1, ..., t_n, <end_of_text>, 0, 0, ...]`` padded
with zeros to ``context_length`` (the course uses 32; CLIP used 77). The end-of-text id
(49407) is the largest id, which is how CLIP's text encoder finds the position it pools
(``argmax`` over ids). Too-long captions are TRUNCATED by ``tokenize`` (the last kept slot
becomes ``<end_of_text>``), as open_clip does; call ``check_length`` first where truncation
would be a silent bug (a user's prompt).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

__all__ = ["tokenize", "decode", "vocab_size", "token_length", "check_length", "collate",
           "SOT_TOKEN", "EOT_TOKEN", "DEFAULT_CONTEXT_LENGTH"]

DEFAULT_CONTEXT_LENGTH = 32
SOT_TOKEN = 49406  # <start_of_text>
EOT_TOKEN = 49407  # <end_of_text>; also the largest id


@functools.lru_cache(maxsize=1)
def _tokenizer() -> "SimpleTokenizer":
    """open_clip's BPE tokenizer, built once (reads the gzipped merges shipped in the package)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    if (tok.sot_token_id, tok.eot_token_id) != (SOT_TOKEN, EOT_TOKEN):
        raise RuntimeError(
            f"open_clip's tokenizer has special ids {tok.sot_token_id}, {tok.eot_token_id}; "
            f"this module expects {SOT_TOKEN}, {EOT_TOKEN}"
        )
    return tok


def _as_list(captions: str | Sequence[str], arg: str = "captions") -> list[str]:
    if isinstance(captions, str):
        return [captions]
    if not isinstance(captions, Sequence) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"{arg} must be a str or a sequence of str, got {type(captions).__name__}")
    return list(captions)


def _check_context_length(context_length: int) -> None:
    if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 2:
        raise ValueError(f"context_length must be an int >= 2 (start and end tokens), got {context_length!r}")


def vocab_size() -> int:
    """Number of token ids (49,408: 256 bytes ×2, 48,894 merges, start and end tokens)."""
    return _tokenizer().vocab_size


def token_length(caption: str) -> int:
    """Tokens a caption needs, including the start and end tokens."""
    return len(_tokenizer().encode(caption)) + 2


def tokenize(captions: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids, LongTensor (B, context_length), zero-padded; over-long captions are truncated.

    A single string gives B = 1. Truncation keeps the first ``context_length - 1`` tokens
    (start token included) and ends with ``<end_of_text>``.
    """
    texts = _as_list(captions)
    _check_context_length(context_length)
    tok = _tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)  # (B, L); 0 is padding
    for i, text in enumerate(texts):
        ids = [SOT_TOKEN] + tok.encode(text) + [EOT_TOKEN]
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [EOT_TOKEN]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def check_length(captions: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
    """Raise ValueError naming the first caption that would be truncated at ``context_length``."""
    _check_context_length(context_length)
    for text in _as_list(captions):
        n = token_length(text)
        if n > context_length:
            raise ValueError(
                f"caption {text!r} needs {n} tokens (with start/end) but context_length is "
                f"{context_length}; shorten it or raise context_length"
            )


def decode(tokens: torch.Tensor | Sequence[int]) -> str | list[str]:
    """Text back from ids: (L,) or a list of ints → str, (B, L) → list of B strings.

    Reads from after ``<start_of_text>`` up to ``<end_of_text>`` (padding is ignored). The
    text comes back as the tokenizer saw it: lower-cased, whitespace normalised, typographic
    quotes fixed by ftfy, and punctuation split off by spaces ("d'ivoire" -> "d ' ivoire");
    tokenising the decoded text gives the same ids again.
    """
    t = torch.as_tensor(tokens)
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"tokens must hold integer ids, got dtype {t.dtype}")
    if t.dim() == 2:
        return [_decode_row(row.tolist()) for row in t]
    if t.dim() != 1:
        raise ValueError(f"tokens must be (L,) or (B, L), got shape {tuple(t.shape)}")
    return _decode_row(t.tolist())


def _decode_row(ids: list[int]) -> str:
    if ids and ids[0] == SOT_TOKEN:
        ids = ids[1:]
    if EOT_TOKEN in ids:
        ids = ids[: ids.index(EOT_TOKEN)]
    bad = [i for i in ids if not 0 <= i < SOT_TOKEN]
    if bad:
        raise ValueError(f"token ids out of range or misplaced special tokens: {bad[:5]}")
    return _tokenizer().decode(ids).strip()


def collate(items: Sequence[tuple[torch.Tensor, str]], context_length: int = DEFAULT_CONTEXT_LENGTH) -> dict:
    """A batch dict from dataset items: {"image": (B,3,H,W), "caption": [B], "tokens": (B,L)}.

    Use as ``DataLoader(ds, collate_fn=collate)`` (or ``functools.partial(collate, context_length=...)``).
    """
    if len(items) == 0:
        raise ValueError("collate got an empty list of items")
    images = torch.stack([img for img, _ in items])  # (B, 3, H, W)
    captions = [cap for _, cap in items]
    return {"image": images, "caption": captions, "tokens": tokenize(captions, context_length)}
