"""Seconds per picture of the shipped shapes pipeline: old and new defaults side by side, per stage.

    python benchmarks/bench_generate.py [--threads 1] [--repeats 3] [--n 8] [--json FILE] [--variants]
        [--candidate decoder_steps=8 ...]

Times `UnCLIP.generate` (CLIP text encoder → prior → decoder → upsampler, 64×64 output) on one
prompt × `n` pictures, after one warm-up call per setting; each stage is timed inside the same
calls (the pipeline's stage methods are wrapped with a timer). Both wall time and the process's
CPU time are recorded: with one math thread, CPU time is what a picture costs one core, and it
stays steady when other jobs share the machine (wall time does not). The settings are interleaved
within each repeat and the medians reported, with each setting's time as a ratio of the old
defaults' (measured in the same run, so a busy machine slows both alike). "new settings,
contiguous" separates the new sampler settings from the channels-last weights that
`UnCLIP.from_pretrained` now uses on a CPU ("new defaults" = both). ``--variants [names]`` adds
rows for what PyTorch offers on the CPU at the new defaults: ``torch.inference_mode`` around the
call, channels-last memory format for the U-Nets, and ``torch.compile`` of the U-Nets (its
compile time is reported separately and not counted per picture).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

#: Today's defaults before the sampler sweep (decoder 25 DDIM steps η = 0, upsampler 10, prior 50).
OLD_DEFAULTS = {"prior_steps": 50, "prior_guidance": 2.0, "decoder_steps": 25, "decoder_guidance": 3.0,
                "upsampler_steps": 10, "prior_sampler": "ddim", "decoder_sampler": "ddim",
                "decoder_sampler_options": {"eta": 0.0}, "upsampler_sampler": "ddim",
                "upsampler_sampler_options": {"eta": 0.0}}
STAGES = ("text", "prior", "decoder", "upsampler")
VARIANTS = ("inference_mode", "channels_last", "compile")


class StageTimer:
    """Wraps the pipeline's stage methods on the instance; `seconds[stage]` accumulates their time.

    `seconds` is wall-clock time; `cpu_seconds` is the process's CPU time (`time.process_time`),
    which on a machine shared with other jobs is far steadier than wall time: with one math
    thread it is the time the picture costs one core, whatever else is running.
    """

    def __init__(self, pipe) -> None:
        self.seconds = {s: 0.0 for s in STAGES}
        self.cpu_seconds = {s: 0.0 for s in STAGES}
        for stage, obj, name in (("text", pipe.clip, "encode_text"), ("prior", pipe.prior, "sample_best_of"),
                                 ("decoder", pipe.decoder, "sample"), ("upsampler", pipe.upsampler, "sample")):
            setattr(obj, name, self._wrap(stage, getattr(obj, name)))

    def _wrap(self, stage, fn):
        def timed(*args, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t
                self.cpu_seconds[stage] += time.process_time() - c

        return timed

    def reset(self) -> None:
        self.seconds = {s: 0.0 for s in STAGES}
        self.cpu_seconds = {s: 0.0 for s in STAGES}


def with_settings(base: dict, items: list[str], option: str) -> dict:
    """`base` with each ``KEY=VALUE`` of `items` applied (VALUE read as JSON when it looks like a number,
    list or dict); a key not in `base`, or an empty value, stops with a one-line message naming `option`."""
    out = dict(base)
    for item in items:
        key, _, value = item.partition("=")
        if key not in base or not value:
            raise SystemExit(f"{option} {item!r}: expected KEY=VALUE with KEY one of {', '.join(base)}")
        out[key] = json.loads(value) if value[:1] in "0123456789-{[\"" else value
    return out


def _channels_last(pipe) -> None:
    import torch

    for part in (pipe.decoder, pipe.upsampler):
        part.to(memory_format=torch.channels_last)


def _compile(pipe) -> float:
    import torch

    t = time.perf_counter()
    for part in (pipe.decoder, pipe.upsampler):
        part.net = torch.compile(part.net, dynamic=False)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    import torch

    from dalle_mini_core.defaults import GENERATE_DEFAULTS
    from dalle_mini_core.device import get_device
    from dalle_mini_core.pipeline import UnCLIP
    from dalle_mini_core.runs import machine_description

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--json")
    ap.add_argument("--candidate", nargs="*", default=[], metavar="KEY=VALUE",
                    help="also a row 'candidate': the new defaults with these changes "
                         "(e.g. decoder_steps=8), on the same pipeline as 'new defaults'")
    ap.add_argument("--variants", nargs="*", choices=VARIANTS,
                    help="also these variants of the new defaults (no names: all of them)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = lambda **kw: UnCLIP.from_pretrained("shapes", **kw)  # noqa: E731
    new = dict(GENERATE_DEFAULTS)
    # (label, pipeline, settings, context). "old defaults" is the pipeline as it was before the
    # sampler sweep: old settings, weights in the default (contiguous) memory order.
    rows = [("old defaults", load(channels_last=False), OLD_DEFAULTS, contextlib.nullcontext),
            ("new settings, contiguous", load(channels_last=False), new, contextlib.nullcontext),
            ("new defaults", load(), new, contextlib.nullcontext)]
    if args.candidate:
        candidate = with_settings(new, args.candidate, "--candidate")
        rows.append(("candidate", rows[2][1], candidate, contextlib.nullcontext))
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    compile_seconds = None
    variants = [] if args.variants is None else (args.variants or list(VARIANTS))
    if "inference_mode" in variants:
        rows.append(("new + inference_mode", rows[2][1], new, torch.inference_mode))
    if "channels_last" in variants:  # on a CPU the new defaults already are channels-last
        cl = load(channels_last=False)
        _channels_last(cl)
        rows.append(("new + channels_last", cl, new, contextlib.nullcontext))
    if "compile" in variants:
        comp = load(channels_last=False)
        compile_seconds = _compile(comp)
        rows.append(("new + torch.compile", comp, new, contextlib.nullcontext))
    timers = {}
    prompt = ["a small red circle at the top left"]
    for label, pipe, settings, ctx in rows:  # warm-up (and compilation) outside the timing
        if id(pipe) not in timers:
            timers[id(pipe)] = StageTimer(pipe)
        t = time.perf_counter()
        with ctx():
            pipe.generate(prompt, n_per_prompt=args.n, seed=0, **settings)
        if label == "new + torch.compile":
            compile_seconds = (compile_seconds or 0.0) + time.perf_counter() - t
    times: dict[str, list[float]] = {r[0]: [] for r in rows}
    cpu_times: dict[str, list[float]] = {r[0]: [] for r in rows}
    stage_times: dict[str, list[dict[str, float]]] = {r[0]: [] for r in rows}
    stage_cpu: dict[str, list[dict[str, float]]] = {r[0]: [] for r in rows}
    for r in range(args.repeats):
        for label, pipe, settings, ctx in rows:
            timer = timers[id(pipe)]
            timer.reset()
            t, c = time.perf_counter(), time.process_time()
            with ctx():
                pipe.generate(prompt, n_per_prompt=args.n, seed=r + 1, **settings)
            if get_device().type == "cuda":
                torch.cuda.synchronize()
            times[label].append((time.perf_counter() - t) / args.n)
            cpu_times[label].append((time.process_time() - c) / args.n)
            stage_times[label].append({s: v / args.n for s, v in timer.seconds.items()})
            stage_cpu[label].append({s: v / args.n for s, v in timer.cpu_seconds.items()})
    per_picture = {k: statistics.median(v) for k, v in times.items()}
    per_stage = {k: {s: statistics.median(d[s] for d in v) for s in STAGES} for k, v in stage_times.items()}
    cpu_per_picture = {k: statistics.median(v) for k, v in cpu_times.items()}
    cpu_per_stage = {k: {s: statistics.median(d[s] for d in v) for s in STAGES} for k, v in stage_cpu.items()}
    ref = per_picture["old defaults"]
    cpu_ref = cpu_per_picture["old defaults"]
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"machine": machine_description(), "device": str(get_device()), "threads": torch.get_num_threads(),
              "n": args.n, "repeats": args.repeats, "old_defaults": OLD_DEFAULTS, "new_defaults": new,
              "seconds_per_picture": per_picture, "ratio_to_old": {k: v / ref for k, v in per_picture.items()},
              "seconds_per_picture_by_stage": per_stage,
              "stage_share": {k: {s: v[s] / per_picture[k] for s in STAGES} for k, v in per_stage.items()},
              "cpu_seconds_per_picture": cpu_per_picture,
              "cpu_ratio_to_old": {k: v / cpu_ref for k, v in cpu_per_picture.items()},
              "cpu_seconds_per_picture_by_stage": cpu_per_stage,
              "load_average_at_start": load_at_start, "load_average_at_end": load_avg,
              "candidate": rows[3][2] if args.candidate else None,
              "compile_seconds": compile_seconds, "all": times, "all_cpu": cpu_times}
    print(f"{'setting':24s} {'s/picture':>9s} {'× old':>6s}   " + "  ".join(f"{s:>14s}" for s in STAGES))
    for label, s in per_picture.items():
        shares = "  ".join(f"{per_stage[label][st]:6.3f} s ({per_stage[label][st] / s:4.0%})" for st in STAGES)
        print(f"{label:24s} {s:9.3f} {s / ref:6.2f}   {shares}")
    print("\nCPU time per picture (process_time; steadier than wall time on a shared machine):")
    print(f"{'setting':24s} {'cpu s/pic':>9s} {'× old':>6s}   " + "  ".join(f"{s:>14s}" for s in STAGES))
    for label, s in cpu_per_picture.items():
        shares = "  ".join(f"{cpu_per_stage[label][st]:6.3f} s ({cpu_per_stage[label][st] / s:4.0%})" for st in STAGES)
        print(f"{label:24s} {s:9.3f} {s / cpu_ref:6.2f}   {shares}")
    if compile_seconds is not None:
        print(f"torch.compile: {compile_seconds:.0f} s to compile and warm up (not counted above)")
    print(f"({result['machine']}, {result['threads']} threads, {args.n} pictures per call, median of {args.repeats})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
