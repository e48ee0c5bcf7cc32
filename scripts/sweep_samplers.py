"""Samplers, steps and noise for each stage of the shapes pipeline, measured on this CPU.

    python scripts/sweep_samplers.py --json runs/sweep_samplers_cpu.json \
        [--prompts 16] [--threads 1] [--stages prior decoder upsampler]

The pipeline is cut at its stages so each setting is measured on the SAME inputs:

1. the text embeddings z_t of `--prompts` seen and `--prompts` held-out one-object prompts
   (`evaluation.captions.prompt_set`, the caption-accuracy prompts), one image per prompt;
2. **prior** rows: image embeddings z_i for each prior setting from the same noise, scored by
   their cosine to the old default's (50 DDIM steps) — how far fewer steps move the sample —
   and to the text embedding (decoding every prior row costs more than a shared CPU allows; the
   caption accuracy of the chosen prior is measured by the whole-pipeline comparison);
3. **decoder** rows: 32×32 pictures from the default prior's z_i, every row from the same
   seed (so the same starting noise x_T through each sampler); scored by the clean share
   (`evaluation.captions.clean_share`) and caption accuracy at 32×32 (the attribute reader);
4. **upsampler** rows: 64×64 pictures from one decoder row's 32×32 pictures
   (``--upsampler-input``), every row from the same seed; scored the same way at 64×64.

``--compare old new`` instead runs the whole pipeline at the old and the new defaults on the
caption-accuracy report's prompts (`evaluation.report.caption_report`: 54 seen + 54 held-out prompts, one
image each, seed 0 — the same prompts and images per prompt as the shipped eval report), and
records caption accuracy and the clean share per stage output for each, with each stage's
seconds per picture (wall and CPU time, `bench_generate.StageTimer`) and the load average.
``--compare new candidate --set decoder_steps=8`` compares the defaults with a candidate (the
defaults changed by ``--set``) in the same run, from the same seed.

Each row records seconds per picture for its stage (one thread unless `--threads`), model calls,
clean share and caption accuracy (seen, held-out). The shipped upsampler was trained without
noise augmentation (``noise_aug_max_t = 0`` in its config), so there is no augmentation level to
sweep at sampling: the report says so. Choosing the defaults from the rows is `defaults.py`'s job.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

#: (label, sampler, steps, sampler options). The first row of each stage is today's setting.
PRIOR_ROWS = [
    ("ddim 50 (old default)", "ddim", 50, {}),
    ("ddim 10", "ddim", 10, {}),
    ("dpmpp_2m 10", "dpmpp_2m", 10, {}),
    ("dpmpp_2m 5", "dpmpp_2m", 5, {}),
]
DECODER_ROWS = [
    ("ddim 25 eta 0 (old default)", "ddim", 25, {"eta": 0.0}),
    ("ddim 10 eta 1", "ddim", 10, {"eta": 1.0}),
    ("ddim 8 eta 1", "ddim", 8, {"eta": 1.0}),
    ("ddim 6 eta 1", "ddim", 6, {"eta": 1.0}),
    ("dpmpp_2m 10", "dpmpp_2m", 10, {}),
    ("dpmpp_2m 6", "dpmpp_2m", 6, {}),
    ("euler 6 churn 10", "euler", 6, {"churn": 10.0}),
]
UPSAMPLER_ROWS = [
    ("ddim 10 (old default)", "ddim", 10, {"eta": 0.0}),
    ("ddim 5", "ddim", 5, {"eta": 0.0}),
    ("ddim 5 eta 1", "ddim", 5, {"eta": 1.0}),
    ("ddim 3", "ddim", 3, {"eta": 0.0}),
    ("dpmpp_2m 5", "dpmpp_2m", 5, {}),
    ("dpmpp_2m 3", "dpmpp_2m", 3, {}),
]


def _score(images, prompts, n_seen):
    """Clean share and caption accuracy (seen, held-out) of images whose rows follow `prompts`."""
    from dalle_mini_core.data.reader import score_captions
    from dalle_mini_core.evaluation.captions import CLEAN_THRESHOLD, background_roughness

    rough = background_roughness(images)
    seen = score_captions(images[:n_seen], prompts[:n_seen])["all"]
    held = score_captions(images[n_seen:], prompts[n_seen:])["all"]
    return {"clean": float((rough <= CLEAN_THRESHOLD).float().mean()),
            "clean_seen": float((rough[:n_seen] <= CLEAN_THRESHOLD).float().mean()),
            "clean_heldout": float((rough[n_seen:] <= CLEAN_THRESHOLD).float().mean()),
            "roughness_median": float(rough.median()), "seen": seen, "heldout": held,
            "roughness": [round(float(r), 4) for r in rough]}


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.nn.functional as F

    from dalle_mini_core.defaults import GENERATE_DEFAULTS as D
    from dalle_mini_core.evaluation.captions import CLEAN_THRESHOLD, prompt_set
    from dalle_mini_core.pipeline import UnCLIP
    from dalle_mini_core.sampling import model_calls
    from dalle_mini_core.runs import machine_description

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per kind (seen, held out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stages", nargs="*", default=["prior", "decoder", "upsampler"])
    ap.add_argument("--rows", nargs="*", help="labels to run (default: all)")
    ap.add_argument("--compare", nargs="*", choices=["old", "new", "candidate"],
                    help="whole-pipeline caption accuracy and clean share at the old and/or new defaults, "
                         "and/or a candidate (the new defaults changed by --set)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="the candidate's changes to the new defaults, e.g. decoder_steps=8 (JSON values)")
    ap.add_argument("--upsampler-input", default=DECODER_ROWS[0][0], help="the decoder row whose pictures the upsampler rows enlarge")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t_start = time.time()
    pipe = UnCLIP.from_pretrained("shapes")
    if args.compare:
        return compare(pipe, args, t_start)
    prompts = prompt_set("seen", args.prompts, args.seed) + prompt_set("heldout", args.prompts, args.seed)
    n_seen = args.prompts
    report = {"machine": machine_description(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "prompts_per_kind": args.prompts, "n_per_prompt": 1, "seed": args.seed,
              "clean_threshold": CLEAN_THRESHOLD,
              "upsampler_noise_augmentation": {"noise_aug_max_t": pipe.upsampler.config.noise_aug_max_t,
                                               "note": "the shipped upsampler was trained without noise augmentation: "
                                                       "nothing to sweep at sampling without a retrain"},
              "guidance": {"prior": D["prior_guidance"], "decoder": D["decoder_guidance"]}, "rows": {}}

    def save():
        report["seconds_total"] = round(time.time() - t_start, 1)
        Path(args.json).write_text(json.dumps(report, indent=2))

    def wanted(label):
        return not args.rows or label in args.rows

    def log(stage, label, row):
        print(f"{stage:9s} {label:30s} clean {row['clean']:.3f}  seen {row['seen']:.3f}  held-out {row['heldout']:.3f}  "
              f"{row['seconds_per_picture']:.3f} s/pic  calls {row['model_calls']}", flush=True)

    with torch.inference_mode():
        tokens = pipe.clip.tokenize(prompts)
        text_emb = pipe.clip.encode_text(tokens)

        def prior(sampler, steps, options):
            g = torch.Generator().manual_seed(args.seed)
            t = time.perf_counter()
            z = pipe.prior.sample(text_emb, tokens, steps=steps, guidance_scale=D["prior_guidance"], sampler=sampler,
                                  sampler_options=options, generator=g)
            return F.normalize(z.float(), dim=-1), (time.perf_counter() - t) / len(prompts)

        def decoder(z, sampler, steps, options):
            g = torch.Generator().manual_seed(args.seed + 1)
            t = time.perf_counter()
            x = pipe.decoder.sample(z, steps=steps, guidance_scale=D["decoder_guidance"], sampler=sampler,
                                    sampler_options=options, generator=g).clamp(-1, 1)
            return x, (time.perf_counter() - t) / len(prompts)

        def upsampler(low, sampler, steps, options):
            g = torch.Generator().manual_seed(args.seed + 2)
            t = time.perf_counter()
            x = pipe.upsampler.sample(low, steps=steps, sampler=sampler, sampler_options=options,
                                      generator=g).clamp(-1, 1)
            return x, (time.perf_counter() - t) / len(prompts)

        z_ref, _ = prior("ddim", D["prior_steps"], {})  # the decoder rows' input (as in the shipped sweep)
        z_50, _ = prior(*PRIOR_ROWS[0][1:])  # the prior rows' reference: the old default, DDIM 50 steps
        up_in = next(r for r in DECODER_ROWS if r[0] == args.upsampler_input)
        if "prior" in args.stages:
            report["rows"]["prior"] = []
            for label, sampler, steps, options in PRIOR_ROWS:
                if not wanted(label):
                    continue
                z, sec = prior(sampler, steps, options)
                cos = (z * z_50).sum(-1)  # (N,) cosine to the old default's embedding, same noise
                row = {"label": label, "sampler": sampler, "steps": steps, "options": options,
                       "model_calls": model_calls(sampler, steps), "seconds_per_picture": round(sec, 4),
                       "cosine_to_reference_mean": float(cos.mean()), "cosine_to_reference_min": float(cos.min()),
                       "cosine_to_text": float((z * text_emb).sum(-1).mean())}
                report["rows"]["prior"].append(row)
                print(f"prior     {label:30s} cos to 50-step {row['cosine_to_reference_mean']:.4f} "
                      f"(min {row['cosine_to_reference_min']:.4f})  {sec:.4f} s/pic", flush=True)
                save()
        low_ref = None
        if "decoder" in args.stages or "upsampler" in args.stages:
            report["rows"]["decoder"] = []
            for label, sampler, steps, options in DECODER_ROWS:
                if not wanted(label) and label != up_in[0]:
                    continue
                low, sec = decoder(z_ref, sampler, steps, options)
                if label == up_in[0]:
                    low_ref = low
                if "decoder" not in args.stages and label != up_in[0]:
                    continue
                row = {"label": label, "sampler": sampler, "steps": steps, "options": options,
                       "model_calls": model_calls(sampler, steps), "seconds_per_picture": round(sec, 4),
                       **_score(low, prompts, n_seen)}
                report["rows"]["decoder"].append(row)
                log("decoder", label, row)
                save()
        if "upsampler" in args.stages:
            report["rows"]["upsampler"] = []
            report["upsampler_input"] = up_in[0]
            for label, sampler, steps, options in UPSAMPLER_ROWS:
                if not wanted(label):
                    continue
                high, sec = upsampler(low_ref, sampler, steps, options)
                row = {"label": label, "sampler": sampler, "steps": steps, "options": options,
                       "model_calls": model_calls(sampler, steps), "seconds_per_picture": round(sec, 4),
                       **_score(high, prompts, n_seen)}
                report["rows"]["upsampler"].append(row)
                log("upsampler", label, row)
                save()
    save()
    print(f"wrote {args.json} ({report['seconds_total']:.0f} s, {report['machine']})")
    return 0


def compare(pipe, args, t_start) -> int:
    """Whole-pipeline caption accuracy, clean share and seconds per stage at each setting compared."""
    import os

    import torch

    from dalle_mini_core.defaults import GENERATE_DEFAULTS
    from dalle_mini_core.evaluation.report import caption_report
    from dalle_mini_core.runs import machine_description

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_generate import OLD_DEFAULTS, StageTimer, with_settings

    candidate = with_settings(GENERATE_DEFAULTS, args.set, "--set")
    if "candidate" in args.compare and not args.set:
        raise SystemExit("--compare candidate needs --set KEY=VALUE (the candidate's changes to the new defaults)")
    n = 54 if args.prompts == 16 else args.prompts  # the shipped report's 54 + 54 unless asked otherwise
    report = {"command": "python scripts/sweep_samplers.py " + " ".join(sys.argv[1:]),
              "machine": machine_description(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "prompts_per_kind": n, "n_per_prompt": 1, "seed": args.seed, "compare": {}}
    timer = StageTimer(pipe)
    for which in args.compare:
        settings = {"old": OLD_DEFAULTS, "new": GENERATE_DEFAULTS, "candidate": candidate}[which]
        timer.reset()
        load_before = os.getloadavg()
        c0 = time.process_time()
        with torch.inference_mode():
            rep = caption_report(pipeline=pipe, n_prompts=n, n_per_prompt=1, seed=args.seed,
                                 generate_kwargs=dict(settings))
        images = 2 * n
        rep["cpu_seconds_per_image"] = round((time.process_time() - c0) / images, 4)
        rep["seconds_per_image_by_stage"] = {s: round(v / images, 4) for s, v in timer.seconds.items()}
        rep["cpu_seconds_per_image_by_stage"] = {s: round(v / images, 4) for s, v in timer.cpu_seconds.items()}
        rep["load_average_before"] = [round(x, 2) for x in load_before]
        rep["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        report["compare"][which] = rep
        c = rep["clean_share"]
        print(f"{which}: seen {rep['seen']:.3f}  held-out {rep['heldout']:.3f}  clean decoder {c['decoder']['all']:.3f}  "
              f"clean upsampler {c['upsampler']['all']:.3f}  {rep['seconds_per_image']:.2f} s/image (incl. scoring), "
              f"CPU s/image by stage {rep['cpu_seconds_per_image_by_stage']}, load {rep['load_average_after']}",
              flush=True)
        report["seconds_total"] = round(time.time() - t_start, 1)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
