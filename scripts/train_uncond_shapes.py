"""Train the unconditional one-object shapes U-Net shipped as data/weights/shapes_uncond (notebook 05).

Same recipe as the notebook's training cell: a pool of rendered one-object train scenes, eps
prediction on a 1000-step cosine schedule, dalle_mini_core.train with EMA. Saves the EMA U-Net
as <out>/shapes_uncond.{safetensors,json}.

How the shipped file was made: `OUT=/tmp/out python scripts/train_uncond_shapes.py 240` on one
NVIDIA H100 (3,500 steps of batch 256 in 237 s; final loss 0.0040; DDIM-50 samples read as one
shape, one object whose shape fits with no background test: 89% of 512). The U-Net's attention projections later moved from Linear to 1×1
Conv2d layout; the shipped tensors were reshaped to match, values unchanged (see its JSON).
Usage: OUT=DIR python scripts/train_uncond_shapes.py [BUDGET_SECONDS]
"""
import json, os, sys, time
from pathlib import Path
import torch
from dalle_mini_core.data.shapes import ShapesDataset
from dalle_mini_core.data.reader import detect_objects
from dalle_mini_core.unet import UNet, UNetConfig
from dalle_mini_core.schedule import NoiseSchedule
from dalle_mini_core.diffusion import Denoiser
from dalle_mini_core.sampling import ddim_sample
from dalle_mini_core.train import TrainConfig, train
from dalle_mini_core.checkpoints import save_checkpoint
from dalle_mini_core.viz import save_grid

out = Path(os.environ.get("OUT", "/tmp/sampling/out")); out.mkdir(parents=True, exist_ok=True)
budget_s = float(sys.argv[1]) if len(sys.argv) > 1 else 420
POOL, BATCH = 20000, 256
t0 = time.perf_counter()
data = ShapesDataset("train", length=POOL, image_size=32, num_objects=1, seed=0)
pool = torch.stack([data[i][0] for i in range(POOL)])  # (POOL, 3, 32, 32)
print(f"rendered {POOL} in {time.perf_counter()-t0:.1f}s", flush=True)

def batch_fn(step):
    g = torch.Generator().manual_seed(step)
    return {"image": pool[torch.randint(0, POOL, (BATCH,), generator=g)]}

CFG = UNetConfig(image_size=32, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                 attention_resolutions=(8,), num_heads=4, num_groups=8)
def make():
    torch.manual_seed(0)
    return Denoiser(UNet(CFG), NoiseSchedule.make("cosine", 1000), prediction="eps")

# probe the step time, then size the run to the budget
probe = train(make(), batch_fn, TrainConfig(steps=60, lr=3e-4, warmup_steps=10, progress=False, ema_decay=None))
step_s = probe.train_time_s / 60
steps = int(min(40000, budget_s / step_s) // 500 * 500)
print(f"step {step_s*1000:.1f} ms -> {steps} steps", flush=True)
res = train(make(), batch_fn, TrainConfig(steps=steps, lr=3e-4, warmup_steps=500, schedule="cosine",
                                         ema_decay=0.999, ema_warmup=True, log_every=500, progress=False))
print(f"trained {res.step} steps in {res.train_time_s:.0f}s; last loss rows:", [round(r['loss'], 4) for r in res.metrics[-5:]], flush=True)
ema = res.ema
net = ema.net.float().eval()
extra = {"dataset": "shapes train split, seed 0, one object, 32x32, pool of 20000 renders",
         "prediction": "eps", "schedule": "cosine", "num_timesteps": 1000, "steps": res.step, "batch_size": BATCH,
         "lr": 3e-4, "ema_decay": 0.999, "ema_warmup": True, "train_time_s": round(res.train_time_s, 1),
         "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
         "recipe": "notebooks/05_sampling.ipynb training cell (gpu mode)"}
save_checkpoint(out / "shapes_uncond", net, CFG, extra=extra)
# quick evaluation: DDIM 50 steps, 512 samples, share with exactly one detected object
dev = next(net.parameters()).device
sched = NoiseSchedule.make("cosine", 1000).respace(50).to(dev)
g = torch.Generator(device="cpu").manual_seed(0)
x_T = torch.randn(512, 3, 32, 32, generator=g).to(dev)
x = ddim_sample(ema, x_T, sched, generator=g).float().cpu()
def clean(im):
    det = detect_objects(im)
    return len(det) == 1 and min(det[0].fit_error.values()) < 0.01
ones = [clean(im) for im in x]
print("DDIM50 one-shape share (no background test):", sum(ones) / len(ones), flush=True)
save_grid(x[:64], out / "samples_ddim50.png", nrow=8, scale=2)
with open(out / "metrics.json", "w") as f:
    json.dump({"metrics": res.metrics, "ddim50_one_object": sum(ones) / len(ones)}, f)
