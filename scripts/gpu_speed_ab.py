"""What each GPU speed-up buys, measured side by side on the emoji decoder's training step.

    python scripts/gpu_speed_ab.py --json speed_ab.json [--steps 60] [--mode gpu|smoke]

The decoder is the slowest stage. Its emoji gpu recipe (`recipes.decoder.RECIPES["emoji"]["gpu"]`)
trains through train.py's loop, on a bank of random rows of the emoji bank's shapes (speed does not
depend on the pictures), in one process, one configuration after another:

1. ``baseline``      — the bank on the CPU (each batch copied to the GPU), AdamW without the fused
   kernel, no compile: how the shipped shapes weights were trained;
2. ``bank_on_gpu``   — + the bank moved to the GPU once (`banks.on_device`);
3. ``fused_adamw``   — + the fused AdamW kernel (train.py's default on CUDA);
4. ``compiled``      — + ``torch.compile`` of the loss (``DALLE_MINI_COMPILE=1``);
5. ``batch_512``     — all of the above at twice the batch.

Each row: images/s (median of the logged windows after the first third of the steps, so warm-up and
compilation are left out), ms per step, the seconds the first third took (compilation shows there)
and, with the bf16 matmul peak measured once, the fraction of it. The JSON is rewritten after every
row, so a run cut short keeps the rows it finished. ``--mode smoke`` runs tiny sizes on any device
(a CPU check of the script; there the rows differ only by noise: every switch is CUDA-only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


class _UnfusedAdamW(torch.optim.AdamW):
    """AdamW that ignores ``fused=True`` (the baseline and bank_on_gpu rows)."""

    def __init__(self, *args, fused=None, **kwargs):
        super().__init__(*args, **kwargs)


def run(name: str, *, batch: int, steps: int, on_gpu_bank: bool, fused: bool, compiled: bool, mode: str,
        peak: float | None) -> dict:
    from dalle_mini_core import banks, recipes
    from dalle_mini_core.device import get_device
    from dalle_mini_core.recipes.common import warmup_for
    from dalle_mini_core.runs import speed, train_flops_per_item
    from dalle_mini_core.train import TrainConfig, train

    dev = get_device()
    recipe = recipes.decoder.RECIPES["emoji"][mode]
    n, d = (8465, 96) if mode == "gpu" else (64, 32)
    g = torch.Generator().manual_seed(0)
    bank = {"image": torch.rand(n, 3, 32, 32, generator=g) * 2 - 1,
            "image_emb": torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1),
            "tokens": torch.randint(1, 49407, (n, 32), generator=g)}
    model = recipes.decoder.build(recipe, "emoji", seed=0, embed_dim=d)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    batch_fn = banks.batches(bank, ("image", "image_emb", "tokens"), batch, seed=0,
                             device=dev if on_gpu_bank else torch.device("cpu"))
    flops = train_flops_per_item(model, batch_fn(0), dev)
    config = TrainConfig(steps=steps, lr=recipe.lr, warmup_steps=warmup_for(recipe, steps), schedule="cosine",
                         ema_decay=recipe.ema_decay, ema_warmup=True, log_every=max(1, steps // 12), progress=False,
                         compile=compiled)
    saved = torch.optim.AdamW
    if not fused:
        torch.optim.AdamW = _UnfusedAdamW
    try:
        t0 = time.perf_counter()
        result = train(model, batch_fn, config)
        seconds = time.perf_counter() - t0
    finally:
        torch.optim.AdamW = saved
    rows = [r for r in result.metrics if r["step"] > steps // 3] or result.metrics
    first = [r for r in result.metrics if r["step"] <= steps // 3]
    img_per_s = statistics.median(r["img_per_s"] for r in rows)
    row = {"name": name, "batch": batch, "steps": steps, "img_per_s": round(img_per_s, 1),
           "ms_per_step": round(1e3 * batch / img_per_s, 2), "seconds": round(seconds, 1),
           "first_third_seconds": round(first[-1]["time_s"], 1) if first else None,
           "bank_on_gpu": on_gpu_bank and dev.type == "cuda", "fused_adamw": fused and dev.type == "cuda",
           "compiled": compiled and dev.type == "cuda", "final_loss": result.metrics[-1]["loss"]}
    if peak:
        row.update(speed(img_per_s, flops, peak))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="the report to write (rewritten after each row)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per configuration")
    parser.add_argument("--mode", choices=("gpu", "smoke"), default="gpu", help="recipe sizes (smoke: tiny)")
    args = parser.parse_args(argv)
    from dalle_mini_core.device import describe, get_device
    from dalle_mini_core.runs import bf16_peak_tflops

    dev = get_device()
    base = 256 if args.mode == "gpu" else 8
    peak = bf16_peak_tflops(dev) if dev.type == "cuda" else None
    report = {"device": describe(), "bf16_peak_tflop_per_s": peak, "mode": args.mode, "rows": [],
              "note": "emoji decoder gpu recipe on random rows; medians of the logged windows after a third of the steps"}
    plan = [("baseline", base, False, False, False), ("bank_on_gpu", base, True, False, False),
            ("fused_adamw", base, True, True, False), ("compiled", base, True, True, True),
            ("batch_512", 2 * base, True, True, True)]
    for name, batch, on_gpu, fused, compiled in plan:
        row = run(name, batch=batch, steps=args.steps, on_gpu_bank=on_gpu, fused=fused, compiled=compiled,
                  mode=args.mode, peak=peak)
        report["rows"].append(row)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{name:>12}: batch {batch}, {row['img_per_s']:.0f} images/s, {row['ms_per_step']:.1f} ms per step"
              + (f", {100 * row['fraction_of_bf16_peak']:.2f}% of the bf16 peak" if peak else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
