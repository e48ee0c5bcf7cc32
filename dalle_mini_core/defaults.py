"""Generation settings shared by `UnCLIP.generate`, ``dalle-mini generate`` and the caption table.

No imports, so the command line can show them in ``--help`` without loading torch.

The step counts were chosen by measurement (``scripts/sweep_generation.py`` on the shipped
weights, one H100, 54 seen + 54 held-out prompts × 4 images; `data/weights/reports/`): the
decoder at 25 DDIM steps and the upsampler at 10 read as right as 50 and 25 steps (seen
0.995 vs 1.000, held-out 0.972 vs 0.949: within the ±0.02 noise of 216 images) at about half
the work, which is what makes a laptop CPU answer in seconds. Guidance: prior 2, decoder 3 (the
sweep's best on held-out prompts; no decoder guidance drops held-out accuracy to 0.78).
"""

GENERATE_DEFAULTS: dict = {
    "prior_steps": 50,
    "prior_guidance": 2.0,
    "decoder_steps": 25,
    "decoder_guidance": 3.0,
    "upsampler_steps": 10,
    "prior_sampler": "ddim",
    "decoder_sampler": "ddim",
    "decoder_sampler_options": {"eta": 0.0},
    "upsampler_sampler": "ddim",
    "upsampler_sampler_options": {"eta": 0.0},
}
