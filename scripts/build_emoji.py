"""Build the shipped emoji dataset (``data/emoji/``) from the Noto Color Emoji font.

Run once by a maintainer; users get the built arrays and never need the font or a network.

    apt-get install -y fonts-noto-color-emoji unicode-data   # Debian 12: font 2.042, Unicode 15.0
    python scripts/build_emoji.py                            # writes data/emoji/

What it does, step by step:

1. Read the emoji list from Unicode's ``emoji-test.txt`` (shipped by Debian's ``unicode-data``
   in /usr/share/unicode/emoji/): keep ``fully-qualified`` sequences, drop every sequence
   holding a skin-tone modifier (U+1F3FB..U+1F3FF) and the ``component`` entries.
2. Render each sequence with Pillow (FreeType + raqm shaping) at the font's only bitmap size,
   109 px (a 136×128 colour glyph), into a 136×136 transparent square with the glyph cell
   centred. Keep it only if the font draws it as ONE glyph (advance equal to one emoji cell:
   the font has a ligature for the whole sequence) and the glyph has visible pixels; a
   sequence the font lacks falls apart into several glyphs or an empty box and is reported.
3. Composite over plain white (255, 255, 255), downsample to 64×64 with Lanczos.
4. Split 90/5/5 into train/val/test by the SHA-256 of the Unicode name (stable under
   additions: an emoji keeps its split when the list grows).
5. Write ``emoji.npz`` (a zip written with fixed timestamps, so a rerun gives the same bytes),
   ``emoji.tsv`` (one row per emoji), the licences, and ``MANIFEST.json`` (sha256 of every
   file, array shapes, font and source versions). ``DATASHEET.md`` is written by hand and only
   its checksum is recorded here.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT_COPYRIGHT = Path("/usr/share/doc/fonts-noto-color-emoji/copyright")
UNICODE_COPYRIGHT = Path("/usr/share/doc/unicode-data/copyright")
OUT = Path(__file__).resolve().parent.parent / "data" / "emoji"

RENDER_SIZE = 109  # the one bitmap strike (ppem) of the CBDT font
CELL = 136  # glyph advance at 109 ppem, in pixels; the canvas is CELL×CELL
IMAGE_SIZE = 64
BACKGROUND = (255, 255, 255)
SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: same bytes on every build

LINE = re.compile(r"^([0-9A-F ]+?)\s*;\s*([a-z-]+)\s*#\s*\S+\s+E(\d+\.\d+)\s+(.+)$")


@dataclass(frozen=True)
class Entry:
    codepoints: str  # e.g. "1F468 200D 1F469"
    name: str  # CLDR short name as in emoji-test.txt, e.g. "flag: Mayotte"
    group: str  # e.g. "Smileys & Emotion"
    subgroup: str  # e.g. "face-smiling"
    version: str  # Emoji version that introduced it, e.g. "13.0"

    @property
    def text(self) -> str:
        return "".join(chr(int(c, 16)) for c in self.codepoints.split())


def read_emoji_test(path: Path) -> list[Entry]:
    """Fully-qualified emoji without skin-tone modifiers, in the file's (CLDR) order."""
    entries, group, subgroup = [], "", ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("# group:"):
            group = raw.split(":", 1)[1].strip()
        elif raw.startswith("# subgroup:"):
            subgroup = raw.split(":", 1)[1].strip()
        elif raw and not raw.startswith("#"):
            m = LINE.match(raw)
            if m is None:
                raise ValueError(f"{path}: cannot parse line {raw!r}")
            cps, status, version, name = m.groups()
            if status != "fully-qualified":
                continue
            if any(int(c, 16) in SKIN_TONES for c in cps.split()):
                continue
            entries.append(Entry(cps.strip(), name.strip(), group, subgroup, version))
    return entries


def clean_name(name: str) -> str:
    """A caption from a CLDR name: ASCII quotes, 'flag: X' → 'flag of X', other ': ' → ', '."""
    for curly, plain in (("\u201c", ""), ("\u201d", ""), ("\u2018", "'"), ("\u2019", "'")):
        name = name.replace(curly, plain)
    if name.startswith("flag: "):
        return "flag of " + name[len("flag: "):]
    if name.startswith("keycap: "):
        return "keycap " + name[len("keycap: "):]
    return name.replace(": ", ", ")


def split_of(name: str) -> str:
    """Deterministic 90/5/5 split from the SHA-256 of the Unicode name."""
    bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % 100
    return "train" if bucket < 90 else ("val" if bucket < 95 else "test")


def render(font: ImageFont.FreeTypeFont, text: str) -> Image.Image | None:
    """The emoji on white at IMAGE_SIZE², or None when the font lacks a single glyph for it."""
    if abs(font.getlength(text) - font.getlength("\U0001F600")) > 0.5:
        return None  # the sequence shaped into several glyphs: no ligature in this font
    canvas = Image.new("RGBA", (CELL, CELL), (0, 0, 0, 0))
    top = (CELL - font.getbbox("\U0001F600")[3]) // 2  # centre the 136×128 glyph cell
    ImageDraw.Draw(canvas).text((0, top), text, font=font, embedded_color=True)
    if canvas.getbbox() is None:
        return None  # .notdef: nothing drawn
    white = Image.new("RGBA", canvas.size, BACKGROUND + (255,))
    rgb = Image.alpha_composite(white, canvas).convert("RGB")
    return rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def licence_text() -> str:
    font = FONT_COPYRIGHT.read_text(encoding="utf-8")
    unicode = UNICODE_COPYRIGHT.read_text(encoding="utf-8")
    return (
        "Licences of data/emoji/\n"
        "=======================\n\n"
        "1. The images (emoji.npz 'images') are renderings of the Noto Color Emoji font\n"
        "   (fonts-noto-color-emoji, Debian 12, version 2.042), Copyright 2013-2017 Google Inc.,\n"
        "   licensed under the SIL Open Font License, Version 1.1 (font files), text below.\n"
        "   Images made with a font are documents created using the font; the OFL's condition\n"
        "   that the font stay under the OFL does not apply to them (OFL section 5). The\n"
        "   font itself is NOT shipped here. The licence is reproduced for attribution.\n\n"
        "2. The emoji sequences, names, groups and subgroups come from Unicode's emoji-test.txt\n"
        "   (Emoji 15.0, (c) 2022 Unicode, Inc.), shipped by Debian's unicode-data 15.0.0-1.\n"
        "   They are used under the Unicode licence (Unicode Data Files and Software),\n"
        "   reproduced below. Modification notice: the names in 'captions' and emoji.tsv's\n"
        "   'caption' column were changed by scripts/build_emoji.py (ASCII quotes,\n"
        "   'flag: X' -> 'flag of X', 'keycap: X' -> 'keycap X', ': ' -> ', '); the 'names'\n"
        "   field is unmodified. Terms of use: https://www.unicode.org/terms_of_use.html\n\n"
        "----- /usr/share/doc/fonts-noto-color-emoji/copyright -----\n\n"
        f"{font}\n"
        "----- /usr/share/doc/unicode-data/copyright -----\n\n"
        f"{unicode}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default data/emoji)")
    args = parser.parse_args(argv)
    for path in (FONT, EMOJI_TEST, FONT_COPYRIGHT, UNICODE_COPYRIGHT):
        if not path.exists():
            sys.exit(f"{path} is missing: apt-get install -y fonts-noto-color-emoji unicode-data")
    if not features.check("raqm"):
        sys.exit("Pillow was built without raqm: emoji sequences (ZWJ, flags) cannot be shaped")
    start = time.perf_counter()

    # 1. the list
    entries = read_emoji_test(EMOJI_TEST)
    font = ImageFont.truetype(str(FONT), RENDER_SIZE, layout_engine=ImageFont.Layout.RAQM)

    # 2-3. render, keep what the font draws as one glyph
    kept, images, missing = [], [], []
    for e in entries:
        img = render(font, e.text)
        if img is None:
            missing.append(e)
        else:
            kept.append(e)
            images.append(np.asarray(img, dtype=np.uint8))
    images_arr = np.stack(images)  # (N, 64, 64, 3) uint8

    # 4. split
    names = [e.name for e in kept]
    if len(set(names)) != len(names):
        raise ValueError("duplicate emoji names: the name-hash split would not be well defined")
    captions = [clean_name(n) for n in names]
    splits = [split_of(n) for n in names]

    # 5. write
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = {
        "images": images_arr,
        "codepoints": np.array([e.codepoints for e in kept]),
        "names": np.array(names),
        "captions": np.array(captions),
        "groups": np.array([e.group for e in kept]),
        "subgroups": np.array([e.subgroup for e in kept]),
        "emoji_versions": np.array([e.version for e in kept]),
        "splits": np.array(splits),
    }
    write_npz(args.out / "emoji.npz", arrays)
    header = "index\tcodepoints\temoji\tname\tcaption\tgroup\tsubgroup\temoji_version\tsplit\n"
    rows = [
        f"{i}\t{e.codepoints}\t{e.text}\t{e.name}\t{c}\t{e.group}\t{e.subgroup}\t{e.version}\t{s}\n"
        for i, (e, c, s) in enumerate(zip(kept, captions, splits))
    ]
    (args.out / "emoji.tsv").write_text(header + "".join(rows), encoding="utf-8")
    (args.out / "LICENSE-emoji.txt").write_text(licence_text(), encoding="utf-8")

    shipped = sorted(p for p in args.out.iterdir() if p.is_file() and p.name != "MANIFEST.json")
    counts = {s: splits.count(s) for s in ("train", "val", "test")}
    manifest = {
        "dataset": "emoji",
        "count": len(kept),
        "splits": counts,
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "image_size": IMAGE_SIZE,
        "background_rgb": list(BACKGROUND),
        "render_size_px": RENDER_SIZE,
        "candidates": len(entries),
        "not_rendered_by_font": [f"{e.codepoints} {e.name}" for e in missing],
        "sources": {
            "font": {"path": str(FONT), "package": "fonts-noto-color-emoji 2.042-0+deb12u1",
                     "sha256": sha256_file(FONT)},
            "emoji_test": {"path": str(EMOJI_TEST), "package": "unicode-data 15.0.0-1",
                           "sha256": sha256_file(EMOJI_TEST)},
        },
        "built_with": {"pillow": Image.__version__, "numpy": np.__version__,
                       "freetype2": features.version("freetype2"), "raqm": features.version("raqm")},
        "rebuild": "apt-get install -y fonts-noto-color-emoji unicode-data && python scripts/build_emoji.py",
        "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in shipped},
    }
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"{len(kept)} emoji rendered ({len(missing)} of {len(entries)} candidates not in the font); "
          f"splits {counts}; {total / 1e6:.2f} MB in {args.out}; "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
