"""Seconds per update of notebook 10's prompt box, against the settings the box used before.

    python benchmarks/bench_promptbox.py [--threads N] [--repeats 5] [--json FILE]

One update = `promptbox.draw_prompt`: 4 pictures of one prompt through the shipped pipeline and
the figure (what a press of Draw costs, less the browser). Three settings, interleaved, after one
warm-up each, medians of `repeats`: the box's `FAST_STEPS`, the generation defaults' step counts,
and the steps the earlier `interact` widget used (prior 32, decoder 25, upsampler 10), which a
student measured at about 7 s per update in a browser on a quiet 2-core CPU. The ratio (box /
earlier widget) is what carries across machines and loads; CPU seconds are recorded beside wall
seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

BEFORE = {"prior_steps": 32, "decoder_steps": 25, "upsampler_steps": 10}


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dalle_mini_core.pipeline import UnCLIP
    from dalle_mini_core.promptbox import FAST_STEPS, draw_prompt
    from dalle_mini_core.runs import machine_description

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained("shapes")
    from dalle_mini_core.defaults import GENERATE_DEFAULTS

    defaults = {k: GENERATE_DEFAULTS[k] for k in FAST_STEPS}
    settings = {"prompt box (FAST_STEPS)": FAST_STEPS,
                f"generation defaults ({', '.join(f'{k} {v}' for k, v in defaults.items())})": defaults,
                "before (prior 32, decoder 25, upsampler 10)": BEFORE}
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in settings}
    cpu: dict[str, list[float]] = {k: [] for k in settings}  # this process's CPU seconds: survives a loaded machine
    for r in range(-1, args.repeats):  # r = -1: warm-up, not counted
        for label, steps in settings.items():
            c0 = time.process_time()
            result = draw_prompt(pipe, "a small red circle at the top left", seed=max(r, 0), steps=steps)
            plt.close(result.figure)
            if r >= 0:
                times[label].append(result.seconds)
                cpu[label].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    labels = list(settings)
    out = {"machine": machine_description(), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "load_average_start": round(load, 2), "load_average_end": round(os.getloadavg()[0], 2),
           "repeats": args.repeats, "seconds_per_update": med, "cpu_seconds_per_update": med_cpu,
           "ratio": med[labels[0]] / med[labels[-1]], "all": times, "all_cpu": cpu}
    for label, s in med.items():
        print(f"{label:46s} {s:6.2f} s per update, {med_cpu[label]:6.2f} CPU s (medians of {args.repeats})")
    print(f"ratio {out['ratio']:.2f}; {out['threads']} threads on {out['cpus']} cores, load average "
          f"{out['load_average_start']} → {out['load_average_end']} ({out['machine']})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
