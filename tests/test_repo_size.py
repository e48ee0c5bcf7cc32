"""The repository stays small enough to travel: its tracked files total under 60 MiB.

A run on a lent GPU machine carries the whole working tree, at most 64 MiB; 60 MiB leaves room
for the few ignored paths a run carries with it (wheels, a build folder). The largest files are
named when the total is over, so the fix is obvious. The emoji pipeline's shipped parts
(``data/weights/emoji_*``, the four safetensors files with their cards and anything saved with
them) are budgeted at about 10 MB together (at most 10 MiB).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MiB = 2 ** 20
TRACKED_LIMIT = 60 * MiB
EMOJI_LIMIT = 10 * MiB


def tracked_sizes(root: Path) -> dict[str, int] | None:
    """{path: bytes} of every file git tracks in `root` (deleted ones left out); None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        return None
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout
    sizes = {}
    for name in listed.decode("utf-8", "surrogateescape").split("\0"):
        path = root / name
        if name and path.is_file() and not path.is_symlink():
            sizes[name] = path.stat().st_size
    return sizes


def emoji_part_sizes(weights: Path) -> dict[str, int]:
    """{path: bytes} of the shipped emoji parts: every file under ``weights/emoji_*``."""
    sizes = {}
    for entry in sorted(weights.glob("emoji_*")):
        files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        sizes.update({str(p.relative_to(weights)): p.stat().st_size for p in files})
    return sizes


def over_limit(sizes: dict[str, int], limit: int, what: str, largest: int = 10) -> str | None:
    """None when `sizes` total at most `limit`, else one message naming the largest files."""
    total = sum(sizes.values())
    if total <= limit:
        return None
    top = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:largest]
    listing = "; ".join(f"{name} {size / MiB:.2f} MiB" for name, size in top)
    return (f"{what}: {total / MiB:.2f} MiB in {len(sizes)} files, over the {limit / MiB:g} MiB limit by "
            f"{(total - limit) / MiB:.2f} MiB; the largest: {listing}")


def test_tracked_files_total_under_60_mib():
    sizes = tracked_sizes(ROOT)
    if sizes is None:
        pytest.skip("not a git checkout (or no git): the tracked files cannot be listed")
    assert sizes, "git lists no tracked files"
    assert "README.md" in sizes and "dalle_mini_core/cli.py" in sizes
    message = over_limit(sizes, TRACKED_LIMIT, "tracked files")
    assert message is None, message


def test_shipped_emoji_parts_total_at_most_10_mib():
    sizes = emoji_part_sizes(ROOT / "data" / "weights")
    if not sizes:
        pytest.skip("no emoji parts in data/weights yet (the emoji pipeline is not shipped)")
    message = over_limit(sizes, EMOJI_LIMIT, "shipped emoji parts (data/weights/emoji_*)")
    assert message is None, message


# --- the checks themselves, on scratch folders ----------------------------------------------------


def test_over_limit_names_the_largest_files_first():
    sizes = {"small.txt": 10, "data/big.safetensors": 7 * MiB, "data/mid.npz": 2 * MiB}
    assert over_limit(sizes, 10 * MiB, "tracked files") is None
    message = over_limit(sizes, 8 * MiB, "tracked files", largest=2)
    assert message.startswith("tracked files: 9.00 MiB in 3 files, over the 8 MiB limit by 1.00 MiB")
    assert message.endswith("the largest: data/big.safetensors 7.00 MiB; data/mid.npz 2.00 MiB")


def test_emoji_parts_are_every_file_under_emoji_star(tmp_path):
    (tmp_path / "shapes_decoder.safetensors").write_bytes(b"x" * 100)
    for name, size in (("emoji_decoder.safetensors", 6 * MiB), ("emoji_decoder.json", 300)):
        with open(tmp_path / name, "wb") as f:
            f.truncate(size)  # sparse: the size without the writing
    (tmp_path / "emoji_run").mkdir()
    with open(tmp_path / "emoji_run" / "samples.png", "wb") as f:
        f.truncate(5 * MiB)
    sizes = emoji_part_sizes(tmp_path)
    assert sizes == {"emoji_decoder.json": 300, "emoji_decoder.safetensors": 6 * MiB, "emoji_run/samples.png": 5 * MiB}
    message = over_limit(sizes, EMOJI_LIMIT, "shipped emoji parts")
    assert message is not None and "emoji_decoder.safetensors 6.00 MiB; emoji_run/samples.png 5.00 MiB" in message


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_tracked_sizes_lists_what_git_tracks_and_only_inside_a_checkout(tmp_path):
    assert tracked_sizes(tmp_path) is None  # not a checkout
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("tracked")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "untracked.txt").write_text("not added")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt", "sub/b.bin"], check=True)
    assert tracked_sizes(tmp_path) == {"a.txt": 7, "sub/b.bin": 1000}
    assert tracked_sizes(tmp_path / "sub") is None  # a folder inside a checkout is not its root
