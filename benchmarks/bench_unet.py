"""U-Net speed benchmark: ``python benchmarks/bench_unet.py --json runs/bench_unet.json``.

A thin command line over `dalle_mini_core.bench` (which `dalle-mini bench unet` also uses).
The peers are optional: ``pip install denoising-diffusion-pytorch`` and dalle2-pytorch (see
the README's benchmark section); diffusers is a dev dependency. Missing ones are reported
as missing.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from dalle_mini_core.bench import main, run_benchmark  # noqa: E402

__all__ = ["main", "run_benchmark"]

if __name__ == "__main__":
    raise SystemExit(main())
