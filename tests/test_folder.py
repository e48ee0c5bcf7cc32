"""User datasets: a folder with captions.tsv and webdataset-style tar shards, errors named, skips counted."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from dalle_mini_core.data.folder import DataFileError, ImageCaptionFolder, TarShards, prepare_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def halves(w: int = 128, h: int = 64) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", (w, h), RED)
    img.paste(Image.new("RGB", (w // 2, h), BLUE), (w // 2, 0))
    return img


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_folder(root, rows: list[str], images: dict[str, bytes]):
    root.mkdir(exist_ok=True)
    for name, data in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "captions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def write_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------- preprocessing


def test_prepare_image_resizes_shorter_side_and_centre_crops():
    out = prepare_image(halves(128, 64), 32)  # -> 64x32, crop columns 16..48
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert tuple(out[16, 2]) == RED and tuple(out[16, 29]) == BLUE
    tall = prepare_image(halves(40, 200), 20)  # -> 20x100, crop rows 40..60, both halves kept
    assert tall.shape == (20, 20, 3) and tuple(tall[10, 1]) == RED and tuple(tall[10, 18]) == BLUE


def test_transparent_and_grey_images_become_rgb():
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert (prepare_image(rgba, 16) == 255).all()  # transparent -> white, not black
    grey = prepare_image(Image.new("L", (16, 16), 100), 16)
    assert grey.shape == (16, 16, 3) and (grey == 100).all()


# ---------------------------------------------------------------- folder


def test_folder_loads_pairs_in_table_order(tmp_path):
    root = write_folder(tmp_path / "ds", ["# comment", "b.png\ta blue square", "", "sub/a.jpg\ta red circle"],
                        {"b.png": png_bytes(Image.new("RGB", (40, 30), BLUE)),
                         "sub/a.jpg": png_bytes(Image.new("RGB", (50, 50), RED), "JPEG")})
    ds = ImageCaptionFolder(root, image_size=16)
    assert len(ds) == 2 and ds.skipped == []
    x, caption = ds[0]
    assert caption == "a blue square" and x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[:, 8, 8], torch.tensor([-1.0, -1.0, 1.0]))
    assert ds[1][1] == "a red circle" and ds.sources[1].endswith("sub/a.jpg")
    assert x.min() >= -1 and x.max() <= 1


def bad_folder(tmp_path):
    good = png_bytes(Image.new("RGB", (16, 16), RED))
    jpeg = png_bytes(Image.new("RGB", (64, 64), BLUE), "JPEG")
    return write_folder(tmp_path / "bad", [
        "good.png\tfine",
        "corrupt.png\tbroken bytes",
        "truncated.jpg\ta truncated jpeg",
        "ghost.png\tcaption without image",
        "empty.png\t  ",
        "no tab here",
        "big.png\twrong size",
    ], {
        "good.png": good,
        "corrupt.png": b"this is not a png",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "orphan.png": good,  # no caption
        "empty.png": good,
        "big.png": png_bytes(Image.new("RGB", (32, 16), RED)),
    })


@pytest.mark.parametrize("line_or_file, expected_file, reason", [
    ("corrupt.png", "corrupt.png", "corrupt"),
    ("truncated.jpg", "truncated.jpg", "corrupt"),
    ("ghost.png", "ghost.png", "caption without image"),
    ("empty.png", "empty.png", "empty caption"),
    ("no tab here", "captions.tsv:7", "filename<TAB>caption"),
    ("orphan.png", "orphan.png", "no caption"),
    ("big.png", "big.png", "strict_size"),
])
def test_each_folder_error_names_its_file(tmp_path, line_or_file, expected_file, reason):
    root = bad_folder(tmp_path)
    rows = (root / "captions.tsv").read_text().splitlines()
    keep = [r for r in rows if r.startswith("good.png") or r.startswith(line_or_file)]
    (root / "captions.tsv").write_text("\n".join(keep) + "\n")
    for name in ("corrupt.png", "truncated.jpg", "orphan.png", "empty.png", "big.png"):
        if name != line_or_file:
            (root / name).unlink()
    if line_or_file == "no tab here":  # keep its line number stable for the message
        (root / "captions.tsv").write_text("\n".join(["good.png\tfine"] + ["#"] * 5 + ["no tab here"]) + "\n")
    with pytest.raises(DataFileError, match=reason) as info:
        ImageCaptionFolder(root, image_size=16, strict_size=True)
    assert str(info.value.file).endswith(expected_file)
    assert expected_file in str(info.value)


def test_folder_skip_mode_counts_every_problem_and_warns(tmp_path):
    root = bad_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 7 sample\(s\), kept 1"):
        ds = ImageCaptionFolder(root, image_size=16, strict_size=True, on_error="skip")
    assert len(ds) == 1 and ds[0][1] == "fine"
    files = sorted(f.rsplit("/", 1)[-1] for f, _ in ds.skipped)
    assert files == sorted(["captions.tsv:6", "orphan.png", "corrupt.png", "truncated.jpg",
                            "ghost.png", "empty.png", "big.png"])
    # without strict_size the 32x16 image is resized and kept
    with pytest.warns(UserWarning, match="skipped 6"):
        assert len(ImageCaptionFolder(root, image_size=16, on_error="skip")) == 2


def test_folder_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageCaptionFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="captions.tsv"):
        ImageCaptionFolder(tmp_path / "empty")
    with pytest.raises(ValueError, match="on_error"):
        ImageCaptionFolder(tmp_path / "empty", on_error="ignore")
    root = write_folder(tmp_path / "dup", ["a.png\tone", "a.png\ttwo"], {"a.png": png_bytes(halves())})
    with pytest.raises(DataFileError, match="listed twice"):
        ImageCaptionFolder(root)


# ---------------------------------------------------------------- tar shards


def test_tar_shards_group_members_by_key(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "00001.tar", {
        "000.jpg": png_bytes(halves(), "JPEG"), "000.txt": b"red and blue", "000.json": b"{}",
        "001.png": png_bytes(Image.new("RGB", (8, 8), BLUE)), "001.txt": "bleu \u00e9\n".encode(),
    })
    write_tar(shards / "00000.tar", {"dir/a.png": png_bytes(Image.new("RGB", (8, 8), RED)),
                                     "dir/a.txt": b"red"})
    ds = TarShards(shards, image_size=8)  # a folder: shards in name order
    assert [c for _, c in ds] == ["red", "red and blue", "bleu \u00e9"]
    assert ds.sources[0].endswith("00000.tar:dir/a.png") and ds.skipped == []
    assert torch.allclose(ds[2][0][:, 4, 4], torch.tensor([-1.0, -1.0, 1.0]))
    assert len(TarShards([shards / "00001.tar"], image_size=8)) == 2


def bad_shard(tmp_path):
    good = png_bytes(Image.new("RGB", (8, 8), RED))
    return write_tar(tmp_path / "bad.tar", {
        "ok.png": good, "ok.txt": b"fine",
        "broken.jpg": b"\xff\xd8 not really a jpeg", "broken.txt": b"broken",
        "nocap.png": good,
        "lonely.txt": b"caption without image",
        "blank.png": good, "blank.txt": b"   ",
        "big.png": png_bytes(Image.new("RGB", (9, 8), RED)), "big.txt": b"too wide",
    })


@pytest.mark.parametrize("member, reason", [
    ("broken.jpg", "corrupt"), ("nocap.png", "no caption"), ("lonely.txt", "caption without image"),
    ("blank.txt", "empty caption"), ("big.png", "strict_size"),
])
def test_each_tar_error_names_shard_and_member(tmp_path, member, reason):
    good = png_bytes(Image.new("RGB", (8, 8), RED))
    with tarfile.open(bad_shard(tmp_path)) as tar:
        everything = {m.name: tar.extractfile(m).read() for m in tar}
    key = member.split(".")[0]
    kept = {n: d for n, d in everything.items() if n.split(".")[0] in ("ok", key)}
    shard = write_tar(tmp_path / "one.tar", kept)
    with pytest.raises(DataFileError, match=reason) as info:
        TarShards(shard, image_size=8, strict_size=True)
    assert info.value.file == f"{shard}:{member}"
    assert len(TarShards(write_tar(tmp_path / "ok.tar", {"ok.png": good, "ok.txt": b"x"}), image_size=8)) == 1


def test_tar_skip_mode_counts_and_warns(tmp_path):
    shard = bad_shard(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 5 sample\(s\), kept 1"):
        ds = TarShards(shard, image_size=8, strict_size=True, on_error="skip")
    assert [c for _, c in ds] == ["fine"]
    assert sorted(f.split(":")[-1] for f, _ in ds.skipped) == sorted(
        ["broken.jpg", "nocap.png", "lonely.txt", "blank.txt", "big.png"])


def test_unreadable_shard_is_named(tmp_path):
    bad = tmp_path / "junk.tar"
    bad.write_bytes(b"definitely not a tar archive" * 30)
    with pytest.raises(DataFileError, match="junk.tar: not a readable tar"):
        TarShards(bad)
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        TarShards([tmp_path / "missing.tar"])
    with pytest.raises(ValueError, match="no usable"):
        with pytest.warns(UserWarning, match="skipped 1"):
            TarShards(bad, on_error="skip")


def test_dotted_names_follow_the_webdataset_key_rule_and_are_reported(tmp_path):
    shard = write_tar(tmp_path / "dots.tar", {"ok.png": png_bytes(halves()), "ok.txt": b"fine",
                                              "x.y.png": png_bytes(halves()), "x.y.txt": b"dotted"})
    with pytest.raises(DataFileError, match="first dot") as info:
        TarShards(shard)
    assert info.value.file == f"{shard}:x" and "x.y.png" in info.value.reason
