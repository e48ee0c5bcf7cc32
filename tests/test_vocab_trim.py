"""Compact CLIP vocabularies (a token row only for the ids a dataset uses) and the emoji weights budget."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dalle_mini_core.clip import CLIPModel, load_clip, save_clip, trim_vocab
from dalle_mini_core.data.tokens import (
    EOT_TOKEN,
    SOT_TOKEN,
    VOCAB_SIZE,
    check_vocab,
    compact_lookup,
    compact_vocab,
    to_compact,
    tokenize,
    unknown_id,
)
from dalle_mini_core.recipes import STAGE_RECIPES
from dalle_mini_core.recipes.clip import build_config, dataset_vocab

from tiny_models import CAPTIONS, TINY_CLIP

EMOJI_BUDGET_BYTES = 10_000_000  # the budget for the four shipped emoji parts (float16)


# --- the map from BPE ids to rows ----------------------------------------------------------------


def test_lookup_keeps_padding_order_and_the_end_token_largest():
    vocab = compact_vocab(CAPTIONS)
    lookup = compact_lookup(vocab)
    assert lookup.shape == (VOCAB_SIZE,)
    rows = lookup[torch.tensor(vocab)]
    assert rows.tolist() == sorted(rows.tolist()) and len(set(rows.tolist())) == len(vocab)  # order kept, no clash
    assert lookup[0] == 0  # padding stays 0
    assert lookup[EOT_TOKEN] == len(vocab) == int(lookup.max())  # the pooled position is still the argmax
    assert lookup[SOT_TOKEN] == len(vocab) - 1 and unknown_id(vocab) == len(vocab) - 2
    compact = to_compact(tokenize(CAPTIONS, 16), lookup)
    assert compact.max() < len(vocab) + 1 and not (compact == unknown_id(vocab)).any()
    assert torch.equal(compact.argmax(-1), tokenize(CAPTIONS, 16).argmax(-1))  # end token at the same place


def test_unknown_words_map_to_the_unknown_row():
    vocab = compact_vocab(CAPTIONS)
    lookup = compact_lookup(vocab)
    ids = tokenize("a red xylophone", 16)[0]  # "xylophone" is none of CAPTIONS' ids
    outside = ~torch.isin(ids, torch.tensor(vocab))
    assert outside.sum() == len(tokenize("xylophone", 16)[0].nonzero()) - 2  # the word's ids, nothing else
    rows = to_compact(ids, lookup)
    assert (rows[outside] == unknown_id(vocab)).all()
    assert (rows[~outside] != unknown_id(vocab)).all()


def test_bad_vocabularies_and_ids_are_refused_in_one_line():
    for bad, why in (((5, 3, SOT_TOKEN, EOT_TOKEN), "increasing"), ((3, 5, SOT_TOKEN, EOT_TOKEN), "padding 0"),
                     ((0, 5), "start and end"), ((0, 1.5, SOT_TOKEN, EOT_TOKEN), "int")):
        with pytest.raises(ValueError, match=why):
            check_vocab(bad)
    with pytest.raises(TypeError):
        check_vocab("0 1 2")
    with pytest.raises(ValueError, match=r"\[0, 49408\)"):
        to_compact(torch.tensor([[VOCAB_SIZE]]), compact_lookup(compact_vocab(CAPTIONS)))
    with pytest.raises(ValueError, match="vocab_size"):
        CLIPModel(TINY_CLIP.__class__(**{**TINY_CLIP.__dict__, "vocab": compact_vocab(CAPTIONS), "vocab_size": 1000}))


# --- a compact CLIP is the full one for every caption in its vocabulary --------------------------


@pytest.fixture(scope="module")
def full_and_trimmed():
    torch.manual_seed(0)
    full = CLIPModel(TINY_CLIP).eval()
    with torch.no_grad():  # rows differ a lot, so a wrong row would show
        full.model.token_embedding.weight.normal_(0, 1.0)
    return full, trim_vocab(full, compact_vocab(CAPTIONS))


def test_trimmed_clip_gives_exactly_the_full_clips_text_embeddings(full_and_trimmed):
    full, trimmed = full_and_trimmed
    assert trimmed.model.token_embedding.weight.shape == (len(trimmed.config.vocab) + 1, TINY_CLIP.text_width)
    assert full.model.token_embedding.weight.shape[0] == VOCAB_SIZE
    texts = CAPTIONS + ["a blue circle", "a small red triangle"]  # new sentences from in-vocabulary words
    with torch.no_grad():
        assert torch.equal(trimmed.encode_text(texts), full.encode_text(texts))
        assert torch.equal(trimmed.encode_text(tokenize(texts, 16)), full.encode_text(tokenize(texts, 16)))
        # everything else is the same model too
        images = torch.rand(2, 3, 16, 16) * 2 - 1
        assert torch.equal(trimmed.encode_image(images), full.encode_image(images))
    # tokenize still hands out BPE ids (the ids the banks, prior and decoder share)
    assert torch.equal(trimmed.tokenize(texts), full.tokenize(texts))


def test_out_of_vocabulary_words_share_the_unknown_row(full_and_trimmed):
    full, trimmed = full_and_trimmed
    with torch.no_grad():
        a, b = trimmed.encode_text(["a red piano", "a red zeppelin"])
        fa, fb = full.encode_text(["a red piano", "a red zeppelin"])
    assert all(len(tokenize(w)[0].nonzero()) == 3 for w in ("piano", "zeppelin"))  # one id each, in no caption
    assert torch.equal(a, b)  # both unknown words read the one unknown row
    assert not torch.allclose(fa, fb)  # the full table told them apart (with untrained rows)


def test_trimming_a_trimmed_clip_keeps_the_rows_it_had(full_and_trimmed):
    full, trimmed = full_and_trimmed
    smaller = trim_vocab(trimmed, compact_vocab(CAPTIONS[:2]))
    with torch.no_grad():
        assert torch.equal(smaller.encode_text(CAPTIONS[:2]), full.encode_text(CAPTIONS[:2]))


def test_save_and_load_keep_the_vocabulary(tmp_path, full_and_trimmed):
    _, trimmed = full_and_trimmed
    stem = save_clip(trimmed, tmp_path / "compact_clip")
    stored = json.loads((tmp_path / "compact_clip.json").read_text())
    assert stored["config"]["fields"]["vocab"] == {"__tuple__": list(trimmed.config.vocab)}
    loaded = load_clip(stem)
    assert loaded.config.vocab == trimmed.config.vocab
    assert torch.equal(loaded.token_map, trimmed.token_map)
    assert "token_map" not in loaded.state_dict()  # rebuilt from the config, not a weight
    with torch.no_grad():
        texts = CAPTIONS + ["a red xylophone"]
        assert torch.equal(loaded.encode_text(texts), trimmed.encode_text(texts))


def test_a_checkpoint_without_a_vocabulary_loads_as_before(tmp_path):
    torch.manual_seed(1)
    full = CLIPModel(TINY_CLIP).eval()
    stem = save_clip(full, tmp_path / "full_clip")
    # as every checkpoint written before the field existed: no "vocab" in the JSON or the weights' header
    stored = json.loads((tmp_path / "full_clip.json").read_text())
    del stored["config"]["fields"]["vocab"]
    (tmp_path / "full_clip.json").write_text(json.dumps(stored))
    weights = tmp_path / "full_clip.safetensors"
    with safe_open(weights, "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    header = {k: json.loads(v) for k, v in meta.items()}
    (key,) = [k for k, v in header.items() if isinstance(v, dict) and "config" in v]
    del header[key]["config"]["fields"]["vocab"]
    save_file(tensors, str(weights), metadata={**meta, key: json.dumps(header[key])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the JSON and the header agree: nothing to warn about
        loaded = load_clip(stem)
    assert loaded.config.vocab is None and loaded.token_map is None
    assert loaded.model.token_embedding.weight.shape[0] == VOCAB_SIZE
    tokens = tokenize(CAPTIONS, 16)
    with torch.no_grad():  # the ids go to open_clip's tower unchanged
        raw = torch.nn.functional.normalize(loaded.model.encode_text(tokens).float(), dim=-1)
        assert torch.equal(loaded.encode_text(tokens), raw)


def test_the_shipped_shapes_clip_has_no_vocabulary_and_reads_bpe_ids_unchanged():
    from dalle_mini_core.weights import load_pretrained

    clip = load_pretrained("shapes_clip", CLIPModel).eval()  # sha256-checked: the file is untouched
    assert clip.config.vocab is None and clip.token_map is None
    assert clip.model.token_embedding.weight.shape == (VOCAB_SIZE, clip.config.text_width)
    tokens = clip.tokenize(["a red circle", "two blue squares"])
    with torch.no_grad():
        raw = torch.nn.functional.normalize(clip.model.encode_text(tokens).float(), dim=-1)
        assert torch.equal(clip.encode_text(tokens), raw)


# --- the emoji recipes ------------------------------------------------------------------------------


def test_every_emoji_caption_has_a_row_of_its_own():
    from dalle_mini_core.data.emoji import TEMPLATES, EmojiDataset

    vocab = dataset_vocab("emoji")
    lookup = compact_lookup(vocab)
    names = EmojiDataset("all", templates=False).clean_names
    assert len(names) == 1870
    captions = [t.format(name=n, a=a) for n in names for t in TEMPLATES for a in ("a", "an")]
    rows = to_compact(tokenize(captions, 77), lookup)
    assert not (rows == unknown_id(vocab)).any()
    assert len(vocab) < 2500  # a few thousand ids, not 49,408
    with pytest.raises(ValueError, match="only the emoji"):
        dataset_vocab("shapes")


@pytest.mark.parametrize("mode", ["smoke", "cpu", "gpu"])
def test_emoji_clip_recipes_carry_the_compact_vocabulary(mode):
    recipe = STAGE_RECIPES["clip"].RECIPES["emoji"][mode]
    config = build_config(recipe, "emoji")
    assert config.vocab == dataset_vocab("emoji") and config.num_token_rows == len(config.vocab) + 1
    assert build_config(STAGE_RECIPES["clip"].RECIPES["shapes"][mode], "shapes").vocab is None  # shapes as before


def _float16_bytes(model: torch.nn.Module) -> int:
    return 2 * sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())


def test_the_four_emoji_gpu_parts_fit_the_shipped_weights_budget():
    """The issue's budget: the emoji parts the gpu recipes build, at most 10 MB together in float16."""
    recipes = {s: m.RECIPES["emoji"]["gpu"] for s, m in STAGE_RECIPES.items()}
    clip = STAGE_RECIPES["clip"].build(recipes["clip"], "emoji")
    sizes = {"clip": _float16_bytes(clip)}
    for stage in ("prior", "decoder", "upsampler"):
        part = STAGE_RECIPES[stage].build(recipes[stage], "emoji", embed_dim=clip.embed_dim)
        sizes[stage] = _float16_bytes(part)
    assert sum(sizes.values()) <= EMOJI_BUDGET_BYTES, sizes
    assert max(sizes, key=sizes.get) == "decoder", sizes  # the part that draws the pictures gets the most
    assert clip.model.token_embedding.weight.shape[0] == len(dataset_vocab("emoji")) + 1
