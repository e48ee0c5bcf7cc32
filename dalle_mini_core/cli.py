"""The ``dalle-mini`` command: the course's front door outside the notebooks.

    dalle-mini demo                 the main job (see README): pictures into runs/demo/
    dalle-mini train all --mode gpu train every stage of the shapes pipeline
    dalle-mini eval shapes --json F what the trained CLIP and prior know, measured
    dalle-mini bench unet --json F  U-Net speed against peer implementations
    dalle-mini info                 versions, device and run mode

Each sub-command is a small function; the heavy imports happen inside it so that
``dalle-mini --help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    from .device import describe

    for key, value in describe().items():
        print(f"{key:>12}: {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Render a preview of the datasets and of the forward noising process."""
    import torch

    from .data.emoji import EmojiDataset
    from .data.shapes import ShapesDataset
    from .paths import runs_dir
    from .schedule import NoiseSchedule
    from .viz import save_grid

    out = Path(args.out) if args.out else runs_dir() / "demo"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    shapes = ShapesDataset(split="train", length=16, image_size=64, seed=args.seed)
    items = [shapes[i] for i in range(len(shapes))]
    shapes_png = save_grid(torch.stack([img for img, _ in items]), out / "shapes.png", nrow=8, scale=2)
    (out / "shapes_captions.txt").write_text("\n".join(c for _, c in items) + "\n")

    emoji = EmojiDataset(split="train", image_size=64)
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(emoji), generator=gen)[:16].tolist()
    e_items = [emoji[i] for i in idx]
    emoji_png = save_grid(torch.stack([img for img, _ in e_items]), out / "emoji.png", nrow=8, scale=2)
    (out / "emoji_captions.txt").write_text("\n".join(c for _, c in e_items) + "\n")

    # forward process: one image per row, noised at ten evenly spaced t, for both schedules
    rows = []
    x0 = torch.stack([items[0][0], e_items[0][0]])
    ts = torch.linspace(0, 999, 10).long()
    noise = torch.randn(x0.shape, generator=gen)
    for kind in ("linear", "cosine"):
        sched = NoiseSchedule.make(kind, 1000)
        for img, eps in zip(x0, noise):
            xt = sched.q_sample(img.expand(len(ts), -1, -1, -1), ts, noise=eps.expand(len(ts), -1, -1, -1))
            rows.append(xt)
    noising_png = save_grid(torch.cat(rows), out / "noising.png", nrow=len(ts), scale=2)

    # the reverse process: the shipped unconditional shapes denoiser draws from pure noise
    samples_png = _demo_samples(out / "samples.png", seed=args.seed)

    print(f"dalle-mini demo: wrote {len(items)} shapes, {len(e_items)} emoji and the noising process")
    print(f"  {shapes_png}\n  {emoji_png}\n  {noising_png}  (rows: linear shapes, linear emoji, cosine shapes, cosine emoji; t = 0 … 999)")
    if samples_png is not None:
        print(f"  {samples_png}  (16 pictures drawn from noise by the shipped denoiser, DDIM 25 steps)")
    print(f"  captions beside them in {out}/*_captions.txt ({time.perf_counter() - t0:.1f} s)")
    return 0


def _parse_budgets(text: str, stages: tuple[str, ...]) -> dict[str, float]:
    """``"120"`` (every stage) or ``"clip=80,decoder=220"`` → {stage: seconds}."""
    try:
        if "=" not in text:
            return {s: float(text) for s in stages}
        pairs = (item.split("=", 1) for item in text.split(","))
        budgets = {k.strip(): float(v) for k, v in pairs}
    except ValueError:
        raise ValueError(f"--budget/--steps must be a number ('120') or stage=number pairs ('clip=80,decoder=220'), got {text!r}")
    unknown = set(budgets) - set(stages)
    if unknown:
        raise ValueError(f"--budget/--steps name stages that are not being trained: {sorted(unknown)}")
    return budgets


def _cmd_train(args: argparse.Namespace) -> int:
    """Train stages of the shapes pipeline (every stage with ``all``) into --out."""
    from .paths import runs_dir
    from .stages import STAGES, train_all

    stages = STAGES if args.stage == "all" else (args.stage,)
    budgets = _parse_budgets(args.budget, stages) if args.budget else None
    out = Path(args.out) if args.out else runs_dir() / "weights"
    caps = {k: int(v) for k, v in _parse_budgets(args.steps, stages).items()} if args.steps else None
    report = train_all(mode=args.mode, out_dir=out, stages=stages, budgets=budgets, max_steps=caps,
                       bank_size=args.bank, seed=args.seed)
    print(f"dalle-mini train: wrote {', '.join('shapes_' + s for s in stages)} to {out} in {report['seconds']} s")
    return 0


def _demo_samples(path: Path, seed: int) -> Path | None:
    """16 unconditional shapes samples from the shipped weights (None, with a note, if absent)."""
    import torch

    from .checkpoints import load_pretrained
    from .device import get_device
    from .diffusion import Denoiser
    from .sampling import ddim_sample
    from .schedule import NoiseSchedule
    from .viz import save_grid

    try:
        net = load_pretrained("shapes_uncond", device=get_device()).eval()
    except FileNotFoundError as exc:
        print(f"  (no unconditional samples: {exc})")
        return None
    model = Denoiser(net, NoiseSchedule.make("cosine", 1000), prediction="eps").to(get_device())
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(16, 3, 32, 32, generator=gen)
    x0 = ddim_sample(model, x_T.to(get_device()), model.schedule.respace(25).to(get_device()), generator=gen)
    return save_grid(x0.cpu(), path, nrow=8, scale=4)


def _cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the trained stages of a dataset's pipeline; print and optionally save JSON."""
    from .evaluate import evaluate

    report = evaluate(args.dataset, weights=args.weights, n=args.n, seed=args.seed, captions=not args.no_captions,
                      n_prompts=args.prompts, n_per_prompt=args.per_prompt)
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
        print(f"wrote {args.json}")
    print(text)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_benchmark

    result = run_benchmark(configs=tuple(args.configs), repeats=args.repeats, json_path=args.json,
                           threads=args.threads)
    print(format_table(result))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dalle-mini", description="DALL·E 2 (unCLIP) from scratch: the course's command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, device and run mode")
    p.set_defaults(fn=_cmd_info)

    p = sub.add_parser("demo", help="the main job: write pictures to runs/demo/")
    p.add_argument("--out", help="output folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser("train", help="train the shapes pipeline's stages (clip, prior, decoder, upsampler)")
    p.add_argument("stage", choices=["all", "clip", "prior", "decoder", "upsampler"])
    p.add_argument("--mode", choices=["smoke", "cpu", "gpu"], help="recipe sizes (default: the run mode)")
    p.add_argument("--out", help="folder for the weights (default runs/weights; data/weights ships)")
    p.add_argument("--budget", help="wall-clock seconds per stage, '120' or 'clip=80,decoder=220' (steps are fitted to it)")
    p.add_argument("--steps", help="step caps overriding the recipes, '5000' or 'clip=3000,decoder=20000'")
    p.add_argument("--bank", type=int, help="scenes rendered once and sampled from (default by mode)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("eval", help="measure the trained stages (CLIP retrieval, prior vs baselines)")
    p.add_argument("dataset", choices=["shapes", "emoji"])
    p.add_argument("--weights", help="folder with <dataset>_clip / <dataset>_prior (default: shipped data/weights)")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--n", type=int, help="samples per measurement (default 200; 16 in smoke mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, help="caption accuracy: prompts per kind, seen and held out (default 54)")
    p.add_argument("--per-prompt", type=int, default=1, help="caption accuracy: images per prompt (default 1)")
    p.add_argument("--no-captions", action="store_true", help="skip the caption-accuracy section (it generates images)")
    p.set_defaults(fn=_cmd_eval)

    p = sub.add_parser("bench", help="speed benchmarks")
    p.add_argument("what", choices=["unet"])
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--configs", nargs="+", default=["ref32"], choices=["ref32", "ref64"])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per model (medians are reported)")
    p.add_argument("--threads", type=int, help="torch threads (1 is steadier on a shared CPU)")
    p.set_defaults(fn=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dalle-mini {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
