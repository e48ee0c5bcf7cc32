"""Draw the picture at the top of the README with the shipped weights.

    python scripts/readme_picture.py [--out docs/generated_shapes.png] [--n 5] [--seed 0]

Four prompts, `--n` pictures each, through the whole pipeline (CLIP text encoder → prior →
decoder → upsampler) at the default generation settings, on the CPU unless a GPU is there. Each
row is labelled with its prompt; the last prompt is a colour–shape pair held out of training.
The PNG keeps the native 64×64 pixels and a 256-colour palette, so it stays small.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = (
    "a large red circle at the centre",
    "a small blue square at the top left",
    "a large yellow triangle at the bottom right",
    "a large purple triangle at the centre",  # purple triangle: held out of training
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "generated_shapes.png")
    parser.add_argument("--n", type=int, default=5, help="pictures per prompt (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")

    from PIL import Image, ImageDraw

    from dalle_mini_core.data import HELDOUT_COMBINATIONS, parse_caption
    from dalle_mini_core.pipeline import UnCLIP
    from dalle_mini_core.viz import to_uint8

    start = time.perf_counter()
    print(f"generating {len(PROMPTS)} prompts × {args.n} pictures with the shipped weights ...", flush=True)
    pipe = UnCLIP.from_pretrained("shapes")
    images = pipe.generate(list(PROMPTS), n_per_prompt=args.n, seed=args.seed).cpu()  # (P·n, 3, 64, 64)
    pixels = to_uint8(images)  # (P·n, 64, 64, 3)
    size, gap, label = pixels.shape[1], 2, 14
    sheet = Image.new("RGB", (args.n * (size + gap) - gap, len(PROMPTS) * (size + label + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    heldout = {f"{c} {s}" for c, s in HELDOUT_COMBINATIONS}
    for row, prompt in enumerate(PROMPTS):
        obj = parse_caption(prompt).objects[0]
        note = "  (never seen in training)" if f"{obj['colour']} {obj['shape']}" in heldout else ""
        top = row * (size + label + gap)
        draw.text((1, top + 1), f'"{prompt}"{note}', fill=(40, 40, 40))
        for col in range(args.n):
            sheet.paste(Image.fromarray(pixels[row * args.n + col]), (col * (size + gap), top + label))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
