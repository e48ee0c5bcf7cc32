"""The shipped emoji dataset: checksums, shapes, splits, captions, sizes, and clear failures."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from dalle_mini_core.data.emoji import DataIntegrityError, EmojiDataset, load_emoji_arrays, with_article
from dalle_mini_core.paths import data_dir

EMOJI = data_dir() / "emoji"
MANIFEST = json.loads((EMOJI / "MANIFEST.json").read_text(encoding="utf-8"))


def test_manifest_checksums_cover_every_shipped_file():
    shipped = {p.name for p in EMOJI.iterdir() if p.is_file()} - {"MANIFEST.json"}
    assert set(MANIFEST["files"]) == shipped
    for name, info in MANIFEST["files"].items():
        data = (EMOJI / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
        assert len(data) == info["bytes"], name
    total = sum(p.stat().st_size for p in EMOJI.iterdir())
    assert total < 15e6


def test_arrays_count_and_shape():
    arrays = load_emoji_arrays()
    assert MANIFEST["count"] == 1870
    assert arrays["images"].shape == (1870, 64, 64, 3) and arrays["images"].dtype == np.uint8
    for key in ("names", "captions", "codepoints", "groups", "subgroups", "splits"):
        assert arrays[key].shape == (1870,), key
    assert len(set(arrays["names"].tolist())) == 1870
    # no skin-tone modifiers (U+1F3FB..U+1F3FF)
    assert not any(any(cp in s.split() for cp in ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"))
                   for s in arrays["codepoints"].tolist())
    # white background: the corners of almost every emoji are white
    corners = arrays["images"][:, [0, 0, -1, -1], [0, -1, 0, -1]]  # (N, 4, 3)
    assert (corners == 255).all(axis=(1, 2)).mean() > 0.9


def test_tsv_agrees_with_npz():
    arrays = load_emoji_arrays()
    rows = (EMOJI / "emoji.tsv").read_text(encoding="utf-8").splitlines()
    header = rows[0].split("\t")
    assert len(rows) == 1871
    table = [dict(zip(header, r.split("\t"))) for r in rows[1:]]
    assert [t["name"] for t in table] == arrays["names"].tolist()
    assert [t["split"] for t in table] == arrays["splits"].tolist()


def test_splits_disjoint_complete_and_follow_the_name_hash():
    sets = {s: EmojiDataset(s) for s in ("train", "val", "test")}
    names = {s: set(ds.names) for s, ds in sets.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    assert sum(len(ds) for ds in sets.values()) == len(EmojiDataset("all")) == 1870
    assert {s: len(ds) for s, ds in sets.items()} == MANIFEST["splits"] == {"train": 1693, "val": 95, "test": 82}
    for split, ds in sets.items():  # recompute the documented rule independently
        for name in ds.names:
            bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 100
            assert (bucket < 90, 90 <= bucket < 95, bucket >= 95)[("train", "val", "test").index(split)], name


def test_items_are_chw_in_range_and_captions_name_the_emoji():
    ds = EmojiDataset("val", image_size=64)
    for i in range(len(ds)):
        x, caption = ds[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert -1.0 <= x.min() and x.max() <= 1.0
        assert caption.strip() and ds.clean_names[i] in caption
        assert "\u201c" not in caption and ": " not in caption
    assert "flag of Mayotte" in EmojiDataset("all").clean_names  # "flag: Mayotte" cleaned
    assert "grinning face with big eyes" in EmojiDataset("all").clean_names


def test_templates_are_deterministic_per_seed():
    a, b, c = EmojiDataset("test", seed=0), EmojiDataset("test", seed=0), EmojiDataset("test", seed=1)
    caps_a = [a[i][1] for i in range(len(a))]
    assert caps_a == [b[i][1] for i in range(len(b))]
    assert caps_a != [c[i][1] for i in range(len(c))]
    assert len(set(caps_a) - set(a.clean_names)) > 0  # some captions use a template
    bare = EmojiDataset("test", templates=False)
    assert [bare[i][1] for i in range(len(bare))] == bare.clean_names
    custom = EmojiDataset("test", templates=["a drawing of {name}"])
    assert custom[0][1] == f"a drawing of {custom.clean_names[0]}"
    assert with_article("apple") == "an" and with_article("red apple") == "a"


def test_32_is_the_area_average_of_64():
    big, small = EmojiDataset("val", image_size=64), EmojiDataset("val", image_size=32)
    for i in (0, 7, len(big) - 1):
        x64, x32 = big[i][0], small[i][0]
        expect = x64.reshape(3, 32, 2, 32, 2).mean(dim=(2, 4))  # (3, 32, 32): mean of 2x2 blocks
        assert x32.shape == (3, 32, 32)
        assert torch.allclose(x32, expect, atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        EmojiDataset("training")
    with pytest.raises(ValueError, match="image_size"):
        EmojiDataset(image_size=48)
    with pytest.raises(ValueError, match="template"):
        EmojiDataset(templates=["no placeholder"])
    with pytest.raises(IndexError):
        EmojiDataset("test")[10_000]


@pytest.fixture
def data_copy(tmp_path):
    """A copy of data/emoji under tmp_path/data/emoji."""
    shutil.copytree(EMOJI, tmp_path / "data" / "emoji")
    return tmp_path / "data"


def test_missing_file_says_how_to_rebuild(data_copy, monkeypatch):
    (data_copy / "emoji" / "emoji.npz").unlink()
    monkeypatch.setenv("DALLE_MINI_DATA", str(data_copy))
    with pytest.raises(FileNotFoundError, match=r"emoji\.npz.*build_emoji\.py"):
        EmojiDataset()


def test_corrupted_file_fails_the_checksum(data_copy):
    npz = data_copy / "emoji" / "emoji.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip one byte
    npz.write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError, match=r"sha256.*build_emoji\.py"):
        EmojiDataset(root=data_copy / "emoji")


def test_verified_copy_loads_from_another_root(data_copy):
    ds = EmojiDataset("val", root=data_copy / "emoji")
    assert len(ds) == 95


@pytest.mark.parametrize("text, match", [
    ("{\n", r"MANIFEST\.json is not valid JSON.*build_emoji\.py"),
    ("[1, 2]", r"MANIFEST\.json records no sha256 for emoji\.npz"),
    ('{"files": []}', r"records no sha256"),
])
def test_a_damaged_manifest_names_the_file(data_copy, text, match):
    """Probe §6: an invalid or list-shaped MANIFEST used to raise a bare JSONDecodeError / AttributeError."""
    (data_copy / "emoji" / "MANIFEST.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataIntegrityError, match=match):
        load_emoji_arrays(data_copy / "emoji")
