"""What a training run of the emoji pipeline leaves to look at: loss curves and a grid of samples.

    python scripts/emoji_session_report.py WEIGHTS_DIR OUT_DIR [--seed 0]

* ``OUT_DIR/curves.png`` — each stage's loss (window means from its metrics.csv in
  ``WEIGHTS_DIR/train_runs/emoji/<stage>/run/``) against the step, the learning rate beside it;
* ``OUT_DIR/samples.png`` — four rows of 8: real train emoji, the pipeline's pictures of their
  names (text → prior → decoder → upsampler), real test emoji (names never seen in training),
  the pipeline's pictures of theirs; ``OUT_DIR/samples.txt`` names each column.
* ``OUT_DIR/metrics_<stage>.csv`` — copies of the stages' metrics, to keep with the weights.

scripts/gpu_emoji.sh runs it after training; the run mode (``DALLE_MINI_MODE``) sets the sampler
steps (a handful in smoke mode).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("clip", "prior", "decoder", "upsampler")


def curves(weights: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dalle_mini_core.runlog import plot_losses, read_metrics

    found = {s: weights / "train_runs" / "emoji" / s / "run" / "metrics.csv" for s in STAGES}
    found = {s: p for s, p in found.items() if p.is_file() and read_metrics(p)}
    if not found:
        print(f"no metrics.csv under {weights / 'train_runs' / 'emoji'}: no curves")
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3), dpi=80)
    for ax, (stage, path) in zip(list(axes) if len(found) > 1 else [axes], found.items()):
        plot_losses(path, title=stage, ax=ax)
        shutil.copy(path, out / f"metrics_{stage}.csv")
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    return out / "curves.png"


def samples(weights: Path, out: Path, seed: int) -> Path:
    import torch

    from dalle_mini_core.device import run_mode
    from dalle_mini_core.evaluation.emoji import EMOJI_EVAL_SIZES, draw_emoji, emoji_names
    from dalle_mini_core.pipeline import UnCLIP
    from dalle_mini_core.viz import save_grid

    pipe = UnCLIP.from_pretrained("emoji", folder=weights)
    steps = EMOJI_EVAL_SIZES[run_mode()]["steps"]
    rows, names = [], []
    for split in ("train", "test"):
        chosen = emoji_names(split, 8, seed=seed)
        drawn, _ = draw_emoji(pipe, chosen["names"], "full", seed=seed, upsample=True, settings=steps)
        size = drawn.shape[-1]
        real = chosen["images"] if size == 64 else torch.nn.functional.interpolate(chosen["images"], size=size,
                                                                                   mode="area")
        rows += [real, drawn]
        names.append(f"{split}: " + " | ".join(chosen["names"]))
    path = save_grid(torch.cat(rows), out / "samples.png", nrow=8, scale=2)
    (out / "samples.txt").write_text("rows: real train, generated train, real test, generated test\n"
                                     + "\n".join(names) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="a folder from `dalle-mini train all --dataset emoji`")
    parser.add_argument("out", type=Path, help="where the pictures go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.weights / "emoji_decoder.safetensors").is_file():
        print(f"emoji_session_report: error: no emoji weights in {args.weights}; train them with "
              f"`dalle-mini train all --dataset emoji --out {args.weights}`", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (curves(args.weights, args.out), samples(args.weights, args.out, args.seed)):
        if path is not None:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
