"""Measuring a CLIP (dalle_mini_core.evaluation.clip): retrieval, relevance of shapes captions,
zero-shot classification and attributes, confusion matrices, the embedding map (all offline)."""
from __future__ import annotations

import pytest
import torch

from dalle_mini_core.evaluation.clip import (
    confusion_matrix,
    embedding_map,
    retrieval_metrics,
    shapes_caption_kind,
    shapes_oracle_embeddings,
    shapes_prompts,
    shapes_relevance,
    zero_shot_attribute_accuracy,
    zero_shot_classify,
)

from tiny_models import CAPTIONS, TINY_CLIP as TINY, random_images, unit_vectors


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
    m = retrieval_metrics(unit_vectors(500, 32, seed=5), unit_vectors(500, 32, seed=6), ks=(1, 50))
    assert m["text_to_image_top1"] < 0.02
    assert 0.05 < m["text_to_image_top50"] < 0.15  # chance is 50 / 500 = 0.1


def test_retrieval_metrics_rejects_bad_k():
    with pytest.raises(ValueError, match="every k"):
        retrieval_metrics(torch.eye(3), torch.eye(3), ks=(5,))


def test_retrieval_metrics_with_a_relevance_matrix():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # text 0 prefers image 1
    relevant = torch.tensor([[True, True, False], [False, True, False], [False, False, True]])
    m = retrieval_metrics(img, txt, ks=(1,), relevant=relevant)
    assert m["text_to_image_top1"] == pytest.approx(1.0)
    assert retrieval_metrics(img, txt, ks=(1,))["text_to_image_top1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="diagonal"):
        retrieval_metrics(img, txt, ks=(1,), relevant=~torch.eye(3, dtype=torch.bool))


def test_zero_shot_classify_shared_and_per_image_prompts(tiny):
    images = random_images(3)
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
    a, b = unit_vectors(30, 8, seed=7), unit_vectors(20, 8, seed=8)
    xy = torch.cat(embedding_map(a, b))
    assert torch.equal(torch.cat(embedding_map(a, b)), xy)
    assert xy[:, 0].var() >= xy[:, 1].var()


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


def test_zero_shot_attribute_accuracy_oracle_and_a_colour_blind_model():
    from dalle_mini_core.data.shapes import ShapesDataset

    ds = ShapesDataset("test", length=12, image_size=16, num_objects=1)
    perfect = zero_shot_attribute_accuracy(_PromptOracle(ds, lambda a: a), ds, n=12)
    assert perfect["all_correct"] == 1.0 and set(perfect["accuracy"].values()) == {1.0}
    assert torch.equal(perfect["confusion"]["colour"], torch.diag(perfect["confusion"]["colour"].diag()))
    # A model that sees every colour as red: colour accuracy = share of red objects.
    red = zero_shot_attribute_accuracy(_PromptOracle(ds, lambda a: {**a, "colour": "red"}), ds, n=12)
    share_red = sum(ds.attributes(i)[0]["colour"] == "red" for i in range(12)) / 12
    assert red["accuracy"]["colour"] == pytest.approx(share_red)
    assert red["accuracy"]["shape"] == 1.0 and red["accuracy"]["position"] == 1.0
    assert red["confusion"]["colour"][:, 0].sum() == 12  # every row's mass in the "red" column
    with pytest.raises(ValueError, match="num_objects=1"):
        zero_shot_attribute_accuracy(_PromptOracle(ds, lambda a: a), ShapesDataset("test", length=4, num_objects=2), n=4)


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
