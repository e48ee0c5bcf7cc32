"""Caption accuracy of the shapes pipeline across generation settings (guidance, steps, prior on/off).

    python scripts/sweep_generation.py --weights DIR --json sweep.json [--per-prompt 4] [--prompts 54]

Each row runs `evaluation.report.caption_report` (54 seen + 54 held-out one-object prompts, the reader
grades every stated attribute) with `GENERATE_DEFAULTS` changed by the row's settings, on one
loaded pipeline and one seed, so the rows differ only by those settings. Used to choose the
defaults of `dalle-mini generate` and for notebook 10's tables; prints a table at the end.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS: list[tuple[str, dict]] = [
    ("defaults", {}),
    ("no prior (text embedding)", {"use_prior": False}),
    ("decoder guidance 1 (none)", {"decoder_guidance": 1.0}),
    ("decoder guidance 2", {"decoder_guidance": 2.0}),
    ("decoder guidance 5", {"decoder_guidance": 5.0}),
    ("prior guidance 1 (none)", {"prior_guidance": 1.0}),
    ("prior guidance 4", {"prior_guidance": 4.0}),
    ("prior best of 4", {"best_of": 4}),
    ("decoder 50 steps, upsampler 25", {"decoder_steps": 50, "upsampler_steps": 25}),
    ("decoder 25 steps, upsampler 10", {"decoder_steps": 25, "upsampler_steps": 10}),
    ("decoder 10 steps, upsampler 5", {"decoder_steps": 10, "upsampler_steps": 5}),
    ("no upsampler (32×32)", {"upsample": False}),
]


def main(argv: list[str] | None = None) -> int:
    import torch

    from dalle_mini_core.evaluation.report import caption_report
    from dalle_mini_core.pipeline import UnCLIP

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="pipeline weights folder (default: the shipped data/weights)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--prompts", type=int, default=54)
    ap.add_argument("--per-prompt", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", nargs="*", help="row labels to run (default: all)")
    args = ap.parse_args(argv)

    pipe = UnCLIP.from_pretrained("shapes", folder=args.weights)
    rows = [r for r in ROWS if not args.rows or r[0] in args.rows]
    results = []
    for label, kwargs in rows:
        rep = caption_report(pipeline=pipe, n_prompts=args.prompts, n_per_prompt=args.per_prompt, seed=args.seed,
                             generate_kwargs=kwargs)
        results.append({"label": label, **rep})
        print(f"{label:34s} seen {rep['seen']:.3f}  held-out {rep['heldout']:.3f}  "
              f"{rep['seconds_per_image'] * 1e3:.1f} ms/img", flush=True)
        Path(args.json).write_text(json.dumps({"device": str(pipe.device), "torch": torch.__version__,
                                               "rows": results}, indent=2))
    print("\n| settings | seen | held-out | shape | colour | size | position | ms/image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        pa = r["per_attribute"]["seen"]
        print(f"| {r['label']} | {r['seen']:.3f} | {r['heldout']:.3f} | {pa['shape']:.3f} | {pa['colour']:.3f} | "
              f"{pa['size']:.3f} | {pa['position']:.3f} | {r['seconds_per_image'] * 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
