"""Generation settings shared by `UnCLIP.generate`, ``dalle-mini generate`` and the caption table.

No imports, so the command line can show them in ``--help`` without loading torch.

Guidance (prior 2, decoder 3) was chosen by ``scripts/sweep_generation.py`` on the shipped
weights (one H100, 54 seen + 54 held-out prompts × 4 images; no decoder guidance drops held-out
caption accuracy to 0.78). The samplers and step counts were chosen by measurement on the CPU
(``scripts/sweep_samplers.py`` and notebook 05; reports in `data/weights/reports/`):

* **decoder: DDIM with η = 1, 10 steps** (was η = 0, 25 steps). With η = 0 the decoder's and the
  unconditional model's pictures carry background speckle that more steps do not remove (the
  deterministic ODE carries the model's early errors to the end); fresh noise at every step
  (η = 1, as much as DDPM) removes it. In notebook 05, on the unconditional shapes model from
  one x_T: DDIM η = 0 at 10/25 steps gave a clean background in 31%/50% of 16 samples, η = 1 at
  10 and 25 steps in 100%; the second-order ODE solvers (Heun, DPM-Solver++(2M)) did not clean it.
* **upsampler: DDIM, 5 steps** (was 10), and the decoder at 10 steps: on the H100 sweep
  (``sweep_generation_h100.json``, DDIM η = 0, 216 images per kind) decoder 10 / upsampler 5 read
  seen 0.995, held-out 0.958 against 1.000 / 0.949 at 25 / 10 (within the ±0.02 noise).
  The whole pipeline at these defaults against the previous ones, on the 54 seen + 54 held-out
  caption prompts in one run on the CPU (``compare_defaults_cpu_54.json``): caption accuracy
  100% / 92.6% (was 100% / 88.9%), clean backgrounds 100% at 32×32 and 98.1% at 64×64 (was
  56.5% / 71.3%). Per-sampler rows (``sweep_samplers_cpu.json``, 16 seen + 16 held-out prompts,
  one picture each, the same noise in every row): decoder DDIM η = 1 clean in 32/32 at 10 and at
  8 steps, 27/32 at 6; DDIM η = 0 at 25 steps 18/32; DPM-Solver++(2M) at 10 steps 16/32. The
  upsampler on clean decoder pictures: DDIM 10 and 5 steps 32/32 clean, 3 steps 26/32;
  DPM-Solver++(2M) at 5 steps was 3/32 until its step into the last level became first order
  below 10 levels (32/32 since, at DDIM's 5 model calls; ``upsampler_dpmpp_study_cpu.json``).
  **Decoder 8 steps was measured and not adopted**: the whole pipeline with decoder DDIM η = 1 at
  8 steps against these defaults, in one run from the same seed on the same 54 + 54 prompts
  (``compare_decoder8_cpu_54.json``, one thread): clean 100% at 32×32 as at 10 steps, but 91.7%
  at 64×64 (98.1% at 10; the target is ≥ 98%) and held-out caption accuracy 88.9% (92.6% at 10:
  two pictures fewer, where one picture is 1.9 points), for 0.80× the decoder's CPU time per
  picture (1.19 s against 1.49 s on the loaded development CPU, load 5–7).
* **prior: DPM-Solver++(2M), 10 steps** (was DDIM 50): its embeddings have cosine 0.9999 (mean;
  0.9996 the lowest of 12) to the 50-step DDIM ones drawn from the same noise, at a fifth of the calls.
"""

GENERATE_DEFAULTS: dict = {
    "prior_steps": 10,
    "prior_guidance": 2.0,
    "decoder_steps": 10,
    "decoder_guidance": 3.0,
    "upsampler_steps": 5,
    "prior_sampler": "dpmpp_2m",
    "decoder_sampler": "ddim",
    "decoder_sampler_options": {"eta": 1.0},
    "upsampler_sampler": "ddim",
    "upsampler_sampler_options": {"eta": 0.0},
}
