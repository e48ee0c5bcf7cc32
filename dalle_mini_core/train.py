"""One training loop for every stage of the course (CLIP, prior, decoder, upsampler).

A model only has to expose ``loss(batch) -> Tensor`` (a scalar); `train` does the rest:

* AdamW (Loshchilov & Hutter 2019) with linear warm-up, then a constant or cosine learning
  rate (`lr_at`), and weight decay on matrices/kernels only;
* gradient clipping by global norm, and bf16 autocast on CUDA (fp32 on the CPU); on CUDA also
  the fused AdamW kernel and, when ``compile`` is set, ``torch.compile`` of the loss (the CPU path
  is unchanged: the same seed gives the same weights, bit for bit);
* an exponential moving average of the weights (`EMA`), which diffusion models sample from
  (Ho et al. 2020, Appendix B, decay 0.9999; Nichol & Dhariwal 2021);
* a tqdm progress bar, a metric log (``metrics.csv``: step, loss, lr, grad_norm, img_per_s,
  time_s; `runlog.plot_losses` draws it) and checkpoints (model, EMA, optimizer, RNG states,
  step) in a run folder (`dalle_mini_core.runlog` describes its layout and reads it back);
* exact resume: a run stopped at step k and started again ends with bit-identical weights
  to a run that was never stopped (on the same machine);
* DistributedDataParallel when launched with ``torchrun`` (``WORLD_SIZE > 1``);
* guards that stop early with a plain explanation: a learning rate above `max_lr`, a loss
  that turns NaN/inf or explodes, a run directory that holds a different run.

Data. ``data`` is either a *batch function* ``batch_fn(step) -> dict`` that is a pure function
of the step (recommended: exact resume is then free), or a re-iterable such as a DataLoader
(resume fast-forwards through the batches already seen; exact only if iteration order is
seeded, e.g. ``DataLoader(..., generator=torch.Generator().manual_seed(0))``). Either yields
the GLOBAL batch; with several processes each rank keeps its own contiguous slice. A batch
function that takes ``rank`` and ``world_size`` keyword arguments is asked for its shard
directly instead.

Randomness. Before each step the loop seeds Python, NumPy and PyTorch from
(seed, step) to build the batch, then from (seed, step, rank) for the model's own draws
(dropout, diffusion timesteps and noise). Every step's random numbers are therefore fixed
by the step number alone, which is what makes resume exact, also under DDP.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoints import load_weights
from .device import autocast, get_device
from .runlog import (  # noqa: F401  (latest_checkpoint, load_run_weights, plot_losses: also importable from here)
    append_metrics,
    latest_checkpoint,
    load_run_weights,
    plot_losses,
    prepare_run_dir,
    read_metrics,
    run_identity,
    save_step,
    write_metrics,
)
from .train_state import load_training_state

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "EMA",
    "lr_at",
    "make_optimizer",
    "train",
]


# ---------------------------------------------------------------------------------------------
# 1. Config, learning-rate schedule, optimizer, EMA
# ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TrainConfig:
    """Everything `train` needs besides the model and the data."""

    steps: int  # optimizer steps in the whole run (a resumed run continues up to this number)
    lr: float = 2e-4  # peak learning rate of AdamW, reached at the end of warm-up
    warmup_steps: int = 100  # linear warm-up: step s (0-based) uses lr * (s + 1) / warmup_steps
    schedule: str = "constant"  # after warm-up: "constant", or "cosine" down to min_lr_ratio * lr
    min_lr_ratio: float = 0.1  # cosine only: final lr as a fraction of lr
    weight_decay: float = 0.0  # AdamW decoupled decay, applied to tensors with ndim >= 2 only
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment decays (beta1, beta2)
    adam_eps: float = 1e-8  # AdamW epsilon in the denominator
    grad_clip: float | None = 1.0  # clip the global gradient norm to this (None = no clipping)
    ema_decay: float | None = 0.999  # EMA of the weights, θ̄ ← d·θ̄ + (1 − d)·θ (None = no EMA)
    ema_warmup: bool = False  # use d_n = min(ema_decay, (1 + n) / (10 + n)) after n updates
    amp: bool | None = None  # None = auto: bf16 autocast on CUDA, fp32 on CPU/MPS
    device: str | None = None  # None = dalle_mini_core.device.get_device()
    log_every: int = 50  # write a metrics row (window means) every this many steps, and at the end
    ckpt_every: int | None = None  # checkpoint every this many steps (None = only at the end)
    keep_checkpoints: int | None = 2  # keep only the newest this-many checkpoints (None = all)
    out_dir: str | None = None  # run directory for metrics.csv and checkpoints (None = write nothing)
    seed: int = 0  # seeds every step's randomness together with the step number
    max_lr: float = 1e-2  # refuse lr above this: AdamW moves every weight by about lr per step
    explode_factor: float | None = 100.0  # stop if the loss exceeds this times the first loss
    ddp_find_unused: bool = False  # DDP: allow parameters that some steps do not use
    progress: bool = True  # show a tqdm progress bar (rank 0 only)
    max_seconds: float | None = None  # stop once this call has trained this long (wall clock), saving and
    #                                   logging as at the end; the steps done are in TrainResult.step (None = no limit)
    compile: bool = False  # torch.compile the loss's forward and backward, on CUDA only (ignored elsewhere)

    def __post_init__(self) -> None:
        if isinstance(self.out_dir, os.PathLike):
            self.out_dir = os.fspath(self.out_dir)
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.lr > self.max_lr:
            raise ValueError(
                f"lr={self.lr:g} is above max_lr={self.max_lr:g}. AdamW normalises each gradient, so "
                f"every weight moves by about lr per step whatever the loss scale; above ~1e-2 networks "
                f"like these diverge (typical values: 1e-4 to 1e-3). If you really mean it, raise max_lr."
            )
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            raise ValueError(f"betas must be a tuple of two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay!r}")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise ValueError(f"log_every must be an int >= 1, got {self.log_every!r}")
        if self.ckpt_every is not None and (not isinstance(self.ckpt_every, int) or self.ckpt_every < 1):
            raise ValueError(f"ckpt_every must be an int >= 1 or None, got {self.ckpt_every!r}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1 or None, got {self.keep_checkpoints!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {self.max_seconds!r}")
        if self.explode_factor is not None and self.explode_factor <= 1:
            raise ValueError(f"explode_factor must be > 1 or None, got {self.explode_factor!r}")


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate used by optimizer step `step` (0-based).

    Linear warm-up ``lr·(s+1)/W`` for ``s < W``; then ``lr`` (constant) or a half cosine from
    ``lr`` at step W to ``min_lr_ratio·lr`` at the last step (Loshchilov & Hutter 2017, SGDR).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    w = config.warmup_steps
    if step < w:
        return config.lr * (step + 1) / w
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - w) / max(1, config.steps - 1 - w))
    lo = config.lr * config.min_lr_ratio
    return lo + (config.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weights of ndim >= 2 (matrices, kernels, embeddings) only;
    biases and normalisation gains are not decayed (as in GPT-2/nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": g, "weight_decay": wd} for g, wd in ((decay, config.weight_decay), (no_decay, 0.0)) if g]
    # on CUDA, the fused kernel updates every tensor in a few launches instead of several per tensor;
    # elsewhere the default (for-each) implementation, so CPU runs keep their exact numbers
    fused = {"fused": True} if all(p.is_cuda for p in params) else {}
    return torch.optim.AdamW(groups, lr=lr_at(0, config), betas=config.betas, eps=config.adam_eps, **fused)


class EMA:
    """Exponential moving average of a model's weights (Polyak averaging), kept in a shadow copy.

    After each optimizer step: ``θ̄ ← d·θ̄ + (1 − d)·θ`` for every floating parameter; buffers
    (e.g. normalisation statistics) are copied. With `warmup`, ``d_n = min(decay, (1+n)/(10+n))``
    after n updates, so the average is not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple | None = None  # (source model, float pairs, other pairs), built once

    def current_decay(self) -> float:
        """The decay the next `update` uses."""
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def _match(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple]]:
        """Shadow and source tensors paired by name (cached: walking the modules every step is slow)."""
        if self._pairs is None or self._pairs[0] is not model:
            shadow = dict(self.model.named_parameters())
            floats = [(shadow[n], p) for n, p in model.named_parameters() if shadow[n].is_floating_point()]
            others = [(shadow[n], p) for n, p in model.named_parameters() if not shadow[n].is_floating_point()]
            shadow_buffers = dict(self.model.named_buffers())
            others += [(shadow_buffers[n], b) for n, b in model.named_buffers()]
            self._pairs = (model, [s for s, _ in floats], [p for _, p in floats], others)
        return self._pairs[1], self._pairs[2], self._pairs[3]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards `model`'s current weights."""
        d = self.current_decay()
        shadow, source, others = self._match(model)
        if shadow:
            # s + (1-d)(p - s) = d·s + (1-d)·p, for all parameters in one fused call
            torch._foreach_lerp_(shadow, [p.detach() for p in source], 1.0 - d)
        for s, p in others:  # buffers (e.g. normalisation statistics) are copied, not averaged
            s.copy_(p)
        self.num_updates += 1


# ---------------------------------------------------------------------------------------------
# 2. Processes, data and randomness
# ---------------------------------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; training stopped before the bad update."""


class _LossForward(nn.Module):
    """DDP synchronises gradients through ``forward``; route ``model.loss(batch)`` through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model.loss(batch)


def _setup_processes(config: TrainConfig) -> tuple[int, int, torch.device, bool]:
    """(rank, world_size, device, created_group). Starts torch.distributed from torchrun's
    environment variables when WORLD_SIZE > 1: nccl on CUDA, gloo on the CPU."""
    device = get_device(config.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    if not dist.is_initialized():
        return 0, 1, device, False
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    return rank, world, device, created


def _seed_all(*entropy: int) -> None:
    """Seed Python, NumPy and PyTorch from a tuple of ints (well mixed by NumPy's SeedSequence)."""
    s = int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]) >> 1
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.default_generator.manual_seed(s)
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # the model is on the GPU by now
        torch.cuda.manual_seed_all(s)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        torch.mps.manual_seed(s)


def _batch_size(batch: dict[str, Any]) -> int:
    for v in batch.values():
        if torch.is_tensor(v) and v.dim() > 0:
            return v.shape[0]
    raise ValueError(f"a batch must hold at least one tensor with a batch dimension; keys: {list(batch)}")


def _shard(batch: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """This rank's contiguous slice of a global batch (tensors and lists of batch length)."""
    if world == 1:
        return batch
    n = _batch_size(batch)
    if n % world:
        raise ValueError(f"global batch size {n} is not divisible by the {world} processes")
    lo, hi = rank * n // world, (rank + 1) * n // world
    return {k: v[lo:hi] if (torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n)
            or (isinstance(v, (list, tuple)) and len(v) == n) else v for k, v in batch.items()}


def _batches(data: Any, rank: int, world: int) -> Callable[[int], dict[str, Any]]:
    """Turn a batch function or a re-iterable into ``get(step) -> this rank's batch``."""
    if callable(data) and not isinstance(data, Iterable):
        try:
            params = inspect.signature(data).parameters
        except (TypeError, ValueError):
            params = {}
        if "rank" in params and "world_size" in params:
            return lambda step: data(step, rank=rank, world_size=world)
        return lambda step: _shard(data(step), rank, world)
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a batch function step -> dict or a re-iterable, got {type(data).__name__}")

    state: dict[str, Any] = {"it": iter(data), "next": 0}

    def next_batch() -> dict[str, Any]:
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(data)
            try:
                return next(state["it"])
            except StopIteration:
                raise ValueError(
                    "data ran out and iterating it again gave nothing: pass a re-iterable (a list, "
                    "a DataLoader) or a batch function, not a one-shot iterator"
                ) from None

    def get(step: int) -> dict[str, Any]:
        while state["next"] < step:  # fast-forward through the batches a resumed run already saw
            next_batch()
            state["next"] += 1
        state["next"] = step + 1
        return _shard(next_batch(), rank, world)

    return get


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    if not isinstance(batch, dict):
        raise TypeError(f"a batch must be a dict, got {type(batch).__name__}")
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _data_ranges(batch: dict[str, Any]) -> str:
    parts = []
    for k, v in batch.items():
        if torch.is_tensor(v) and v.is_floating_point() and v.numel():
            lo, hi = v.min().item(), v.max().item()
            flag = "" if -1.0 - 1e-3 <= lo and hi <= 1.0 + 1e-3 else " <- outside [-1, 1]"
            parts.append(f"{k} in [{lo:.3g}, {hi:.3g}]{flag}")
    return "; ".join(parts) or "no float tensors"


# ---------------------------------------------------------------------------------------------
# 3. The loop (the run folder it writes: `runlog`)
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What `train` returns."""

    model: nn.Module  # the trained model (raw weights, in train mode)
    ema: nn.Module | None  # the EMA shadow copy in eval mode (None when ema_decay is None)
    metrics: list[dict[str, float]]  # one row per logged step, including rows of earlier runs resumed
    step: int  # optimizer steps completed
    resumed_from: int | None  # checkpoint step this call started from (None = fresh start)
    out_dir: Path | None  # the run directory (None when out_dir was None)
    train_time_s: float  # wall time of this call's steps, seconds


def train(
    model: nn.Module,
    data: Callable[[int], dict[str, Any]] | Iterable[dict[str, Any]],
    config: TrainConfig,
    *,
    resume: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train `model` (anything with ``loss(batch) -> Tensor``) for ``config.steps`` steps.

    `data` is ``batch_fn(step) -> dict`` or a re-iterable of dict batches (module docstring).
    With ``config.out_dir`` set, resumes from the latest checkpoint there (`resume`), refuses
    a directory holding a different run, and writes metrics and checkpoints. The run is the
    one found in the directory, however its path is spelled or wherever it was moved.
    ``overwrite=True`` DELETES the checkpoints and metrics found there and starts again.
    Raises TrainingDiverged when the loss becomes NaN/inf or explodes.
    """
    # 1. Check the inputs.
    if not isinstance(model, nn.Module) or not callable(getattr(model, "loss", None)):
        raise TypeError("model must be an nn.Module with a loss(batch) -> Tensor method")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")

    # 2. Processes, device, optimizer.
    rank, world, device, created_group = _setup_processes(config)
    try:
        return _train(model, data, config, resume, overwrite, rank, world, device)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(model: nn.Module, data: Any, config: TrainConfig, resume: bool, overwrite: bool,
           rank: int, world: int, device: torch.device) -> TrainResult:
    """`train` once the processes are set up (steps 3-5)."""
    main = rank == 0
    amp = device.type == "cuda" if config.amp is None else config.amp
    model.to(device).train()
    optimizer = make_optimizer(model, config)

    # 3. Run directory: refuse to clobber; load the latest checkpoint when resuming.
    out = Path(config.out_dir) if config.out_dir else None
    start, resumed_from, ref_loss, metrics = 0, None, None, []
    window = {"loss": 0.0, "grad_norm": 0.0, "n": 0}
    elapsed_before = 0.0
    ema_state: tuple[Path, int] | None = None
    if out is not None:
        ckpt = prepare_run_dir(out, run_identity(config, model), resume, overwrite, rank)
        if world > 1:
            dist.barrier()
        if ckpt is not None:
            load_weights(ckpt / "model", model)
            state = load_training_state(ckpt / "state", optimizer=optimizer)
            start = resumed_from = state["step"]
            extra = state["extra"]
            ref_loss, window, elapsed_before = extra["ref_loss"], extra["window"], extra["elapsed_s"]
            if config.ema_decay is not None and (ckpt / "ema.safetensors").is_file():
                ema_state = (ckpt / "ema", extra["ema_updates"])
            if (out / "metrics.csv").is_file():
                metrics = [r for r in read_metrics(out / "metrics.csv") if r["step"] <= start]
        if main:
            write_metrics(out / "metrics.csv", metrics)

    # 4. Wrap for DDP (this broadcasts rank 0's weights), then make the EMA copy.
    forward = _LossForward(model)
    if world > 1:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.ddp_find_unused)
    if config.compile and device.type == "cuda":  # opt-in; the first steps pay the compilation
        forward = torch.compile(forward)
    ema = None
    if config.ema_decay is not None:
        ema = EMA(model, config.ema_decay, warmup=config.ema_warmup)
        if ema_state is not None:
            load_weights(ema_state[0], ema.model)
            ema.num_updates = ema_state[1]
        elif resumed_from is not None:
            raise ValueError(f"checkpoint {resumed_from} has no EMA weights but ema_decay is set")

    get_batch = _batches(data, rank, world)
    params = [p for p in model.parameters() if p.requires_grad]
    from tqdm import tqdm

    bar = tqdm(total=config.steps, initial=start, disable=not (config.progress and main),
               mininterval=1.0, dynamic_ncols=True, desc="train")
    t_start = t_log = time.perf_counter()
    images_since_log = 0
    last_saved = completed = start

    def save(completed: int) -> None:
        extra = {"ref_loss": ref_loss, "window": window, "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                 "ema_updates": ema.num_updates if ema is not None else 0}
        save_step(out / "checkpoints", completed, model, ema, optimizer, config, extra)

    # 5. The loop: one optimizer step per iteration.
    try:
        for step in range(start, config.steps):
            # 5a. Batch and randomness, both fixed by the step number (exact resume).
            _seed_all(config.seed, step)
            batch = _to_device(get_batch(step), device)
            _seed_all(config.seed, step, rank + 1)
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # 5b. Forward, backward, clip.
            with autocast(device, enabled=amp):
                loss = forward(batch)
            if loss.dim() != 0:
                raise ValueError(f"model.loss(batch) must return a scalar, got shape {tuple(loss.shape)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf"))

            # 5c. Stop before a bad update (grads are all-reduced, so every rank agrees).
            loss_value = loss.detach().float()
            if world > 1:
                dist.all_reduce(loss_value)
                loss_value /= world
            loss_value, gn = loss_value.item(), grad_norm.item()
            if ref_loss is None:
                ref_loss = loss_value
            bad = not (math.isfinite(loss_value) and math.isfinite(gn))
            exploded = (config.explode_factor is not None and ref_loss > 0
                        and loss_value > config.explode_factor * ref_loss)
            if bad or exploded:
                what = f"loss is {loss_value:g}" + (f" (grad norm {gn:g})" if bad else
                                                      f", over {config.explode_factor:g}x the first loss {ref_loss:.4g}")
                where = f"; last checkpoint: step {last_saved}" if out is not None and last_saved else ""
                raise TrainingDiverged(
                    f"step {step}: {what}. Stopped before this update, so the weights are those after "
                    f"step {step - 1}{where}. Likely causes: the learning rate is too high (lr at this "
                    f"step {lr:.3g}: lower it, lengthen warm-up, keep grad_clip on), or the data is not "
                    f"in [-1, 1] (this batch: {_data_ranges(batch)})."
                )

            # 5d. Update weights and EMA.
            optimizer.step()
            if ema is not None:
                ema.update(model)
            completed = step + 1
            bar.update(1)

            # 5e. Metrics: window means over the steps since the last row.
            window["loss"] += loss_value
            window["grad_norm"] += gn
            window["n"] += 1
            images_since_log += _batch_size(batch) * world
            time_up = config.max_seconds is not None and time.perf_counter() - t_start >= config.max_seconds
            if world > 1 and config.max_seconds is not None:  # every rank stops at the same step
                flag = torch.tensor(float(time_up), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                time_up = bool(flag.item())
            if completed % config.log_every == 0 or completed == config.steps or time_up:
                now = time.perf_counter()
                row = {"step": completed, "loss": window["loss"] / window["n"], "lr": lr,
                       "grad_norm": window["grad_norm"] / window["n"],
                       "img_per_s": images_since_log / max(now - t_log, 1e-9),
                       "time_s": elapsed_before + now - t_start}
                metrics.append(row)
                window = {"loss": 0.0, "grad_norm": 0.0, "n": 0}
                t_log, images_since_log = now, 0
                if main:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                    if out is not None:
                        append_metrics(out / "metrics.csv", row)

            # 5f. Checkpoint every ckpt_every steps and at the end (rank 0 writes, all wait).
            if out is not None and (completed == config.steps or time_up
                                    or (config.ckpt_every and completed % config.ckpt_every == 0)):
                if main:
                    save(completed)
                last_saved = completed
                if world > 1:
                    dist.barrier()
            if time_up:
                if main:  # tqdm.write prints even when the bar is disabled: rank 0 only
                    bar.write(f"max_seconds={config.max_seconds:g} reached: stopped after step {completed} of {config.steps}")
                break
    except KeyboardInterrupt:
        # Nothing silently loses work: keep the completed steps (single process only).
        if out is not None and main and world == 1 and completed > last_saved:
            save(completed)
            bar.write(f"interrupted: saved a checkpoint at step {completed}; call train() again to resume")
        raise
    finally:
        bar.close()

    return TrainResult(model=model, ema=ema.model if ema is not None else None, metrics=metrics,
                       step=completed, resumed_from=resumed_from, out_dir=out,
                       train_time_s=time.perf_counter() - t_start)
