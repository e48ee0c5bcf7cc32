"""Seconds per picture of the shipped shapes pipeline on this machine, at a few step settings.

    python benchmarks/bench_generate.py [--threads 1] [--repeats 3] [--n 8] [--json FILE]

Times `UnCLIP.generate` (CLIP text encoder → prior → decoder → upsampler, 64×64 output) on one
prompt × `n` pictures, after one warm-up call; medians of `repeats`, the settings interleaved.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

SETTINGS = {
    "defaults (decoder 25, upsampler 10)": {},
    "decoder 50, upsampler 25": {"decoder_steps": 50, "upsampler_steps": 25},
    "decoder 10, upsampler 5": {"decoder_steps": 10, "upsampler_steps": 5},
}


def main(argv: list[str] | None = None) -> int:
    import torch

    from dalle_mini_core.device import get_device
    from dalle_mini_core.pipeline import UnCLIP
    from dalle_mini_core.stages import machine_description

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained("shapes")
    prompt = ["a small red circle at the top left"]
    pipe.generate(prompt, n_per_prompt=2, seed=0)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for r in range(args.repeats):
        for label, kwargs in SETTINGS.items():
            if get_device().type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            pipe.generate(prompt, n_per_prompt=args.n, seed=r, **kwargs)
            if get_device().type == "cuda":
                torch.cuda.synchronize()
            times[label].append((time.perf_counter() - t) / args.n)
    result = {"machine": machine_description(), "device": str(get_device()), "threads": torch.get_num_threads(),
              "n": args.n, "repeats": args.repeats,
              "seconds_per_picture": {k: statistics.median(v) for k, v in times.items()}, "all": times}
    for label, s in result["seconds_per_picture"].items():
        print(f"{label:38s} {s:6.2f} s per picture")
    print(f"({result['machine']}, {result['threads']} threads, {args.n} pictures per call, median of {args.repeats})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
