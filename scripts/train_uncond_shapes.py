"""Train the unconditional one-object shapes U-Net shipped as data/weights/shapes_uncond (notebook 05).

Through the same recipe path as every stage (`recipes.uncond`): a bank of rendered one-object
train scenes, eps prediction on a 1000-step cosine schedule, train.py's loop with EMA. The step
count is fitted to a wall-clock budget (`runs.fit_steps`, rounded down to a multiple of 500).
Saves the EMA U-Net as <out>/shapes_uncond.{safetensors,json}; the JSON's ``extra`` stores how it
samples (schedule kind, timesteps, prediction: `recipes.uncond.schedule_fields`), which
``dalle-mini demo`` reads.

How the shipped file was made (with this script's earlier, inline version of the same recipe):
`OUT=/tmp/out python scripts/train_uncond_shapes.py 240` on one NVIDIA H100 (3,500 steps of batch
256 in 237 s; final loss 0.0040; DDIM-50 samples read as one shape, one object whose shape fits
with no background test: 89% of 512). The U-Net's attention projections later moved from Linear to
1×1 Conv2d layout; the shipped tensors were reshaped to match, values unchanged (see its JSON).
Usage: OUT=DIR python scripts/train_uncond_shapes.py [BUDGET_SECONDS] [MODE]   (MODE: default gpu)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def main(budget_s: float = 420.0, mode: str = "gpu") -> int:
    import torch

    from dalle_mini_core.banks import make
    from dalle_mini_core.checkpoints import save_checkpoint
    from dalle_mini_core.data.reader import detect_objects
    from dalle_mini_core.options import model_device
    from dalle_mini_core.recipes import uncond
    from dalle_mini_core.runs import fit_steps, machine_description
    from dalle_mini_core.sampling import ddim_sample
    from dalle_mini_core.viz import save_grid

    out = Path(os.environ.get("OUT", "/tmp/sampling/out"))
    out.mkdir(parents=True, exist_ok=True)
    recipe = uncond.RECIPES["shapes"][mode]
    bank = make(uncond.bank_spec(recipe), seed=0, workers=recipe.workers)
    print(f"rendered {recipe.bank} scenes", flush=True)

    # probe the step time, then size the run to the budget
    model = uncond.build(recipe, seed=0)
    steps, per_step = fit_steps(model, uncond.batches(recipe, bank, seed=0), max_steps=recipe.steps, budget_s=budget_s,
                                lr=recipe.lr)
    steps = max(1, steps // 500 * 500) if steps >= 500 else steps
    print(f"step {per_step * 1000:.1f} ms -> {steps} steps", flush=True)
    ema, res = uncond.train("shapes", mode, recipe=recipe, steps=steps, bank=bank, model=model, seed=0,
                            progress=False)
    print(f"trained {res.step} steps in {res.train_time_s:.0f}s; last loss rows:",
          [round(r["loss"], 4) for r in res.metrics[-5:]], flush=True)
    net = ema.net.float().eval()
    extra = {**uncond.schedule_fields(recipe),
             "dataset": f"shapes train split, seed 0, one object, {recipe.image_size}x{recipe.image_size}, "
                        f"bank of {recipe.bank} renders",
             "steps": res.step, "batch_size": recipe.batch_size, "lr": recipe.lr, "ema_decay": recipe.ema_decay,
             "ema_warmup": True, "train_time_s": round(res.train_time_s, 1), "machine": machine_description(),
             "recipe": f"dalle_mini_core/recipes/uncond.py, {mode}"}
    save_checkpoint(out / "shapes_uncond", net, net.config, extra=extra)
    # quick evaluation: DDIM 50 steps, 512 samples, share with exactly one detected object
    dev = model_device(net)
    sched = ema.schedule.respace(50).to(dev)
    g = torch.Generator(device="cpu").manual_seed(0)
    x_T = torch.randn(512, 3, recipe.image_size, recipe.image_size, generator=g).to(dev)
    x = ddim_sample(ema, x_T, sched, generator=g).float().cpu()

    def clean(im: torch.Tensor) -> bool:
        det = detect_objects(im)
        return len(det) == 1 and min(det[0].fit_error.values()) < 0.01

    ones = [clean(im) for im in x]
    print("DDIM50 one-shape share (no background test):", sum(ones) / len(ones), flush=True)
    save_grid(x[:64], out / "samples_ddim50.png", nrow=8, scale=2)
    with open(out / "metrics.json", "w") as f:
        json.dump({"metrics": res.metrics, "ddim50_one_object": sum(ones) / len(ones)}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 420.0, *sys.argv[2:3]))
