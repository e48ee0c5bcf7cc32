"""CLIP: loss parity with open_clip, embeddings, checkpoints, training (all offline; measures: test_evaluation_clip.py)."""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
from open_clip.loss import ClipLoss

from dalle_mini_core.checkpoints import read_checkpoint_json
from dalle_mini_core.clip import (
    CLIPModel,
    clip_config,
    contrastive_loss,
    load_clip,
    load_open_clip_checkpoint,
    save_clip,
)

from tiny_models import CAPTIONS, TINY_CLIP as TINY, random_images, unit_vectors


# --- the loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_contrastive_loss_matches_open_clip(scale):
    img, txt = unit_vectors(8, 16, seed=1), unit_vectors(8, 16, seed=2)
    ours = contrastive_loss(img, txt, torch.tensor(scale))
    theirs = ClipLoss()(img, txt, torch.tensor(scale))
    assert torch.allclose(ours, theirs, atol=1e-6), (ours.item(), theirs.item())


def test_contrastive_loss_gradients_match_open_clip():
    img, txt = unit_vectors(6, 8, seed=3).requires_grad_(), unit_vectors(6, 8, seed=4).requires_grad_()
    g_ours = torch.autograd.grad(contrastive_loss(img, txt, 10.0), (img, txt))
    g_theirs = torch.autograd.grad(ClipLoss()(img, txt, 10.0), (img, txt))
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, atol=1e-6)


def test_contrastive_loss_known_values():
    # Uniform logits: every row is a guess among N, so the loss is log N.
    same = torch.ones(5, 4) / 2
    assert torch.allclose(contrastive_loss(same, same, 3.0), torch.log(torch.tensor(5.0)))
    # Perfectly separated pairs at a large scale: the loss goes to zero.
    eye = torch.eye(4)
    assert contrastive_loss(eye, eye, 100.0).item() < 1e-6
    with pytest.raises(ValueError, match="image_emb and text_emb"):
        contrastive_loss(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)


def test_model_loss_is_open_clip_loss_on_its_embeddings(tiny):
    images = random_images(4)
    batch = {"image": images, "caption": CAPTIONS}
    with torch.no_grad():
        want = contrastive_loss(tiny.encode_image(images), tiny.encode_text(CAPTIONS), tiny.logit_scale)
        got = tiny.loss(batch)
        got_tokens = tiny.loss({"image": images, "tokens": tiny.tokenize(CAPTIONS)})
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got_tokens, want, atol=1e-6)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    clip = CLIPModel.from_config(TINY)
    batch = {"image": random_images(4), "caption": CAPTIONS}
    opt = torch.optim.AdamW(clip.parameters(), lr=5e-3)
    first = clip.loss(batch).item()
    for _ in range(8):
        opt.zero_grad()
        clip.loss(batch).backward()
        opt.step()
    assert clip.loss(batch).item() < 0.5 * first


# --- embeddings -------------------------------------------------------------------------------


def test_embeddings_are_unit_norm_with_the_right_shape(tiny):
    with torch.no_grad():
        img = tiny.encode_image(random_images(3))
        txt = tiny.encode_text(CAPTIONS)
        one = tiny.encode_text("a red circle")
    assert img.shape == (3, 16) and txt.shape == (4, 16) and one.shape == (1, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(one, txt[:1], atol=1e-6)


def test_encoding_is_deterministic_and_batch_independent(tiny):
    images = random_images(5, seed=3)
    with torch.no_grad():
        a, b = tiny.encode_image(images), tiny.encode_image(images)
        alone = tiny.encode_image(images[2:3])
        t_all, t_one = tiny.encode_text(CAPTIONS), tiny.encode_text(CAPTIONS[1:2])
    assert torch.equal(a, b)
    assert torch.allclose(a[2:3], alone, atol=1e-5)
    assert torch.allclose(t_all[1:2], t_one, atol=1e-5)


def test_text_embedding_depends_on_the_words(tiny):
    with torch.no_grad():
        e = tiny.encode_text(["a red circle", "a blue circle"])
    assert not torch.allclose(e[0], e[1], atol=1e-3)


def test_tokens_and_captions_give_the_same_embedding(tiny):
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=16)(CAPTIONS)
    with torch.no_grad():
        assert torch.allclose(tiny.encode_text(tokens), tiny.encode_text(CAPTIONS))


def test_normalisation_is_identity_for_tiny_models_and_resizes(tiny):
    x = random_images(2)
    assert torch.allclose(tiny.normalize_images(x), x, atol=1e-6)
    assert tiny.normalize_images(random_images(2, size=32)).shape == (2, 3, 16, 16)


def test_config_and_wrapped_model_build_the_same_thing():
    torch.manual_seed(0)
    a = CLIPModel(TINY)
    torch.manual_seed(0)
    b = CLIPModel.from_config(TINY)
    wrapped = CLIPModel(b.model, image_size=16, context_length=16)
    with torch.no_grad():
        assert torch.equal(a.encode_text(CAPTIONS), b.encode_text(CAPTIONS))
        assert torch.equal(wrapped.encode_image(random_images(2)), b.encode_image(random_images(2)))
    with pytest.raises(ValueError, match="image_size and context_length"):
        CLIPModel(b.model)
    with pytest.raises(TypeError, match="CLIPConfig or an open_clip model"):
        CLIPModel("shapes")


def test_bad_inputs_raise_clear_errors(tiny):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.encode_image(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError, match="float tensor"):
        tiny.encode_image(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="token ids"):
        tiny.encode_text(torch.zeros(2, 77, dtype=torch.long))
    with pytest.raises(TypeError, match="captions"):
        tiny.encode_text([1, 2])
    with pytest.raises(ValueError, match="multiple of patch_size"):
        clip_config("shapes", patch_size=5)
    with pytest.raises(ValueError, match="unknown CLIP preset"):
        clip_config("mnist")


@pytest.mark.parametrize("name", ["shapes", "emoji"])
def test_presets_build_and_encode(name):
    torch.manual_seed(0)
    clip = CLIPModel.from_config(clip_config(name)).eval()
    with torch.no_grad():
        e = clip.encode_image(random_images(2, size=clip.image_size))
        t = clip.encode_text(["a red circle", "a grinning face"])
    assert e.shape == t.shape == (2, clip.config.embed_dim)
    assert clip.context_length == 32
    assert 14.0 < clip.logit_scale.item() < 14.5  # 1 / 0.07 at initialisation


# --- checkpoints ------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, tiny):
    save_clip(tiny, tmp_path / "clip_tiny", extra={"note": "test"})
    assert (tmp_path / "clip_tiny.safetensors").is_file()
    meta = read_checkpoint_json(tmp_path / "clip_tiny")
    assert meta["config"]["fields"]["embed_dim"] == 16 and meta["extra"] == {"note": "test"}
    loaded = load_clip(tmp_path / "clip_tiny")
    assert loaded.config == TINY and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(random_images(2)), tiny.encode_image(random_images(2)))
        assert torch.equal(loaded.encode_text(CAPTIONS), tiny.encode_text(CAPTIONS))


def _open_clip_model() -> open_clip.model.CLIP:
    torch.manual_seed(1)
    return open_clip.model.CLIP(embed_dim=16, vision_cfg=TINY.vision_cfg(), text_cfg=TINY.text_cfg()).eval()


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt_wrapped"])
def test_local_open_clip_checkpoint_round_trip(tmp_path, fmt):
    from safetensors.torch import save_file

    model = _open_clip_model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        path = tmp_path / "clip.safetensors"
        save_file(state, str(path))
    else:  # a .pt state dict, bare or as open_clip's training code saves it
        path = tmp_path / "clip.pt"
        obj = state if fmt == "pt" else {"state_dict": {"module." + k: v for k, v in state.items()}}
        torch.save(obj, path)
    clip = load_open_clip_checkpoint(path, TINY)
    images, tokens = random_images(2), open_clip.tokenizer.SimpleTokenizer(context_length=16)(CAPTIONS)
    with torch.no_grad():
        want_img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        want_txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        assert torch.allclose(clip.encode_image(images), want_img, atol=1e-6)
        assert torch.allclose(clip.encode_text(CAPTIONS), want_txt, atol=1e-6)


def test_local_checkpoint_by_open_clip_architecture_name(tmp_path):
    from safetensors.torch import save_file

    # Register a tiny architecture the way a user's own config would be, then load by name.
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 4},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "dmc-test-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfgs")
    model = _open_clip_model()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    clip = load_open_clip_checkpoint(tmp_path / "w.safetensors", "dmc-test-tiny")
    # A named architecture keeps open_clip's image statistics (OpenAI's), so the [-1, 1] input
    # is renormalised before the tower sees it.
    images = random_images(2)
    x01 = (images + 1) / 2
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_image((x01 - mean) / std), dim=-1)
        assert torch.allclose(clip.encode_image(images), want, atol=1e-5)


def test_loading_refuses_anything_that_would_download(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="never downloads"):
        load_open_clip_checkpoint(tmp_path / "w.safetensors", "hf-hub:laion/CLIP-ViT-B-32")
    with pytest.raises(FileNotFoundError, match="local files"):
        load_open_clip_checkpoint(tmp_path / "missing.pt", TINY)
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_open_clip_checkpoint(tmp_path / "w.safetensors", "not-a-model")


# --- shapes evaluation and the training recipe --------------------------------------------------


