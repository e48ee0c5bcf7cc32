"""The emoji part of ``dalle-mini demo``: pictures from names, variations and an interpolation.

`demo_emoji` draws them from any emoji `UnCLIP` pipeline (the shipped one when it exists; tests
use the smoke weights); `cli._cmd_demo` calls it when ``UnCLIP.from_pretrained("emoji")`` loads.
The two atomic writers are shared with the rest of the demo: a failed write leaves the previous
file intact.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import validate as V


def save_grid_atomic(images: Any, path: Path, **kwargs: Any) -> Path:
    """`viz.save_grid`, written atomically: a failed write leaves the previous picture intact."""
    from .viz import save_grid

    return V.atomic_write(path, lambda tmp: save_grid(images, tmp, **kwargs))


def write_text_atomic(path: Path, text: str) -> Path:
    """`text` into `path`, written atomically."""
    return V.atomic_write(path, lambda tmp: tmp.write_text(text))


#: The demo's emoji, by clean Unicode name (`EmojiDataset.clean_names`): pictures drawn from each
#: name beside the real emoji ("red apple" is a test-split name, never seen in training), the
#: emoji whose variations are drawn, and the two ends of the interpolation (🐱 → 🐶).
#: Few pictures on purpose: `make demo` is the front door. Timed on an untrained pipeline of the
#: gpu recipes' sizes (one thread, CPU seconds, beside the shapes demo's text → image call of 16
#: pictures in the same run): 6 names and 4 variations took 28.8 s, as much as that call (27.8 s);
#: these 4 names and 3 variations 19.5 s (that call: 27.2 s).
DEMO_EMOJI_NAMES: tuple[str, ...] = ("smiling cat with heart-eyes", "octopus", "grinning face", "red apple")
DEMO_EMOJI_VARIATIONS = "octopus"
DEMO_EMOJI_INTERPOLATION: tuple[str, str] = ("cat face", "dog face")
DEMO_EMOJI_N_VARIATIONS = 3
DEMO_EMOJI_FRAMES = 5  # the interpolation's frames, its two ends included (θ = 0 … 1)
#: Sampler steps of the emoji demo: the generation defaults' few steps (smoke mode: 2 each).
DEMO_EMOJI_STEPS: dict[str, int] = {"prior_steps": 10, "decoder_steps": 10, "upsampler_steps": 5}


def demo_emoji(pipe: Any, out: Path, *, seed: int = 0, steps: dict[str, int] | None = None,
               progress: bool | None = False) -> list[str]:
    """The demo's emoji pictures from an emoji `UnCLIP` pipeline into the folder `out`; returns one summary line per PNG.

    * ``emoji_text_to_image.png`` — top row the real emoji of `DEMO_EMOJI_NAMES`, below each the
      picture the pipeline draws from its name (text → prior → decoder → upsampler);
    * ``emoji_variations.png`` — the real `DEMO_EMOJI_VARIATIONS`, then `DEMO_EMOJI_N_VARIATIONS`
      decodings of its CLIP image embedding (fresh noise each);
    * ``emoji_interpolation.png`` — the two emoji of `DEMO_EMOJI_INTERPOLATION` and
      `DEMO_EMOJI_FRAMES` frames from one to the other: slerp of their CLIP image embeddings and
      of their DDIM-inverted noises (`UnCLIP.interpolate`, `dalle_mini_core.latents.slerp`).

    Each PNG has its captions beside it in ``<name>_captions.txt``. `steps` (default
    `DEMO_EMOJI_STEPS`) sets ``prior_steps``, ``decoder_steps`` and ``upsampler_steps``; the same
    pipeline, seed and steps give the same bytes.
    """
    import torch
    import torch.nn.functional as F

    from .data.emoji import EmojiDataset, load_emoji_arrays

    steps = dict(DEMO_EMOJI_STEPS if steps is None else steps)
    unknown = sorted(set(steps) - set(DEMO_EMOJI_STEPS))
    if unknown:
        raise ValueError(f"steps: unknown keys {unknown}; choose from {sorted(DEMO_EMOJI_STEPS)}")
    steps = {k: V.steps(k, steps.get(k, v)) for k, v in DEMO_EMOJI_STEPS.items()}
    seed = V.seed("seed", seed)
    out = V.output_folder("out", out)
    emoji = EmojiDataset("all", image_size=64, templates=False)
    splits = load_emoji_arrays()["splits"]  # (1,870,) "train", "val" or "test", in the same order
    wanted = (*DEMO_EMOJI_NAMES, DEMO_EMOJI_VARIATIONS, *DEMO_EMOJI_INTERPOLATION)
    missing = [n for n in wanted if n not in emoji.clean_names]
    if missing:
        raise ValueError(f"no emoji named {missing} in the dataset")

    def real(name: str) -> torch.Tensor:  # (3, 64, 64) in [-1, 1]
        return emoji.image(emoji.clean_names.index(name))

    def label(name: str) -> str:  # "🐙 octopus (train split)"
        i = emoji.clean_names.index(name)
        char = "".join(chr(int(c, 16)) for c in emoji.codepoints[i].split())
        return f"{char} {name} ({splits[int(emoji.indices[i])]} split)"

    size = pipe.output_size or pipe.image_size

    def at_size(x: torch.Tensor) -> torch.Tensor:  # real emoji at the size of the pictures beside them
        return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")

    lines: list[str] = []
    # 1. text → image from each name, the real emoji above it
    t = time.perf_counter()
    names = list(DEMO_EMOJI_NAMES)
    images = pipe.generate(names, n_per_prompt=1, seed=seed, progress=progress, **steps).float().cpu()
    reals = at_size(torch.stack([real(n) for n in names]))
    path = save_grid_atomic(torch.cat([reals, images]), out / "emoji_text_to_image.png", nrow=len(names),
                            scale=2)
    write_text_atomic(out / "emoji_text_to_image_captions.txt",
                "top row: the real emoji; below each, the picture drawn from its name\n"
                + "".join(f"column {k + 1}: {label(n)}\n" for k, n in enumerate(names)))
    lines.append(f"{path}  (emoji text → image: the real emoji above, the picture drawn from its name below; "
                 f"names in emoji_text_to_image_captions.txt, {time.perf_counter() - t:.1f} s)")

    # 2. variations: one real emoji, then decodings of its CLIP image embedding
    t = time.perf_counter()
    source = real(DEMO_EMOJI_VARIATIONS)
    decode = {k: v for k, v in steps.items() if k != "prior_steps"}
    n_var = DEMO_EMOJI_N_VARIATIONS
    var = pipe.variations(source[None], n=n_var, seed=seed, progress=progress, **decode).float().cpu()
    path = save_grid_atomic(torch.cat([at_size(source[None]), var]), out / "emoji_variations.png",
                            nrow=n_var + 1, scale=2)
    write_text_atomic(out / "emoji_variations_captions.txt",
                f"picture 1: the real emoji {label(DEMO_EMOJI_VARIATIONS)}; pictures 2-{n_var + 1}: decodings of its "
                f"CLIP image embedding, fresh noise each (seed {seed})\n")
    lines.append(f"{path}  (emoji variations: {label(DEMO_EMOJI_VARIATIONS)}, then {n_var} decodings of its CLIP image "
                 f"embedding, {time.perf_counter() - t:.1f} s)")

    # 3. interpolation: slerp between two emoji's image embeddings (and inverted noises)
    t = time.perf_counter()
    a, b = (real(n) for n in DEMO_EMOJI_INTERPOLATION)
    k = DEMO_EMOJI_FRAMES
    frames = pipe.interpolate(a[None], b[None], n_frames=k, seed=seed, progress=progress, **decode).float().cpu()
    path = save_grid_atomic(torch.cat([at_size(a[None]), frames, at_size(b[None])]), out / "emoji_interpolation.png",
                      nrow=k + 2, scale=2)
    first, last = (label(n) for n in DEMO_EMOJI_INTERPOLATION)
    thetas = ", ".join(f"{i / (k - 1):.2g}" for i in range(k))
    write_text_atomic(out / "emoji_interpolation_captions.txt",
                f"picture 1: the real emoji {first}; picture {k + 2}: the real emoji {last}; pictures 2-{k + 1}: "
                f"decodings of slerp(z_A, z_B, θ) from slerp(x_T,A, x_T,B, θ) at θ = {thetas} (CLIP image "
                "embeddings z, DDIM-inverted noises x_T)\n")
    lines.append(f"{path}  (emoji interpolation: {first} → {last}, {k} frames along slerp(z_A, z_B), "
                 f"{time.perf_counter() - t:.1f} s)")
    return lines
