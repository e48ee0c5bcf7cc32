"""The ``dalle-mini`` command: the course's front door outside the notebooks.

    dalle-mini demo                 the main job (see README): pictures into runs/demo/
    dalle-mini generate "a small red circle at the top left" --n 8 --out grid.png
    dalle-mini train all --mode gpu train every stage of a pipeline (--dataset shapes|emoji)
    dalle-mini eval shapes --json F what the trained CLIP and prior know, measured
    dalle-mini bench unet --json F  U-Net speed against peer implementations
    dalle-mini info                 versions, device and run mode

    dalle-mini --version            the installed version

Each sub-command is a small function; the heavy imports happen inside it so that
``dalle-mini --help`` answers at once. Every option is checked before any work, by the
checkers in `dalle_mini_core.validate` (the same ones the Python API uses); a bad value, a
damaged weights file or a full disk ends with one line ``dalle-mini CMD: error: ...`` and exit
code 2, never a traceback (``DALLE_MINI_DEBUG=1`` shows the traceback). Pictures are written
atomically. ``generate`` and ``demo`` show a progress bar per stage on stderr when it is a
terminal (``--quiet``: none).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from . import validate as V
from .demo_emoji import demo_emoji  # the demo's emoji part
from .demo_emoji import save_grid_atomic as _save_grid
from .demo_emoji import write_text_atomic as _write_text
from .options import DATASETS, RUN_MODES, STAGES

__all__ = ["main", "demo_emoji"]

MAX_EVAL_N = 2000  # eval --n: 10x the default; 10**8 ran for minutes, then ran out of memory
MAX_PER_PROMPT = 16  # eval --per-prompt


def _progress(args: argparse.Namespace) -> bool | None:
    """--quiet: no bars; otherwise bars when stderr is a terminal (None)."""
    return False if getattr(args, "quiet", False) else None


def _cmd_info(args: argparse.Namespace) -> int:
    from .device import describe

    for key, value in describe().items():
        print(f"{key:>12}: {value}")
    return 0


DEMO_PROMPTS: tuple[str, ...] = (
    "a small red circle at the top left",
    "a large blue square at the centre",
    "a small yellow triangle at the bottom right",
    "a large purple triangle at the top right",  # purple triangle: never seen in training
)

def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job: text → images with the shipped unCLIP weights, then variations and an
    interpolation (and the same on emoji when its weights ship: `demo_emoji`); below them the
    datasets, the noising process and unconditional samples."""
    import torch

    from .data.emoji import EmojiDataset
    from .data.shapes import ShapesDataset
    from .device import run_mode
    from .paths import runs_dir
    from .schedule import NoiseSchedule

    seed = V.seed("--seed", args.seed)
    out = V.output_folder("--out", args.out if args.out is not None else runs_dir() / "demo")
    progress = _progress(args)
    t0 = time.perf_counter()
    lines: list[str] = []
    # everything that is read from disk is read (and checked) first, before any picture is drawn
    emoji = EmojiDataset(split="train", image_size=64)
    uncond = _load_uncond()

    # 1. text → image: the shipped shapes pipeline (CLIP → prior → decoder → upsampler)
    shapes64 = ShapesDataset(split="test", length=2, image_size=64, num_objects=1, seed=seed)
    from .pipeline import UnCLIP

    try:
        pipe = UnCLIP.from_pretrained("shapes")
    except FileNotFoundError as exc:
        print(f"  (no text-to-image gallery: {exc})")
        pipe = None
    # the emoji pipeline, when its weights ship (`demo_emoji` draws its pictures after the shapes ones)
    try:
        emoji_pipe = UnCLIP.from_pretrained("emoji")
        emoji_note = None
    except FileNotFoundError as exc:
        emoji_pipe, emoji_note = None, f"(no emoji pictures: {exc})"
    fast = {"decoder_steps": 2, "upsampler_steps": 2, "prior_steps": 2} if run_mode() == "smoke" else {}
    if pipe is not None:
        t = time.perf_counter()
        images = pipe.generate(list(DEMO_PROMPTS), n_per_prompt=4, seed=seed, progress=progress, **fast)
        gallery = _save_grid(images.cpu(), out / "text_to_image.png", nrow=4, scale=2)
        _write_text(out / "text_to_image_prompts.txt", "\n".join(DEMO_PROMPTS) + "\n")
        lines.append(f"{gallery}  (text → image: one row per prompt in text_to_image_prompts.txt, "
                     f"{time.perf_counter() - t:.1f} s; the last row's colour–shape pair was never in training)")
        # variations: the first column is a real test image, the rest share its CLIP embedding
        real_a, real_b = shapes64[0][0], shapes64[1][0]
        t = time.perf_counter()
        var = pipe.variations(real_a[None], n=4, seed=seed, progress=progress,
                              **{k: v for k, v in fast.items() if k != "prior_steps"})
        variations = _save_grid(torch.cat([real_a[None], var.cpu()]), out / "variations.png", nrow=5, scale=2)
        lines.append(f"{variations}  (variations: a real image, then 4 decodings of its CLIP embedding, "
                     f"{time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()
        steps = {"decoder_steps": 2, "upsampler_steps": 2} if fast else {}
        frames = pipe.interpolate(real_a[None], real_b[None], n_frames=5, seed=seed, progress=progress, **steps)
        interp = _save_grid(torch.cat([real_a[None], frames.cpu(), real_b[None]]), out / "interpolation.png", nrow=7,
                           scale=2)
        lines.append(f"{interp}  (interpolation: image A, 5 frames along slerp(z_A, z_B), image B, "
                     f"{time.perf_counter() - t:.1f} s)")

    # 1b. the same on emoji: pictures from names, variations, an interpolation
    if emoji_pipe is not None:
        lines.extend(demo_emoji(emoji_pipe, out, seed=seed, steps=fast or None, progress=progress))
    else:
        lines.append(emoji_note)

    # 2. the datasets
    shapes = ShapesDataset(split="train", length=16, image_size=64, seed=seed)
    items = [shapes[i] for i in range(len(shapes))]
    shapes_png = _save_grid(torch.stack([img for img, _ in items]), out / "shapes.png", nrow=8, scale=2)
    _write_text(out / "shapes_captions.txt", "\n".join(c for _, c in items) + "\n")

    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(emoji), generator=gen)[:16].tolist()
    e_items = [emoji[i] for i in idx]
    emoji_png = _save_grid(torch.stack([img for img, _ in e_items]), out / "emoji.png", nrow=8, scale=2)
    _write_text(out / "emoji_captions.txt", "\n".join(c for _, c in e_items) + "\n")

    # 3. forward process: one image per row, noised at ten evenly spaced t, for both schedules
    rows = []
    x0 = torch.stack([items[0][0], e_items[0][0]])
    ts = torch.linspace(0, 999, 10).long()
    noise = torch.randn(x0.shape, generator=gen)
    for kind in ("linear", "cosine"):
        sched = NoiseSchedule.make(kind, 1000)
        for img, eps in zip(x0, noise):
            xt = sched.q_sample(img.expand(len(ts), -1, -1, -1), ts, noise=eps.expand(len(ts), -1, -1, -1))
            rows.append(xt)
    noising_png = _save_grid(torch.cat(rows), out / "noising.png", nrow=len(ts), scale=2)

    # 4. the reverse process: the shipped unconditional shapes denoiser draws from pure noise
    samples_png = _demo_samples(uncond, out / "samples.png", seed=seed, progress=progress)

    print(f"dalle-mini demo: pictures in {out} ({time.perf_counter() - t0:.1f} s in all)")
    for line in lines:
        print(f"  {line}")
    print(f"  {shapes_png}, {emoji_png}  (the two datasets; captions beside them in *_captions.txt)")
    print(f"  {noising_png}  (rows: linear shapes, linear emoji, cosine shapes, cosine emoji; t = 0 … 999)")
    if samples_png is not None:
        print(f"  {samples_png}  (16 pictures drawn from noise by the shipped unconditional denoiser, DDIM 25 steps)")
    print('  your own prompt: dalle-mini generate "a large green circle at the bottom left" --n 8 --out grid.png')
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    """Text → images with a dataset's unCLIP pipeline (shipped shapes weights, or --weights DIR)."""
    from .paths import runs_dir

    # 1. every option, before any work (the pipeline checks them again against the loaded weights)
    prompts = V.prompts(args.prompts)
    n = V.integer("--n", args.n, maximum=V.MAX_IMAGES)
    if len(prompts) * n > V.MAX_IMAGES:
        raise ValueError(f"{len(prompts)} prompts × --n {n} = {len(prompts) * n} images; at most {V.MAX_IMAGES} per run")
    seed = V.seed("--seed", args.seed)
    settings = dict(prior_steps=V.steps("--prior-steps", args.prior_steps),
                    prior_guidance=V.guidance("--prior-guidance", args.prior_guidance, allow_none=False),
                    decoder_steps=V.steps("--decoder-steps", args.decoder_steps),
                    decoder_guidance=V.guidance("--decoder-guidance", args.decoder_guidance, allow_none=False),
                    upsampler_steps=V.steps("--upsampler-steps", args.upsampler_steps))
    out = V.output_file("--out", args.out if args.out is not None else runs_dir() / "generate.png",
                        (".png", ".jpg", ".jpeg"), what=" (a picture grid)")

    # 2. the work
    import torch

    from .device import get_device
    from .pipeline import UnCLIP

    t0 = time.perf_counter()
    pipe = UnCLIP.from_pretrained(args.dataset, folder=args.weights, upsampler=not args.low_res)
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    images = pipe.generate(prompts, n_per_prompt=n, seed=seed, use_prior=not args.no_prior, progress=_progress(args),
                           **settings)  # (P·n, 3, S, S), rows grouped by prompt
    seconds = time.perf_counter() - t1
    size = images.shape[-1]
    path = _save_grid(images.cpu(), out, nrow=n, scale=max(1, 128 // size))

    # 3. the report (the picture is safe on disk before anything is printed)
    print(f"dalle-mini generate: {images.shape[0]} images of {size}×{size} in {seconds:.1f} s "
          f"({seconds / images.shape[0]:.2f} s per image on {get_device()}, {torch.get_num_threads()} threads; "
          f"weights loaded in {t_load:.1f} s)")
    from .data.attributes import parse_caption

    for i, prompt in enumerate(prompts):
        note = ""
        if args.dataset == "shapes":
            try:
                parse_caption(prompt)
            except ValueError:  # still generated: CLIP's tokenizer reads any text
                note = "  (not one of the training captions' patterns, e.g. 'a small red circle at the top left')"
        print(f"  row {i + 1}: {V.printable(prompt)}{note}")
    print(f"  {path}")
    return 0


_TRAIN_OPTIONS = {"budgets": "--budget", "max_steps": "--steps", "bank_size": "--bank", "seed": "--seed",
                  "out_dir": "--out", "mode": "--mode", "dataset": "--dataset"}


def _parse_whole(text: str, option: str) -> int:
    """A whole number written in digits ('5000'); anything else is refused, naming `option`."""
    t = text.strip()
    digits = t[1:] if t[:1] == "-" else t
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{option} takes a whole number, got {text!r}")
    return int(t)


def _parse_per_stage(text: str, stages: tuple[str, ...], option: str, kind: str) -> dict[str, float] | dict[str, int]:
    """``"120"`` (every stage) or ``"clip=80,decoder=220"`` → {stage: value}; `kind` is "seconds"
    (a number) or "steps" (a whole number). Refuses unknown or repeated stages, naming `option`."""
    example = "'120' or 'clip=80,decoder=220'" if kind == "seconds" else "'5000' or 'clip=3000,decoder=20000'"

    def value(v: str) -> float | int:
        if kind == "steps":
            return _parse_whole(v, option)
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"{option} takes seconds as a number, got {v.strip()!r}") from None

    if not text.strip():
        raise ValueError(f"{option} is empty; give {example}")
    if "=" not in text:
        return {s: value(text) for s in stages}
    out: dict[str, float] = {}
    for item in text.split(","):
        key, sep, v = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{option} takes a number ({example.split(' or ')[0]}) or stage=number pairs "
                             f"({example.split(' or ')[1]}), got {text!r}")
        if key not in ("clip", "prior", "decoder", "upsampler"):
            raise ValueError(f"{option} names an unknown stage {key!r}; stages: clip, prior, decoder, upsampler")
        if key in out:
            raise ValueError(f"{option} names {key} twice")
        out[key] = value(v)
    other = [k for k in out if k not in stages]
    if other:
        raise ValueError(f"{option} names stages that are not being trained: {other} (training: {', '.join(stages)})")
    return out


def _parse_budgets(text: str, stages: tuple[str, ...]) -> dict[str, float]:
    """``"120"`` (every stage) or ``"clip=80,decoder=220"`` → {stage: seconds}."""
    return _parse_per_stage(text, stages, "--budget", "seconds")


def _cmd_train(args: argparse.Namespace) -> int:
    """Train stages of a dataset's pipeline (every stage with ``all``) into --out; resumable."""
    from safetensors import SafetensorError

    from .paths import runs_dir
    from .runs import process_rank, weights_name
    from .stages import train_all
    from .train import TrainingDiverged

    stages = STAGES if args.stage == "all" else (args.stage,)
    budgets = _parse_per_stage(args.budget, stages, "--budget", "seconds") if args.budget is not None else None
    caps = _parse_per_stage(args.steps, stages, "--steps", "steps") if args.steps is not None else None
    bank = _parse_whole(args.bank, "--bank") if args.bank is not None else None
    seed = _parse_whole(args.seed, "--seed")
    out = Path(args.out) if args.out else runs_dir() / "weights"
    try:
        report = train_all(mode=args.mode, out_dir=out, dataset=args.dataset, stages=stages, budgets=budgets, max_steps=caps,
                           bank_size=bank, seed=seed, option_names=_TRAIN_OPTIONS)
    except (OSError, SafetensorError) as exc:  # e.g. the disk filled up while a checkpoint was written
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise ValueError(f"writing to {out} failed ({reason}); what was finished is kept in {out}/train_runs: "
                         "fix the cause and run the same command again to resume") from None
    except TrainingDiverged as exc:
        raise ValueError(str(exc)) from None
    except KeyboardInterrupt:
        if process_rank() == 0:
            print(f"dalle-mini train: interrupted; the work done is kept in {out}/train_runs: run the same command "
                  "again to resume", file=sys.stderr)
        return 130
    if process_rank() == 0:
        print(f"dalle-mini train: {', '.join(weights_name(args.dataset, s) for s in stages)} in {out} ({report['seconds']} s; "
              f"run the same command again after an interruption to resume)")
    return 0


def _load_uncond(folder: Path | None = None) -> Any:
    """The shipped unconditional shapes denoiser (checked against the manifest), as the `Denoiser`
    its JSON describes (schedule kind, timesteps, prediction; `recipes.uncond.schedule_fields`
    fills in the values of files that predate those fields), or None with a note. `folder`
    (tests) reads ``folder/shapes_uncond`` instead of the shipped file."""
    from .checkpoints import load_checkpoint, read_checkpoint_json
    from .device import get_device
    from .paths import data_dir
    from .recipes.uncond import denoiser
    from .weights import load_pretrained

    stem = (folder if folder is not None else data_dir() / "weights") / "shapes_uncond"
    try:
        net = load_pretrained("shapes_uncond", device=get_device()) if folder is None else load_checkpoint(stem)
    except FileNotFoundError as exc:
        print(f"  (no unconditional samples: {exc})")
        return None
    return denoiser(net, read_checkpoint_json(stem).get("extra")).to(get_device()).eval()


def _demo_samples(model: Any, path: Path, seed: int, progress: bool | None = None) -> Path | None:
    """16 unconditional shapes samples from the shipped denoiser (None when it is absent)."""
    if model is None:
        return None
    import torch

    from .device import get_device
    from .pipeline_io import stderr_is_tty
    from .sampling import ddim_sample

    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(16, 3, 32, 32, generator=gen)
    x0 = ddim_sample(model, x_T.to(get_device()), model.schedule.respace(25).to(get_device()), generator=gen,
                     progress=stderr_is_tty() if progress is None else progress)
    return _save_grid(x0.cpu(), path, nrow=8, scale=4)


def _cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the trained stages of a dataset's pipeline; print and optionally save JSON."""
    # every option before any work; 0 is refused, never read as "the default"
    n = None if args.n is None else V.integer("--n", args.n, maximum=MAX_EVAL_N)
    per_prompt = V.integer("--per-prompt", args.per_prompt, maximum=MAX_PER_PROMPT)
    seed = V.seed("--seed", args.seed)
    n_prompts = None
    if args.prompts is not None:
        most = _prompt_count("heldout")
        n_prompts = V.integer("--prompts", args.prompts, maximum=most, why=f" (there are {most} held-out prompts)")
    json_path = None if args.json is None else V.output_file("--json", args.json)

    from .evaluation.report import evaluate

    names = None if args.names is None else V.integer("--names", args.names, maximum=1693)
    report = evaluate(args.dataset, weights=args.weights, n=n, seed=seed, captions=not args.no_captions,
                      n_prompts=n_prompts, n_per_prompt=per_prompt, n_emoji=names)
    from .registry import json_dumps_strict

    text = json_dumps_strict(report, indent=2)  # NaN/inf as null: strict JSON parsers reject a bare NaN
    if json_path is not None:
        _write_text(json_path, text + "\n")
        print(f"wrote {json_path}")
    print(text)
    return 0


def _prompt_count(kind: str) -> int:
    """How many distinct caption-accuracy prompts a kind has (`evaluation.captions.prompt_set`: 54 held out, 270 seen)."""
    from .data.attributes import POSITIONS, SIZES
    from .evaluation.captions import _combinations

    return len(_combinations(kind)) * len(SIZES) * len(POSITIONS)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_benchmark

    result = run_benchmark(configs=tuple(args.configs), repeats=args.repeats, json_path=args.json,
                           threads=args.threads)
    print(format_table(result))
    if args.json:
        print(f"wrote {args.json}")
    return 0


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (argparse's ArgumentDefaultsHelpFormatter, minus the
    "(default: None)" and "(default: False)" that say nothing: those options state their default in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dalle-mini-core")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown (not installed; run `make install`)"


def build_parser() -> argparse.ArgumentParser:
    from .defaults import GENERATE_DEFAULTS as GEN  # no torch import: --help stays instant

    parser = argparse.ArgumentParser(prog="dalle-mini", description="DALL·E 2 (unCLIP) from scratch: the course's command line.",
                                     epilog="Troubleshooting: DALLE_MINI_DATA (the data/ folder), DALLE_MINI_RUNS (where "
                                     "outputs go; default ./runs), DALLE_MINI_DEVICE (cpu, cuda, mps), "
                                     "DALLE_MINI_DEBUG=1 (show tracebacks).", formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"dalle-mini {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, device and run mode", formatter_class=_Help)
    p.set_defaults(fn=_cmd_info)

    p = sub.add_parser("demo", help="the main job: write pictures to runs/demo/", formatter_class=_Help,
                       description="Text to images with the shipped weights, variations, an interpolation (the "
                                   "same on emoji when the emoji weights ship), the two datasets, the noising process "
                                   "and unconditional samples, as PNG files.")
    p.add_argument("--out", help="output folder (default: runs/demo in the working directory, or $DALLE_MINI_RUNS/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw: same seed, same pictures "
                                                       f"(0 … {V.MAX_SEED})")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they show only on a terminal anyway)")
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser("generate", help="text to images with a pipeline (shipped shapes weights, or --weights)",
                       formatter_class=_Help,
                       description="Text to images with an unCLIP pipeline: CLIP text encoder → prior → "
                                   "decoder (32×32) → upsampler (64×64). Writes one grid, one row per prompt. "
                                   "--dataset emoji needs --weights (its weights are not shipped yet).")
    p.add_argument("--dataset", default="shapes", choices=list(DATASETS),
                   help="whose pipeline: shapes (shipped) or emoji (a folder from `dalle-mini train all --dataset emoji`)")
    p.add_argument("prompts", nargs="+", help='one or more captions, e.g. "a small red circle at the top left"')
    p.add_argument("--n", type=int, default=4, help=f"images per prompt (one grid row each; at most {V.MAX_IMAGES} "
                                                    "images per run)")
    p.add_argument("--seed", type=int, default=0, help=f"same seed, same images (0 … {V.MAX_SEED})")
    p.add_argument("--out", help="the picture grid to write, .png or .jpg (default: runs/generate.png in the working "
                                 "directory, or $DALLE_MINI_RUNS/generate.png)")
    p.add_argument("--weights", help="a folder from `dalle-mini train all` or UnCLIP.save_pretrained "
                                     "(default: the shipped data/weights)")
    p.add_argument("--prior-steps", type=int, default=GEN["prior_steps"], help="DDIM steps of the prior (1 … 1000)")
    p.add_argument("--prior-guidance", type=float, default=GEN["prior_guidance"],
                   help=f"prior's classifier-free guidance scale (0: unconditional, 1: conditional, > 1: closer to "
                        f"the text; at most {V.MAX_GUIDANCE:g})")
    p.add_argument("--decoder-steps", type=int, default=GEN["decoder_steps"], help="DDIM steps of the decoder (1 … 1000)")
    p.add_argument("--decoder-guidance", type=float, default=GEN["decoder_guidance"],
                   help=f"decoder's classifier-free guidance scale (0 … {V.MAX_GUIDANCE:g}, as for the prior)")
    p.add_argument("--upsampler-steps", type=int, default=GEN["upsampler_steps"],
                   help="DDIM steps of the 32→64 upsampler (1 … 1000)")
    p.add_argument("--no-prior", action="store_true", help="decode the text embedding itself (the no-prior baseline)")
    p.add_argument("--low-res", action="store_true", help="stop at the decoder's 32×32 (skip the upsampler)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they show only on a terminal anyway)")
    p.set_defaults(fn=_cmd_generate)

    p = sub.add_parser("train", help="train a pipeline's stages (clip, prior, decoder, upsampler)",
                       description="Train stages of a dataset's pipeline into --out as <dataset>_<stage> files. "
                                   "Resumable: after an "
                                   "interruption, run the same command again; finished stages are skipped and the "
                                   "interrupted one resumes from its checkpoint (in OUT/train_runs/).")
    p.add_argument("stage", choices=["all", *STAGES],
                   help="the stage to train, or all four in order (prior and decoder need a CLIP in --out)")
    p.add_argument("--mode", choices=RUN_MODES,
                   help="recipe sizes: smoke (seconds), cpu, gpu (default: the run mode: DALLE_MINI_MODE, else gpu "
                        "with CUDA, else cpu)")
    p.add_argument("--dataset", default="shapes", choices=list(DATASETS),
                   help="the dataset whose pipeline is trained (default: shapes)")
    p.add_argument("--out", help="folder for the weights (default: weights/ in the runs folder, DALLE_MINI_RUNS; "
                                 "data/weights holds the shipped ones)")
    p.add_argument("--budget", help="wall-clock seconds per stage, '120' or 'clip=80,decoder=220'; each stage runs "
                                    "as many steps as fit, at most its recipe's (default: no budget)")
    p.add_argument("--steps", help="step counts overriding the recipes, '5000' or 'clip=3000,decoder=20000' "
                                   "(default: each recipe's)")
    p.add_argument("--bank", help="scenes rendered once and sampled from, at least 1, for every stage "
                                  "(default: each stage's recipe for the dataset and mode)")
    p.add_argument("--seed", default="0", help="seed of every random draw, 0 to 4294967295 (default 0)")
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("eval", help="measure the trained stages (CLIP retrieval, prior vs baselines)", formatter_class=_Help)
    p.add_argument("dataset", choices=DATASETS, help="which pipeline's stages to measure")
    p.add_argument("--weights", help="folder with <dataset>_clip / <dataset>_prior (default: the shipped data/weights)")
    p.add_argument("--json", help="also write the report to this file (default: print it only)")
    p.add_argument("--n", type=int, help=f"samples per measurement, 1 … {MAX_EVAL_N} (default: 200; 16 in smoke mode)")
    p.add_argument("--seed", type=int, default=0, help=f"seed of every random draw (0 … {V.MAX_SEED})")
    p.add_argument("--prompts", type=int, help="caption accuracy: prompts per kind, seen and held out, 1 … 54 "
                                               "(default: 54; 4 in smoke mode)")
    p.add_argument("--per-prompt", type=int, default=1, help=f"caption accuracy: images per prompt (1 … {MAX_PER_PROMPT})")
    p.add_argument("--names", type=int, help="emoji: train names to draw, 1 … 1693, and min(82, N) test names "
                                             "(default: 100 in cpu mode, 1693 in gpu mode, 6 in smoke mode)")
    p.add_argument("--no-captions", action="store_true", help="skip the sections that generate images (shapes: "
                                                              "caption accuracy; emoji: identity, FID/KID)")
    p.set_defaults(fn=_cmd_eval)

    p = sub.add_parser("bench", help="speed benchmarks", formatter_class=_Help)
    p.add_argument("what", choices=["unet"], help="what to time")
    p.add_argument("--json", help="write the results to this JSON file (default: print only)")
    p.add_argument("--configs", nargs="+", default=["ref32"], choices=["ref32", "ref64"], help="model sizes to time")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per model (medians are reported)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 is steadier on a shared CPU)")
    p.set_defaults(fn=_cmd_bench)
    return parser


def _one_line(exc: BaseException) -> str:
    """An exception as one printable line: its message (its lines joined), with the type when that helps."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if not isinstance(exc, (ValueError, TypeError, OSError, RuntimeError)) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return V.printable(text, limit=1000)


#: Exceptions that mean "this input, file, disk or device cannot be used": exit 2 with one line.
#: Anything else is a bug of ours: one line too, exit 1, and DALLE_MINI_DEBUG=1 shows the traceback.
_EXPECTED: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, RuntimeError, MemoryError)


def _check_environment() -> None:
    """The environment variables the commands read, checked before any work."""
    from .device import run_mode

    if os.environ.get("DALLE_MINI_DEVICE"):
        V.device(os.environ["DALLE_MINI_DEVICE"], name="DALLE_MINI_DEVICE")
    run_mode()  # DALLE_MINI_MODE must be smoke, cpu or gpu


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 a clear error, 1 an internal error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already explained
        return exc.code if isinstance(exc.code, int) else 2
    prefix = f"dalle-mini {args.command}"

    def show_warning(message, category, filename, lineno, file=None, line=None):  # one line, no source excerpt
        print(f"{prefix}: warning: {V.printable(str(message), limit=1000)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            _check_environment()
            return args.fn(args)
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # stdout closed early (`dalle-mini generate ... | head -1`): the files are written
            try:  # no second error when Python flushes stdout at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            return 141  # as if killed by SIGPIPE, like other Unix tools
        except Exception as exc:
            if os.environ.get("DALLE_MINI_DEBUG", "") not in ("", "0"):
                raise
            expected = isinstance(exc, _EXPECTED) or type(exc).__name__ == "SafetensorError"
            kind = "error" if expected else "internal error (please report it; DALLE_MINI_DEBUG=1 shows the traceback)"
            print(f"{prefix}: {kind}: {_one_line(exc)}", file=sys.stderr)
            return 2 if expected else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
