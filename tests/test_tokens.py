"""Tokenisation with open_clip's BPE: shapes, padding, parity, round trip, length checks, offline."""
from __future__ import annotations

import socket

import open_clip
import pytest
import torch

from dalle_mini_core.data import tokens
from dalle_mini_core.data.tokens import EOT_TOKEN, SOT_TOKEN, check_length, collate, decode, tokenize, vocab_size

LONG = "a very " * 40 + "long caption about a red circle left of a blue square"


def test_shape_dtype_and_padding():
    ids = tokenize(["a red circle", "grinning face with big eyes"])
    assert ids.shape == (2, 32) and ids.dtype == torch.long
    assert (ids[:, 0] == SOT_TOKEN).all()
    for row in ids:
        end = int((row == EOT_TOKEN).nonzero()[0])
        assert (row[end + 1:] == 0).all() and (row[1:end] != 0).all()
    assert tokenize("one caption", context_length=16).shape == (1, 16)


def test_matches_open_clip_tokenize_including_truncation():
    texts = ["an emoji of a smiling face", "Flag of Mayotte!", "", LONG]
    for length in (8, 32, 77):
        assert torch.equal(tokenize(texts, length), open_clip.tokenize(texts, context_length=length))


def test_truncation_ends_with_eot():
    ids = tokenize(LONG, context_length=32)[0]
    assert ids[-1] == EOT_TOKEN and (ids != 0).all()
    assert int(ids.argmax()) == 31  # CLIP pools at the argmax id: the end token


def test_decode_round_trip():
    texts = ["grinning face with big eyes", "keycap #", "Flag of Côte d’Ivoire"]
    back = decode(tokenize(texts))
    assert back[:2] == ["grinning face with big eyes", "keycap #"]  # plain words: exact (lower case)
    assert back[2].replace(" ", "") == "flagofcôted'ivoire"  # punctuation comes back spaced, quotes fixed
    assert torch.equal(tokenize(back), tokenize(texts))  # and re-tokenises to the same ids
    assert decode(tokenize("a red circle")[0]) == "a red circle"
    assert decode([SOT_TOKEN, *tokenize("two cats")[0, 1:3].tolist(), EOT_TOKEN, 0, 0]) == "two cats"


def test_vocab_size_bounds_every_id():
    assert vocab_size() == 49408 == EOT_TOKEN + 1
    assert int(tokenize(["zebra ☃ 123 ÿ", LONG]).max()) < vocab_size()


def test_check_length_names_the_caption_that_does_not_fit():
    check_length(["a red circle", "a blue square"], context_length=32)  # fits: no error
    with pytest.raises(ValueError, match=r"long caption about.*context_length is 32"):
        check_length(["short one", LONG], context_length=32)
    n = tokens.token_length("a red circle")
    assert n == 5  # <sot> a red circle <eot>
    check_length("a red circle", context_length=n)
    with pytest.raises(ValueError):
        check_length("a red circle", context_length=n - 1)


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="captions"):
        tokenize([1, 2])
    with pytest.raises(ValueError, match="context_length"):
        tokenize("x", context_length=1)
    with pytest.raises(ValueError):
        decode(torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        decode(torch.zeros(3))


def test_works_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tokens._tokenizer.cache_clear()  # rebuild the tokenizer with the network off
    assert tokenize("offline caption").shape == (1, 32)
    assert decode(tokenize("offline caption"))[0] == "offline caption"


def test_collate_makes_a_batch_dict():
    items = [(torch.zeros(3, 8, 8), "a red circle"), (torch.ones(3, 8, 8), "a blue square")]
    batch = collate(items)
    assert batch["image"].shape == (2, 3, 8, 8)
    assert batch["caption"] == ["a red circle", "a blue square"]
    assert torch.equal(batch["tokens"], tokenize(["a red circle", "a blue square"]))
