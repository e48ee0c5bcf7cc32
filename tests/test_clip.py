"""CLIP: loss parity with open_clip, embeddings, retrieval metrics, checkpoints (all offline)."""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
from open_clip.loss import ClipLoss

from dalle_mini_core.checkpoints import read_checkpoint_json
from dalle_mini_core.clip import (
    CLIPConfig,
    CLIPModel,
    attribute_accuracy,
    clip_config,
    confusion_matrix,
    contrastive_loss,
    embedding_map,
    load_clip,
    load_open_clip_checkpoint,
    retrieval_metrics,
    save_clip,
    shapes_prompts,
    shapes_caption_kind,
    shapes_oracle_embeddings,
    shapes_relevance,
    zero_shot_classify,
)

# A CLIP small enough to build and run in a fraction of a second.
TINY = CLIPConfig(
    image_size=16, patch_size=4, vision_width=32, vision_layers=1, vision_head_width=16,
    text_width=32, text_layers=1, text_heads=2, embed_dim=16, context_length=16,
)
CAPTIONS = ["a red circle", "a blue square", "a big green triangle at the top", "a small yellow star"]


@pytest.fixture(scope="module")
def tiny() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel.from_config(TINY).eval()


def _images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)


# --- the loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_contrastive_loss_matches_open_clip(scale):
    img, txt = _unit(8, 16, 1), _unit(8, 16, 2)
    ours = contrastive_loss(img, txt, torch.tensor(scale))
    theirs = ClipLoss()(img, txt, torch.tensor(scale))
    assert torch.allclose(ours, theirs, atol=1e-6), (ours.item(), theirs.item())


def test_contrastive_loss_gradients_match_open_clip():
    img, txt = _unit(6, 8, 3).requires_grad_(), _unit(6, 8, 4).requires_grad_()
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
    images = _images(4)
    batch = {"image": images, "caption": CAPTIONS}
    with torch.no_grad():
        want = contrastive_loss(tiny.encode_image(images), tiny.encode_text(CAPTIONS), tiny.logit_scale)
        got = tiny.loss(batch)
        got_tokens = tiny.loss({"image": images, "tokens": tiny.tokenize(CAPTIONS)})
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got_tokens, want, atol=1e-6)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    clip = CLIPModel.from_config(TINY)
    batch = {"image": _images(4), "caption": CAPTIONS}
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
        img = tiny.encode_image(_images(3))
        txt = tiny.encode_text(CAPTIONS)
        one = tiny.encode_text("a red circle")
    assert img.shape == (3, 16) and txt.shape == (4, 16) and one.shape == (1, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(one, txt[:1], atol=1e-6)


def test_encoding_is_deterministic_and_batch_independent(tiny):
    images = _images(5, seed=3)
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
    x = _images(2)
    assert torch.allclose(tiny.normalize_images(x), x, atol=1e-6)
    assert tiny.normalize_images(_images(2, size=32)).shape == (2, 3, 16, 16)


def test_config_and_wrapped_model_build_the_same_thing():
    torch.manual_seed(0)
    a = CLIPModel(TINY)
    torch.manual_seed(0)
    b = CLIPModel.from_config(TINY)
    wrapped = CLIPModel(b.model, image_size=16, context_length=16)
    with torch.no_grad():
        assert torch.equal(a.encode_text(CAPTIONS), b.encode_text(CAPTIONS))
        assert torch.equal(wrapped.encode_image(_images(2)), b.encode_image(_images(2)))
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
        e = clip.encode_image(_images(2, size=clip.image_size))
        t = clip.encode_text(["a red circle", "a grinning face"])
    assert e.shape == t.shape == (2, clip.config.embed_dim)
    assert clip.context_length == 32
    assert 14.0 < clip.logit_scale.item() < 14.5  # 1 / 0.07 at initialisation


# --- evaluation -------------------------------------------------------------------------------


def test_retrieval_metrics_known_answers():
    # Texts 0..3 match images 0..3, except that text 2 is closest to image 3 and
    # text 3 is closest to image 0 (its own image second).
    img = torch.eye(4)
    txt = torch.tensor([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.3, 0.9],
        [0.9, 0.0, 0.0, 0.5],
    ])
    m = retrieval_metrics(img, txt, ks=(1, 2, 3))
    assert m["text_to_image_top1"] == pytest.approx(0.5)
    assert m["text_to_image_top2"] == pytest.approx(1.0)
    # Image 3's most similar text is text 2, then text 3; image 2's best is text 2.
    assert m["image_to_text_top1"] == pytest.approx(0.75)
    assert m["image_to_text_top2"] == pytest.approx(1.0)


def test_retrieval_metrics_groups_make_duplicates_interchangeable():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 0 and 1 swapped
    assert retrieval_metrics(img, txt, ks=(1,))["text_to_image_top1"] == pytest.approx(1 / 3)
    grouped = retrieval_metrics(img, txt, ks=(1,), groups=["red circle", "red circle", "blue square"])
    assert grouped["text_to_image_top1"] == pytest.approx(1.0)
    assert grouped["image_to_text_top1"] == pytest.approx(1.0)


def test_retrieval_metrics_random_embeddings_near_chance():
    m = retrieval_metrics(_unit(500, 32, 5), _unit(500, 32, 6), ks=(1, 50))
    assert m["text_to_image_top1"] < 0.02
    assert 0.05 < m["text_to_image_top50"] < 0.15  # chance is 50 / 500 = 0.1


def test_retrieval_metrics_rejects_bad_k():
    with pytest.raises(ValueError, match="every k"):
        retrieval_metrics(torch.eye(3), torch.eye(3), ks=(5,))


def test_zero_shot_classify_shared_and_per_image_prompts(tiny):
    images = _images(3)
    with torch.no_grad():
        img = tiny.encode_image(images)
        txt = tiny.encode_text(CAPTIONS)
    want = (img @ txt.T).argmax(dim=1)
    assert torch.equal(zero_shot_classify(tiny, images, CAPTIONS), want)
    # Per-image prompt sets: the same prompts in a different order per image.
    perms = [[3, 2, 1, 0], [0, 1, 2, 3], [1, 3, 0, 2]]
    got = zero_shot_classify(tiny, images, [[CAPTIONS[j] for j in p] for p in perms])
    assert [p[i] for p, i in zip(perms, got.tolist())] == want.tolist()


def test_confusion_matrix_counts():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix([0, 3], [0, 0], 3)


def test_embedding_map_is_pca():
    # Centred points spread along e0 (variance 9) and e1 (variance 1): the map's axes are e0, e1.
    img = torch.tensor([[3.0, 0, 0], [-3, 0, 0], [0, 1, 0], [0, -1, 0]])
    txt = torch.tensor([[2.0, 0, 0], [-2, 0, 0]])
    ixy, txy = embedding_map(img, txt)
    assert torch.allclose(ixy, torch.tensor([[3.0, 0], [-3, 0], [0, 1], [0, -1]]), atol=1e-5)
    assert torch.allclose(txy, torch.tensor([[2.0, 0], [-2, 0]]), atol=1e-5)
    # Random embeddings: same answer twice, and the first axis carries the most variance.
    a, b = _unit(30, 8, 7), _unit(20, 8, 8)
    xy = torch.cat(embedding_map(a, b))
    assert torch.equal(torch.cat(embedding_map(a, b)), xy)
    assert xy[:, 0].var() >= xy[:, 1].var()


# --- checkpoints ------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, tiny):
    save_clip(tiny, tmp_path / "clip_tiny", extra={"note": "test"})
    assert (tmp_path / "clip_tiny.safetensors").is_file()
    meta = read_checkpoint_json(tmp_path / "clip_tiny")
    assert meta["config"]["fields"]["embed_dim"] == 16 and meta["extra"] == {"note": "test"}
    loaded = load_clip(tmp_path / "clip_tiny")
    assert loaded.config == TINY and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(_images(2)), tiny.encode_image(_images(2)))
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
    images, tokens = _images(2), open_clip.tokenizer.SimpleTokenizer(context_length=16)(CAPTIONS)
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
    images = _images(2)
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


def _scene(*objs):
    from dalle_mini_core.data.attributes import Scene, ShapeObject

    return Scene(tuple(ShapeObject(*o) for o in objs))


def test_shapes_relevance_reads_what_captions_state():
    scenes = [
        _scene(("circle", "red", "small", "left"), ("square", "blue", "large", "right")),
        _scene(("square", "blue", "large", "left"), ("circle", "red", "small", "right")),
        _scene(("circle", "red", "large", "centre")),
    ]
    captions = [
        "a red circle left of a blue square",  # true of scene 0 only
        "a blue square left of a red circle",  # true of scene 1 only
        "a large red circle at the centre",  # true of scene 2 only
        "a blue square right of a red circle",  # scene 0, objects named in the other order
    ]
    rel = shapes_relevance(captions, scenes)
    assert rel.tolist() == [[True, False, False], [False, True, False], [False, False, True], [True, False, False]]


def test_shapes_caption_kind():
    assert shapes_caption_kind("a small red circle at the top left") == "one object"
    assert shapes_caption_kind("a red circle left of a blue square") == "two objects, relation"
    assert shapes_caption_kind("a small red circle at the top and a large blue square at the bottom") == \
        "two objects, cells stated"


def test_shapes_oracle_embeddings_are_seeded_unit_embeddings_of_fresh_scenes(tiny):
    captions = ["a small red circle at the top left", "a red circle left of a blue square"]
    a = shapes_oracle_embeddings(tiny, captions, seed=0, image_size=16)
    assert a.shape == (2, TINY.embed_dim)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(a, shapes_oracle_embeddings(tiny, captions, seed=0, image_size=16))
    assert not torch.allclose(a, shapes_oracle_embeddings(tiny, captions, seed=1, image_size=16))


def test_retrieval_metrics_with_a_relevance_matrix():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # text 0 prefers image 1
    relevant = torch.tensor([[True, True, False], [False, True, False], [False, False, True]])
    m = retrieval_metrics(img, txt, ks=(1,), relevant=relevant)
    assert m["text_to_image_top1"] == pytest.approx(1.0)
    assert retrieval_metrics(img, txt, ks=(1,))["text_to_image_top1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="diagonal"):
        retrieval_metrics(img, txt, ks=(1,), relevant=~torch.eye(3, dtype=torch.bool))


class _PromptOracle(torch.nn.Module):
    """A stand-in CLIP: text embeddings are one-hot over the 324 prompts, and each image's
    embedding is the one-hot of a caption chosen by `pick(attributes)`."""

    def __init__(self, dataset, pick):
        super().__init__()
        self.prompts, attrs = shapes_prompts(0)
        self.lookup = {}
        for i in range(len(dataset)):
            image = dataset[i][0]
            self.lookup[image.numpy().tobytes()] = attrs.index(pick(dataset.attributes(i)[0]))

    def encode_text(self, prompts):
        return torch.nn.functional.one_hot(torch.tensor([self.prompts.index(p) for p in prompts]), len(self.prompts)).float()

    def encode_image(self, images):
        idx = torch.tensor([self.lookup[x.numpy().tobytes()] for x in images])
        return torch.nn.functional.one_hot(idx, len(self.prompts)).float()


def test_attribute_accuracy_oracle_and_a_colour_blind_model():
    from dalle_mini_core.data.shapes import ShapesDataset

    ds = ShapesDataset("test", length=12, image_size=16, num_objects=1)
    perfect = attribute_accuracy(_PromptOracle(ds, lambda a: a), ds, n=12)
    assert perfect["all_correct"] == 1.0 and set(perfect["accuracy"].values()) == {1.0}
    assert torch.equal(perfect["confusion"]["colour"], torch.diag(perfect["confusion"]["colour"].diag()))
    # A model that sees every colour as red: colour accuracy = share of red objects.
    red = attribute_accuracy(_PromptOracle(ds, lambda a: {**a, "colour": "red"}), ds, n=12)
    share_red = sum(ds.attributes(i)[0]["colour"] == "red" for i in range(12)) / 12
    assert red["accuracy"]["colour"] == pytest.approx(share_red)
    assert red["accuracy"]["shape"] == 1.0 and red["accuracy"]["position"] == 1.0
    assert red["confusion"]["colour"][:, 0].sum() == 12  # every row's mass in the "red" column
    with pytest.raises(ValueError, match="num_objects=1"):
        attribute_accuracy(_PromptOracle(ds, lambda a: a), ShapesDataset("test", length=4, num_objects=2), n=4)


def test_shapes_prompts_cover_every_combination():
    prompts, attrs = shapes_prompts(0)
    assert len(prompts) == len(set(prompts)) == 3 * 6 * 2 * 9
    assert prompts[0] == "a {size} {colour} {shape} at the {position}".format(**attrs[0])


def test_show_confusion_draws_counts():
    import matplotlib

    matplotlib.use("Agg")
    from dalle_mini_core.viz import show_confusion

    fig = show_confusion(confusion_matrix([0, 1, 1], [0, 1, 0], 2), ["red", "blue"], title="colour")
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["1", "1", "1"]
    with pytest.raises(ValueError, match="K = len"):
        show_confusion(torch.zeros(2, 2), ["a", "b", "c"])
