"""Why DPM-Solver++(2M) leaves the shipped upsampler's 64×64 pictures rough: a measured experiment.

    python scripts/upsampler_dpmpp_study.py --json runs/upsampler_dpmpp_study_cpu.json [--prompts 16]

The sampler sweep (``sweep_samplers_cpu.json``) found the v-prediction upsampler clean in 32/32
pictures with DDIM at 5 steps but in 0–3/32 with DPM-Solver++(2M) at 3 or 5 steps, although the
reader still read every picture right. The two differ in two ways at once: the LEVELS they walk
(DDIM: evenly spaced timesteps; DPM-Solver++: the Karras et al. 2022 spacing, ρ = 7) and the
UPDATE (DDIM is first order; DPM-Solver++(2M) extrapolates x̂₀ linearly in λ = log(α/σ) from the
last two levels: D = (1 + 1/(2r)) x̂₀(s) − 1/(2r) x̂₀(prev)). This script separates them on the
same inputs (the sweep's clean decoder pictures, "ddim 10 eta 1", from the same seeds) and the
same starting noise:

* each update on each spacing (DDIM on the Karras levels = the first-order solver there);
* DPM-Solver++(2M) with a first-order step into the last level ("lower order final", as the
  DPM-Solver authors' multistep code does below 10 steps);
* DPM-Solver++(2M) at 10 and 20 Karras steps (does the roughness shrink as the solver converges?);
* per step: the background roughness of the model's x̂₀ and of the extrapolated D the update
  uses, so one sees whether the roughness is in the model's prediction or made by the update.

Roughness is `metrics.background_roughness` (clean: ≤ `metrics.CLEAN_THRESHOLD`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def dpmpp_2m_variant(model, x_T, schedule, *, model_kwargs, prediction, lower_order_final=False, trace=None):
    """DPM-Solver++(2M) as `sampling.dpmpp_2m_sample` (clip_x0 on), optionally first order into the last level.

    `trace` (a list) receives, per step, (σ_s, σ_u, x̂₀, D) with D the data estimate the update used.
    """
    from dalle_mini_core.sampling import _levels, _predict_at

    abar = _levels(schedule)
    t_map = schedule.timestep_map.cpu()
    x, x0_prev, h_prev = x_T, None, 0.0
    n = schedule.num_timesteps
    for j in range(n - 1, -1, -1):
        a_s = float(abar[j])
        x0, _ = _predict_at(model, x, int(t_map[j]), a_s, model_kwargs, prediction, True)
        if j == 0:
            if trace is not None:
                trace.append((math.sqrt((1 - a_s) / a_s), 0.0, x0, x0))
            return x0
        a_u = float(abar[j - 1])
        h = 0.5 * math.log(a_u / (1 - a_u)) - 0.5 * math.log(a_s / (1 - a_s))
        if x0_prev is None or (lower_order_final and j == 1):
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        if trace is not None:
            trace.append((math.sqrt((1 - a_s) / a_s), math.sqrt((1 - a_u) / a_u), x0, d))
        x = math.sqrt((1 - a_u) / (1 - a_s)) * x - math.sqrt(a_u) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def main(argv: list[str] | None = None) -> int:
    import torch

    from dalle_mini_core.defaults import GENERATE_DEFAULTS as D
    from dalle_mini_core.metrics import CLEAN_THRESHOLD, background_roughness, prompt_set
    from dalle_mini_core.pipeline import UnCLIP
    from dalle_mini_core.sampling import dpmpp_2m_sample, karras_timesteps, run_sampler, sampling_schedule
    from dalle_mini_core.stages import machine_description

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per kind (seen, held out)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start, load_before = time.time(), os.getloadavg()
    pipe = UnCLIP.from_pretrained("shapes")
    up = pipe.upsampler
    prompts = prompt_set("seen", args.prompts, args.seed) + prompt_set("heldout", args.prompts, args.seed)
    report = {"command": "python scripts/upsampler_dpmpp_study.py " + " ".join(sys.argv[1:]),
              "machine": machine_description(), "threads": 1, "torch": torch.__version__,
              "prompts_per_kind": args.prompts, "seed": args.seed, "clean_threshold": CLEAN_THRESHOLD,
              "upsampler": {"prediction": up.prediction, "schedule": up.config.schedule,
                            "num_timesteps": up.config.num_timesteps,
                            "noise_aug_max_t": up.config.noise_aug_max_t,
                            "noise_aug_sample_t": up.config.noise_aug_sample_t},
              "input": "decoder DDIM eta=1, 10 steps, from the prior's DDIM embeddings (sweep_samplers.py's "
                       "'ddim 10 eta 1' row, same seeds: prior seed, decoder seed+1, upsampler seed+2)",
              "rows": [], "traces": {}}

    def rough_stats(x):
        r = background_roughness(x.clamp(-1, 1))
        return {"clean": int((r <= CLEAN_THRESHOLD).sum()), "n": int(r.numel()),
                "roughness_median": round(float(r.median()), 4), "roughness_mean": round(float(r.mean()), 4)}

    with torch.inference_mode():
        tokens = pipe.clip.tokenize(prompts)
        text_emb = pipe.clip.encode_text(tokens)
        g = torch.Generator().manual_seed(args.seed)
        z = pipe.prior.sample(text_emb, tokens, steps=D["prior_steps"], guidance_scale=D["prior_guidance"],
                              sampler="ddim", generator=g)
        z = torch.nn.functional.normalize(z.float(), dim=-1)
        g = torch.Generator().manual_seed(args.seed + 1)
        low = pipe.decoder.sample(z, steps=10, guidance_scale=D["decoder_guidance"], sampler="ddim",
                                  sampler_options={"eta": 1.0}, generator=g).clamp(-1, 1)
        report["input_roughness"] = rough_stats(torch.nn.functional.interpolate(low, scale_factor=2, mode="bilinear"))
        report["input_roughness_32"] = rough_stats(low)
        cond = {"low_res": up.upsample(low)}
        g = torch.Generator().manual_seed(args.seed + 2)
        x_T = torch.randn(cond["low_res"].shape, generator=g)
        common = dict(model_kwargs=cond, prediction=up.prediction)

        def row(label, fn, steps, spacing, levels, **extra):
            t = time.process_time()
            out = fn().clamp(-1, 1)
            sec = (time.process_time() - t) / len(prompts)
            r = {"label": label, "steps": steps, "spacing": spacing, "timesteps": levels,
                 "cpu_seconds_per_picture": round(sec, 4), **rough_stats(out), **extra}
            report["rows"].append(r)
            print(f"{label:50s} clean {r['clean']:2d}/{r['n']}  median roughness {r['roughness_median']:.4f}", flush=True)
            Path(args.json).write_text(json.dumps(report, indent=2))
            return out

        levels = {(n, s): sampling_schedule(up.schedule, n, s) for n in (5, 10, 20) for s in ("uniform", "karras")}

        def tm(n, s):
            return levels[(n, s)].timestep_map.tolist()

        ref = None
        for sampler, n, s in (("ddim", 5, "uniform"), ("dpmpp_2m", 5, "karras"), ("dpmpp_2m", 5, "uniform"),
                              ("ddim", 5, "karras"), ("dpmpp_2m", 10, "karras"), ("ddim", 10, "karras"),
                              ("dpmpp_2m", 20, "karras"), ("dpmpp_2m", 10, "uniform")):
            out = row(f"{sampler} {n} {s}", lambda: run_sampler(sampler, up, x_T, up.schedule, n, spacing=s,
                                                                options={"eta": 0.0} if sampler == "ddim" else {},
                                                                clip_x0=True, **common),
                      n, s, tm(n, s), sampler=sampler)
            if (sampler, n, s) == ("dpmpp_2m", 5, "karras"):
                ref = out
        for n, s in ((5, "karras"), (10, "karras"), (5, "uniform")):
            trace: list = []
            out = row(f"dpmpp_2m {n} {s}, first order into the last level",
                      lambda: dpmpp_2m_variant(up, x_T, levels[(n, s)], lower_order_final=True, trace=trace, **common),
                      n, s, tm(n, s), sampler="dpmpp_2m lower_order_final")
            report["traces"][f"dpmpp_2m {n} {s}, first order into the last level"] = [
                {"sigma_from": round(a, 4), "sigma_to": round(b, 4), "x0": rough_stats(x0), "D": rough_stats(d)}
                for a, b, x0, d in trace]
        # the package's function reproduced by the variant (a check of the variant), with its trace
        trace = []
        out = dpmpp_2m_variant(up, x_T, levels[(5, "karras")], trace=trace, **common).clamp(-1, 1)
        report["variant_reproduces_package_max_abs_diff"] = float((out - ref).abs().max())
        report["traces"]["dpmpp_2m 5 karras"] = [
            {"sigma_from": round(a, 4), "sigma_to": round(b, 4), "x0": rough_stats(x0), "D": rough_stats(d)}
            for a, b, x0, d in trace]
        for k, tr in report["traces"].items():
            print(k)
            for st in tr:
                print(f"   σ {st['sigma_from']:9.4f} → {st['sigma_to']:8.4f}: x̂₀ clean {st['x0']['clean']:2d}, "
                      f"median {st['x0']['roughness_median']:.4f};  D clean {st['D']['clean']:2d}, "
                      f"median {st['D']['roughness_median']:.4f}")
    report["seconds_total"] = round(time.time() - t_start, 1)
    report["load_average_before"] = [round(x, 2) for x in load_before]
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json} ({report['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
