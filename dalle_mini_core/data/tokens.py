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

**Compact vocabularies.** A model whose captions use a few thousand of the 49,408 ids need not
carry a row for every id: `compact_vocab` lists the ids some captions use (plus padding 0 and
the start and end tokens), `compact_lookup` maps every BPE id to a row of that smaller table,
and `to_compact` applies it. An id outside the vocabulary maps to one shared unknown row:
a word the captions never contain would have had an untrained row in a full table anyway, so
nothing learnt is lost. The rows keep the order of the ids they stand for, with the unknown row
just below the start token, so the end token is still the largest id of a caption (the text
encoder finds the position it pools by ``argmax``) and padding is still 0.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

__all__ = ["tokenize", "decode", "vocab_size", "token_length", "check_length", "collate",
           "compact_vocab", "check_vocab", "compact_lookup", "to_compact", "unknown_id",
           "SOT_TOKEN", "EOT_TOKEN", "DEFAULT_CONTEXT_LENGTH", "VOCAB_SIZE"]

DEFAULT_CONTEXT_LENGTH = 32
SOT_TOKEN = 49406  # <start_of_text>
EOT_TOKEN = 49407  # <end_of_text>; also the largest id
VOCAB_SIZE = EOT_TOKEN + 1  # 49,408 ids


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


# --------------------------------------------------------------------------------------------
# Compact vocabularies: only the ids a dataset's captions use get a row of their own
# --------------------------------------------------------------------------------------------


def compact_vocab(captions: str | Sequence[str]) -> tuple[int, ...]:
    """The sorted BPE ids that `captions` use, plus padding (0) and the start and end tokens.

    Pass every caption the model may be trained or asked about (for a dataset: every name in
    every template, test names included, since a name's text is not its picture).
    """
    tok = _tokenizer()
    ids = {0, SOT_TOKEN, EOT_TOKEN}
    for text in _as_list(captions):
        ids.update(tok.encode(text))
    return tuple(sorted(ids))


def check_vocab(vocab: Sequence[int]) -> tuple[int, ...]:
    """`vocab` as a tuple, or a one-line ValueError: strictly increasing ints in [0, 49408)
    that include padding 0 and the start and end tokens (as `compact_vocab` makes them)."""
    if isinstance(vocab, (str, bytes)) or not isinstance(vocab, Sequence):
        raise TypeError(f"vocab must be a sequence of token ids, got {type(vocab).__name__}")
    ids = tuple(vocab)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError("vocab must hold int token ids")
    if any(b <= a for a, b in zip(ids, ids[1:])):
        raise ValueError("vocab must be strictly increasing (sorted, no repeats), as compact_vocab makes it")
    if not ids or ids[0] != 0 or ids[-2:] != (SOT_TOKEN, EOT_TOKEN):
        raise ValueError(f"vocab must contain padding 0 and the start and end tokens {SOT_TOKEN}, {EOT_TOKEN} "
                         "(build it with compact_vocab)")
    return ids


def unknown_id(vocab: Sequence[int]) -> int:
    """The row every id outside `vocab` maps to: just below the start token's row."""
    return len(vocab) - 2


def compact_lookup(vocab: Sequence[int]) -> torch.Tensor:
    """LongTensor (49408,): BPE id → row of the compact table of ``len(vocab) + 1`` rows.

    The ids below the start token take rows 0, 1, ... in order (padding 0 stays 0), every id
    outside `vocab` takes the unknown row `unknown_id`, then the start and end tokens take the
    last two rows, so the end token keeps the largest id.
    """
    ids = check_vocab(vocab)
    lookup = torch.full((VOCAB_SIZE,), unknown_id(ids), dtype=torch.long)
    regular = torch.tensor(ids[:-2], dtype=torch.long)
    lookup[regular] = torch.arange(len(regular))
    lookup[SOT_TOKEN], lookup[EOT_TOKEN] = len(ids) - 1, len(ids)
    return lookup


def to_compact(tokens: torch.Tensor, lookup: torch.Tensor) -> torch.Tensor:
    """BPE ids (any shape, long) → compact ids through a `compact_lookup` table (same device)."""
    if tokens.dtype != torch.long:
        raise TypeError(f"tokens must be a long tensor of BPE ids, got {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= lookup.shape[0]):
        raise ValueError(f"token ids must lie in [0, {lookup.shape[0]}), got "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    return lookup.to(tokens.device)[tokens]
