"""Train every stage of the shapes unCLIP pipeline in order, and write shipped weights.

    dalle-mini train all --mode gpu --out data/weights      (one command, every stage)

The stages, each with train.py's one loop and its module's own recipe:

1. ``clip``      — a tiny CLIP on captioned shapes (clip.py);
2. ``prior``     — the diffusion prior on that CLIP's (text, image) embedding pairs (prior.py);
3. ``decoder``   — the CLIP-image-embedding-conditioned U-Net at 32×32 (decoder.py);
4. ``upsampler`` — the 32→64 diffusion upsampler (upsampler.py).

Scenes are rendered once into a bank (in parallel worker processes) and every stage samples
batches from it, so the GPU is not left waiting for the CPU to draw shapes. Each stage may
be given a wall-clock budget: a short calibration measures seconds per step, and the stage
then runs ``min(recipe steps, budget / seconds per step)`` steps — the number it ran is
recorded in the weights' JSON and in ``MANIFEST.json`` beside the command, the machine and
the time, so every shipped file says how it was made.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .device import get_device, run_mode

__all__ = ["STAGES", "train_all", "fit_steps", "machine_description"]

STAGES = ("clip", "prior", "decoder", "upsampler")


def machine_description() -> str:
    """A one-line description of the machine a run used (recorded in the manifest)."""
    dev = get_device()
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} GPU, {cpu}"
    return cpu


def fit_steps(model: torch.nn.Module, batch_fn: Callable[[int], dict], *, max_steps: int, budget_s: float | None,
              calib_steps: int = 15, lr: float = 1e-4) -> tuple[int, float]:
    """How many steps of `model.loss` on `batch_fn` fit in `budget_s` seconds (at most `max_steps`).

    Times `calib_steps` forward/backward/AdamW steps on a throw-away copy (after 3 warm-up
    steps) and returns (steps, seconds per step). With no budget, returns (max_steps, nan).
    """
    import copy

    from .device import autocast

    if budget_s is None:
        return max_steps, float("nan")
    dev = get_device()
    probe = copy.deepcopy(model).to(dev).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=lr)

    def step(i: int) -> None:
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch_fn(i).items()}
        with autocast(dev):
            loss = probe.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # one sync per step, as train.py does

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    for i in range(calib_steps):
        step(3 + i)
    per_step = (time.perf_counter() - t0) / calib_steps
    del probe, opt
    return max(1, min(max_steps, int(budget_s / per_step))), per_step


def _save(model: torch.nn.Module, config: Any, path: Path, extra: dict[str, Any]) -> Path:
    from .checkpoints import save_checkpoint

    # float16 halves the shipped files; the models are trained in bf16/fp32 and sampled in fp32
    return save_checkpoint(path, model.cpu(), config, extra=extra, dtype=torch.float16)


def _text_embeddings(clip: Any, tokens: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([clip.encode_text(tokens[i : i + batch_size]).float().cpu()
                          for i in range(0, tokens.shape[0], batch_size)])


def train_all(
    *,
    mode: str | None = None,
    out_dir: str | Path,
    stages: Sequence[str] = STAGES,
    budgets: dict[str, float] | None = None,
    max_steps: dict[str, int] | None = None,
    bank_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train `stages` of the shapes pipeline into `out_dir` as ``shapes_<stage>.safetensors/.json``.

    `budgets` maps a stage to a wall-clock budget in seconds (see module docstring);
    `max_steps` overrides a stage's recipe step count (the cap a budget fits under); a stage
    that needs the CLIP loads ``shapes_clip`` from `out_dir` when the clip stage is not run.
    Returns a report (per stage: steps, seconds, final loss, img/s) also written to
    ``out_dir/train_report.json``; ``MANIFEST.json`` (sha256 of every file) is rewritten.
    """
    from . import clip as clip_mod
    from . import decoder as dec_mod
    from . import prior as prior_mod
    from . import upsampler as up_mod
    from .checkpoints import load_checkpoint, write_manifest
    from .train import TrainConfig, train
    from .unet import UNetConfig

    mode = mode or run_mode()
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    budgets = dict(budgets or {})
    caps = dict(max_steps or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = get_device()
    workers = min(16, os.cpu_count() or 1) if mode == "gpu" else 0
    report: dict[str, Any] = {"mode": mode, "machine": machine_description(), "device": str(dev),
                              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "stages": {}}
    t_all = time.perf_counter()

    def finish(stage: str, model: torch.nn.Module, config: Any, result: Any, t0: float, extra: dict) -> None:
        last = result.metrics[-1] if result.metrics else {}
        info = {"steps": result.step,
                "seconds": round(time.perf_counter() - t0, 1), "final_loss": last.get("loss"),
                "img_per_s": last.get("img_per_s"), **extra}
        report["stages"][stage] = info
        _save(model, config, out / f"shapes_{stage}", {"stage": stage, "mode": mode, "machine": report["machine"],
                                                       "seed": seed, **info})
        model.to(dev)
        log(f"[{stage}] done: {json.dumps(info)}")

    def run(stage: str, model: torch.nn.Module, config: Any, batch_fn: Callable[[int], dict], *, cap: int,
            lr: float, warmup: int, ema_decay: float | None, extra: dict[str, Any], **tc_kwargs: Any) -> torch.nn.Module:
        """Fit steps to the stage's budget, train with train.py, save; return the trained (EMA) model."""
        t0 = time.perf_counter()
        budget = budgets.get(stage)
        cap = caps.get(stage, cap)
        steps, per = fit_steps(model, batch_fn, max_steps=cap, budget_s=budget, lr=lr)
        # the cosine schedule is laid out over the fitted steps so that the learning rate has
        # decayed when the budget is spent; max_seconds (a quarter over the budget) only guards
        # against a machine that slows down after the calibration
        guard = None if budget is None else 1.25 * budget
        log(f"[{stage}] up to {steps} steps (cap {cap}; {per * 1e3:.1f} ms/step measured; budget {budget} s)")
        tc = TrainConfig(steps=steps, lr=lr, warmup_steps=min(warmup, max(1, steps // 5)), schedule="cosine",
                         grad_clip=1.0, ema_decay=ema_decay, ema_warmup=ema_decay is not None,
                         log_every=max(1, min(100, steps)), seed=seed, progress=progress, max_seconds=guard,
                         **tc_kwargs)
        result = train(model, batch_fn, tc)
        trained = (result.ema if result.ema is not None else result.model).eval()
        finish(stage, trained, config, result, t0, {"ms_per_step_calibration": round(per * 1e3, 2),
                                                    "steps_planned": steps, **extra})
        return trained

    # 1. CLIP ------------------------------------------------------------------------------
    n_bank = bank_size or {"smoke": 64, "cpu": 4000, "gpu": 200_000}[mode]
    if "clip" in stages:
        recipe = clip_mod.RECIPES["shapes"][mode]
        cfg = clip_mod.clip_config("shapes")
        log(f"[clip] rendering a bank of {n_bank} scenes ({workers} workers)")
        bank = _render_bank(n_bank, image_size=cfg.image_size, seed=seed, workers=workers)
        torch.manual_seed(seed)
        clip = run("clip", clip_mod.CLIPModel(cfg), cfg, _clip_batches(bank, recipe.batch_size, seed=seed),
                   cap=recipe.steps, lr=recipe.lr, warmup=recipe.warmup_steps, ema_decay=None,
                   extra={"bank": n_bank}, weight_decay=recipe.weight_decay, betas=(0.9, 0.98), adam_eps=1e-6)
        del bank
        test = _shapes_test()
        ev = clip_mod.evaluate_retrieval(clip, test, gallery_size=100, num_galleries=5 if mode != "smoke" else 1,
                                         seed=seed)
        report["stages"]["clip"]["retrieval_test"] = ev
        log(f"[clip] test retrieval: {json.dumps(ev)}")
    else:
        clip = load_checkpoint(out / "shapes_clip", clip_mod.CLIPModel, config_cls=clip_mod.CLIPConfig,
                               device=dev).float().eval()

    # 2. Embedding bank shared by the prior and the decoder ----------------------------------
    emb_bank = None
    if {"prior", "decoder"} & set(stages):
        t0 = time.perf_counter()
        emb_bank = dec_mod.embed_shapes(clip.to(dev), n_bank, seed=seed, num_workers=workers,
                                        batch_size=1024 if mode == "gpu" else 256)
        emb_bank["text_emb"] = _text_embeddings(clip, emb_bank["tokens"])
        log(f"[bank] {n_bank} scenes embedded in {time.perf_counter() - t0:.1f} s")

    # 3. Prior ------------------------------------------------------------------------------
    if "prior" in stages:
        r = PRIOR_RECIPES[mode]
        cfg = prior_mod.PriorConfig(embed_dim=clip.embed_dim, width=r["width"], depth=r["depth"], heads=r["heads"],
                                    context_length=emb_bank["tokens"].shape[1], use_tokens=r["use_tokens"])
        torch.manual_seed(seed)
        run("prior", prior_mod.DiffusionPrior(cfg), cfg,
            _rows(emb_bank, ("text_emb", "image_emb", "tokens"), r["batch_size"], seed),
            cap=r["steps"], lr=r["lr"], warmup=200, ema_decay=0.999, extra={}, weight_decay=0.01)

    # 4. Decoder ----------------------------------------------------------------------------
    if "decoder" in stages:
        recipe = dec_mod.RECIPES[mode]
        model, cfg = _decoder_model(dec_mod, recipe, emb_bank, seed)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        run("decoder", model, cfg, dec_mod.embedding_batches(emb_bank, recipe.batch_size, seed=seed),
            cap=recipe.steps, lr=recipe.lr, warmup=recipe.warmup_steps, ema_decay=recipe.ema_decay,
            extra={"bank": n_bank})
    del emb_bank

    # 5. Upsampler --------------------------------------------------------------------------
    if "upsampler" in stages:
        recipe = replace(up_mod.RECIPES[mode], **UPSAMPLER_OVERRIDES.get(mode, {}))
        n_up = bank_size or recipe.num_images
        images = up_mod.render_bank("shapes", n_up, image_size=64, seed=seed, num_workers=workers)
        torch.manual_seed(seed)
        unet = UNetConfig(image_size=64, base_channels=recipe.base_channels, channel_mult=recipe.channel_mult,
                          num_res_blocks=recipe.num_res_blocks, attention_resolutions=(),
                          num_groups=min(32, recipe.base_channels))
        cfg = up_mod.UpsamplerConfig(unet=unet, low_res_size=32)  # default corruption: blur half the conditionings
        model = up_mod.Upsampler(cfg)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        run("upsampler", model, cfg, up_mod.image_batches(images, recipe.batch_size, seed=seed),
            cap=recipe.steps, lr=recipe.lr, warmup=recipe.warmup_steps, ema_decay=recipe.ema_decay,
            extra={"bank": n_up})

    report["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "train_report.json").write_text(json.dumps(report, indent=2, default=str))
    write_manifest(out)
    return report


# Shipped weights must stay under 40 MB together (float16): the gpu upsampler is narrowed to
# 32 base channels (shapes are flat colours; 64×64 detail is edges, not texture).
UPSAMPLER_OVERRIDES: dict[str, dict[str, Any]] = {"gpu": {"base_channels": 32}}

# Prior recipes by run mode (sizes for a 64-d shapes CLIP).
PRIOR_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {"width": 32, "depth": 1, "heads": 2, "steps": 3, "batch_size": 16, "lr": 3e-4, "use_tokens": False},
    "cpu": {"width": 128, "depth": 4, "heads": 4, "steps": 4000, "batch_size": 256, "lr": 3e-4, "use_tokens": False},
    # gpu: no caption tokens either: their 49,408 × 256 embedding table alone would be 25 MB in
    # float16 and break the shipped pipeline's 40 MB budget (the captions reach the prior as z_t)
    "gpu": {"width": 256, "depth": 6, "heads": 8, "steps": 20000, "batch_size": 1024, "lr": 3e-4, "use_tokens": False},
}


def _render_bank(n: int, *, image_size: int, seed: int, workers: int) -> dict[str, Any]:
    """Render `n` train scenes (1–2 objects) once: images (N,3,S,S), captions, tokens."""
    from .data.shapes import ShapesDataset
    from .data.tokens import tokenize

    ds = ShapesDataset("train", length=n, image_size=image_size, seed=seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=512, num_workers=workers,
                                         collate_fn=lambda items: (torch.stack([x for x, _ in items]),
                                                                   [c for _, c in items]))
    images, captions = [], []
    for x, caps in loader:
        images.append(x)
        captions += caps
    return {"image": torch.cat(images), "caption": captions, "tokens": tokenize(captions)}


def _rows(bank: dict[str, Any], keys: tuple[str, ...], batch_size: int, seed: int) -> Callable[[int], dict]:
    """``batch_fn(step)``: `batch_size` rows of `bank` drawn with replacement, seeded by (seed, step)."""
    n = bank[keys[0]].shape[0]

    def batch_fn(step: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, n, (batch_size,), generator=g)
        return {k: bank[k][idx] for k in keys}

    return batch_fn


def _clip_batches(bank: dict[str, Any], batch_size: int, seed: int) -> Callable[[int], dict]:
    """CLIP batches from the bank: distinct rows per step (a contrastive batch needs negatives)."""
    n = bank["image"].shape[0]

    def batch_fn(step: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randperm(n, generator=g)[:batch_size]
        return {"image": bank["image"][idx], "tokens": bank["tokens"][idx]}

    return batch_fn


def _shapes_test():
    from .data.shapes import ShapesDataset

    return ShapesDataset("test", length=1000 if run_mode() != "smoke" else 100, image_size=32, seed=0)


def _decoder_model(dec_mod, recipe, bank, seed):
    from .unet import UNetConfig

    torch.manual_seed(seed)
    unet = UNetConfig(image_size=32, base_channels=recipe.base_channels, channel_mult=(1, 2, 2),
                      num_res_blocks=recipe.num_res_blocks, attention_resolutions=recipe.attention_resolutions,
                      num_heads=4, num_groups=min(32, recipe.base_channels))
    config = dec_mod.DecoderConfig(unet=unet, embed_dim=bank["image_emb"].shape[1], spatial="attention",
                                   use_text=False, context_width=2 * recipe.base_channels)
    return dec_mod.Decoder(config), config
