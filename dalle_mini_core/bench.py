"""U-Net speed benchmark: our U-Net against the U-Nets of other libraries, at one matched shape.

What is measured, per model, at one matched configuration (32×32 or 64×64 RGB, base 64
channels, channel multipliers 1-2-2, two residual blocks per level, attention at 16×16):

* ``params`` and forward FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode``
  with attention forced onto PyTorch's math path so every library's attention is counted
  the same way (as its matrix products);
* training images/s: forward + MSE loss + backward + AdamW step, batch 32 (wall clock; on CPU also
  per CPU-second of this process, which with ``threads=1`` barely moves when other programs load
  the machine);
* seconds per sampling step: one forward under ``torch.no_grad``, batch 16;
* achieved GFLOP/s in training ≈ 3 × forward FLOPs × images/s (backward ≈ 2 × forward), and,
  as the ceiling, the machine's own matrix-multiply GFLOP/s measured in the same run
  (fp32; on CUDA also bf16, since the models run there under bf16 autocast).

Timings are noisy on a shared machine, so each measurement is repeated ``repeats`` times,
interleaved across models (model order rotates every round), and the medians are reported.
A peer library that is not installed is reported as missing, never faked.

Peers and how each is built at the matched shape (their own knobs, their own defaults
otherwise):

* ``denoising_diffusion_pytorch.Unet`` (unconditioned): dim=64, dim_mults=(1, 2, 2),
  full attention at the 16×16 level (its other levels keep their linear attention),
  ``flash_attn=True`` so it also uses ``scaled_dot_product_attention``.
* ``diffusers.UNet2DModel`` (unconditioned): block_out_channels=(64, 128, 128),
  layers_per_block=2, attention block at 16×16, 32 channels per head, scale-shift norm.
* ``diffusers.UNet2DConditionModel`` (conditioned): the same, with cross-attention
  transformer blocks at 16×16 and in the middle, a projected class embedding for ``cond``.
* ``dalle2_pytorch.Unet`` (conditioned): dim=64, dim_mults=(1, 2, 2), self-attention at 16×16,
  ``num_resnet_blocks=2`` (its knob for blocks per level, also its default; it builds
  1 + num_resnet_blocks blocks per level, 3 down and 3 up, where ADM has 2 down and 3 up), so it
  is also timed with ``num_resnet_blocks=1`` (2 down, 2 up: less work than ADM's layout);
  image embedding and text encodings as conditioning (its token width cond_dim left at its
  default, dim; with cond_dim == image_embed_dim its image-token path breaks).

Conditioned models get a global vector (``COND_DIM``) and ``CONTEXT_TOKENS`` context tokens of
width ``CONTEXT_DIM`` (a stand-in for unCLIP's CLIP image embedding and text tokens).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .unet import UNet, UNetConfig

__all__ = [
    "MATCHED_CONFIGS",
    "PEERS",
    "COND_DIM",
    "CONTEXT_DIM",
    "CONTEXT_TOKENS",
    "ours_config",
    "forward_flops_per_image",
    "matmul_gflops",
    "run_benchmark",
    "format_table",
]

MATCHED_CONFIGS = {"ref32": 32, "ref64": 64}  # name → image size; everything else is shared
PEERS = (
    "denoising_diffusion_pytorch.Unet",
    "diffusers.UNet2DModel",
    "diffusers.UNet2DConditionModel",
    "dalle2_pytorch.Unet",
    "dalle2_pytorch.Unet[num_resnet_blocks=1]",
)
COND_DIM = 256  # width of the global conditioning vector (e.g. a CLIP image embedding)
CONTEXT_DIM = 256  # width of each context token (e.g. text-encoder outputs)
CONTEXT_TOKENS = 32  # number of context tokens (the course tokenises captions to 32)
NUM_TIMESTEPS = 1000


def ours_config(image_size: int, conditioned: bool = False) -> UNetConfig:
    """Our U-Net at the matched shape (base 64, 1-2-2, 2 blocks per level, attention at 16)."""
    return UNetConfig(
        image_size=image_size,
        base_channels=64,
        channel_mult=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        num_heads=4,
        cond_dim=COND_DIM if conditioned else None,
        context_dim=CONTEXT_DIM if conditioned else None,
    )


# --------------------------------------------------------------------------------------------
# Candidates: a uniform way to build each model and feed it
# --------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One model to time: how to build it, how to call it on a batch, and notes."""

    name: str
    conditioned: bool
    build: Callable[[], nn.Module]
    call: Callable[[nn.Module, dict], torch.Tensor]  # (model, batch) → prediction tensor
    channels_last: bool = False  # move model and inputs to channels_last
    note: str = ""


def _make_batch(batch: int, size: int, device: torch.device, generator: torch.Generator) -> dict:
    """Random x_t, timesteps, a global vector and context tokens (all models take what they need)."""
    x = torch.randn(batch, 3, size, size, generator=generator)
    t = torch.randint(0, NUM_TIMESTEPS, (batch,), generator=generator)
    cond = torch.randn(batch, COND_DIM, generator=generator)
    context = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=generator)
    target = torch.randn(batch, 3, size, size, generator=generator)
    return {k: v.to(device) for k, v in dict(x=x, t=t, cond=cond, context=context, target=target).items()}


def _ours(size: int, conditioned: bool) -> Candidate:
    config = ours_config(size, conditioned)

    def call(model, b):
        if conditioned:
            return model(b["x"], b["t"], cond=b["cond"], context=b["context"])
        return model(b["x"], b["t"])

    name = "dalle_mini_core" + ("+cond" if conditioned else "")
    return Candidate(name, conditioned, lambda: UNet(config), call, channels_last=True,
                     note="channels_last; cross-attention = context keys/values concatenated")


def _ddpm_unet(size: int) -> Candidate:
    from denoising_diffusion_pytorch import Unet

    def build():
        return Unet(dim=64, dim_mults=(1, 2, 2), full_attn=(False, True, False), flash_attn=True)

    return Candidate("denoising_diffusion_pytorch.Unet", False, build, lambda m, b: m(b["x"], b["t"]),
                     note="full attention at 16x16, linear attention at 32x32 and 8x8 (its design)")


def _diffusers_unet2d(size: int) -> Candidate:
    from diffusers import UNet2DModel

    def build():
        return UNet2DModel(
            sample_size=size, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128),
            layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=32,
            norm_num_groups=32, resnet_time_scale_shift="scale_shift",
        )

    return Candidate("diffusers.UNet2DModel", False, build, lambda m, b: m(b["x"], b["t"]).sample)


def _diffusers_unet2d_condition(size: int) -> Candidate:
    from diffusers import UNet2DConditionModel

    def build():
        return UNet2DConditionModel(
            sample_size=size, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128),
            layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=4,  # in this class the argument is the number of heads (diffusers #2011)
            cross_attention_dim=CONTEXT_DIM, norm_num_groups=32, resnet_time_scale_shift="scale_shift",
            class_embed_type="projection", projection_class_embeddings_input_dim=COND_DIM,
        )

    def call(m, b):
        return m(b["x"], b["t"], encoder_hidden_states=b["context"], class_labels=b["cond"]).sample

    return Candidate("diffusers.UNet2DConditionModel", True, build, call,
                     note="transformer blocks (self-attn, cross-attn, GEGLU MLP) at 16x16 and middle")


def _dalle2_unet(size: int, num_resnet_blocks: int = 2) -> Candidate:
    from dalle2_pytorch import Unet

    def build():
        return Unet(
            dim=64, dim_mults=(1, 2, 2), num_resnet_blocks=num_resnet_blocks, self_attn=(False, True, False),
            attn_heads=4, attn_dim_head=32, image_embed_dim=COND_DIM, text_embed_dim=CONTEXT_DIM,
            cond_on_image_embeds=True, cond_on_text_encodings=True,
            max_text_len=CONTEXT_TOKENS,
        )

    def call(m, b):
        return m(b["x"], b["t"], image_embed=b["cond"], text_encodings=b["context"])

    name = "dalle2_pytorch.Unet" + ("" if num_resnet_blocks == 2 else f"[num_resnet_blocks={num_resnet_blocks}]")
    blocks = 1 + num_resnet_blocks
    return Candidate(name, True, build, call,
                     note=f"num_resnet_blocks={num_resnet_blocks} ({blocks} down + {blocks} up blocks per level); "
                     "cross-attention inside ResBlocks")


_PEER_FACTORIES = {
    "denoising_diffusion_pytorch.Unet": _ddpm_unet,
    "diffusers.UNet2DModel": _diffusers_unet2d,
    "diffusers.UNet2DConditionModel": _diffusers_unet2d_condition,
    "dalle2_pytorch.Unet": _dalle2_unet,
    "dalle2_pytorch.Unet[num_resnet_blocks=1]": lambda size: _dalle2_unet(size, 1),
}


def _candidates(size: int, peers: Sequence[str]) -> tuple[list[Candidate], list[dict]]:
    """Ours (plain and conditioned) plus every peer that imports; missing peers get a note."""
    unknown = [p for p in peers if p not in _PEER_FACTORIES]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; choose from {list(_PEER_FACTORIES)}")
    found, missing = [_ours(size, False), _ours(size, True)], []
    for peer in peers:
        try:
            found.append(_PEER_FACTORIES[peer](size))
        except ImportError as exc:
            missing.append({"name": peer, "missing": f"not installed ({exc.name or exc})"})
    return found, missing


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def forward_flops_per_image(model: nn.Module, call: Callable, batch: dict) -> float:
    """Forward FLOPs per image, counted with FlopCounterMode (attention on the math path)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    device = batch["x"].device
    # under the timed runs' autocast: a peer that forces the flash kernel on CUDA needs bf16 inputs
    # (the count is the same in any dtype; a peer's own kernel choice overrides the math path)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), _autocast(device), counter:
        call(model, batch)
    return counter.get_total_flops() / batch["x"].shape[0]


def _timed_rate(fn: Callable[[], Any], flops: float, device: torch.device, iters: int, min_seconds: float,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """GFLOP/s of `fn` (worth `flops`), run at least `iters` times and at least `min_seconds` of `clock`."""
    fn()  # warm-up
    _sync(device)
    done, start = 0, clock()
    while done < iters or clock() - start < min_seconds:
        fn()
        done += 1
        _sync(device)
    return flops * done / (clock() - start) / 1e9


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                  iters: int | None = None, min_seconds: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> float:
    """Achieved GFLOP/s of a square n×n matrix product (2n³ FLOPs), over ≥ `iters` calls and ≥ `min_seconds`
    (long enough that a busy machine's scheduling averages out as it does for the models' steps)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    iters = iters or (20 if device.type == "cuda" else 4)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return _timed_rate(lambda: a @ b, 2 * n**3, device, iters, min_seconds, clock)


def onednn_gemm_gflops(n: int = 1024, iters: int = 4, min_seconds: float = 1.0,
                       clock: Callable[[], float] = time.perf_counter) -> float:
    """CPU only: GFLOP/s of the same n×n×n product run as a 1×1 convolution (oneDNN).

    On some CPUs (AMD with Intel MKL, as on the course's test machine) torch.mm's BLAS runs a
    slow path while oneDNN's convolutions do not, so a U-Net made of convolutions can beat the
    torch.mm "ceiling"; this second ceiling keeps the fractions honest.
    """
    x = torch.randn(1, n, 32, n // 32).contiguous(memory_format=torch.channels_last)  # n pixels × n channels
    w = torch.randn(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    return _timed_rate(lambda: F.conv2d(x, w), 2 * n**3, torch.device("cpu"), iters, min_seconds, clock)


class _Timed:
    """A built model with its optimizer and fixed batches, ready to time one step at a time."""

    def __init__(self, cand: Candidate, size: int, device: torch.device, train_batch: int, sample_batch: int, seed: int):
        torch.manual_seed(seed)
        self.cand = cand
        self.device = device
        model = cand.build().to(device)
        self.params = sum(p.numel() for p in model.parameters())
        g = torch.Generator().manual_seed(seed)
        self.train_b = _make_batch(train_batch, size, device, g)
        self.sample_b = _make_batch(sample_batch, size, device, g)
        if cand.channels_last:
            model = model.to(memory_format=torch.channels_last)
            for b in (self.train_b, self.sample_b):
                b["x"] = b["x"].contiguous(memory_format=torch.channels_last)
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.fwd_flops = forward_flops_per_image(model.eval(), cand.call, _make_batch(2, size, device, g))

    def train_step(self, inner: int = 1) -> tuple[float, float]:
        """(wall, CPU) seconds per step of forward + MSE + backward + AdamW on the training batch,
        averaged over `inner` back-to-back steps (one sync at each end: on a GPU a lone step is
        mostly launch latency)."""
        model, b = self.model.train(), self.train_b
        _sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(inner):
            with _autocast(self.device):
                loss = F.mse_loss(self.cand.call(model, b).float(), b["target"])
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        return (time.perf_counter() - start) / inner, (time.process_time() - cpu_start) / inner

    def sample_step(self, inner: int = 1) -> tuple[float, float]:
        """(wall, CPU) seconds per no-grad forward on the sampling batch (one denoising step),
        averaged over `inner` back-to-back calls."""
        model, b = self.model.eval(), self.sample_b
        _sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad(), _autocast(self.device):
            for _ in range(inner):
                self.cand.call(model, b)
        _sync(self.device)
        return (time.perf_counter() - start) / inner, (time.process_time() - cpu_start) / inner


def run_benchmark(
    configs: Sequence[str] = ("ref32",),
    peers: Sequence[str] = PEERS,
    device: str | torch.device | None = None,
    repeats: int = 5,
    json_path: str | Path | None = None,
    *,
    train_batch: int = 32,
    sample_batch: int = 16,
    warmup: int = 1,
    seed: int = 0,
    threads: int | None = None,
    inner: int | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Time our U-Net and the installed peers at each matched config; return (and save) a dict.

    Returns {"device", "torch", "threads", "repeats", "matmul_gflops", ["matmul_bf16_gflops"],
    "results": [{name, config, params, fwd_gflops_per_image, train_img_per_s, sample_s_per_step,
    train_gflops_per_s, device, ...}], "missing": [...]}; all timings are medians over `repeats`.
    Each timing averages `inner` back-to-back steps (default 1 on CPU, 10 on CUDA).
    """
    from .device import get_device

    device = torch.device(device) if device is not None else get_device()
    unknown = [c for c in configs if c not in MATCHED_CONFIGS]
    if unknown:
        raise ValueError(f"unknown configs {unknown}; choose from {list(MATCHED_CONFIGS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    inner = inner if inner is not None else (10 if device.type == "cuda" else 1)
    if inner < 1:
        raise ValueError(f"inner must be >= 1, got {inner}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)  # on a crowded CPU one thread avoids OpenMP spin-waits
    say = log or (lambda s: None)
    out: dict[str, Any] = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "train_batch": train_batch,
        "sample_batch": sample_batch,
        "inner_steps": inner,
        "autocast": "bf16" if device.type == "cuda" else "off (fp32)",
        "results": [],
        "missing": [],
    }
    fp32_runs, bf16_runs, onednn_runs, cpu_peak_runs = [], [], [], []
    for config in configs:
        size = MATCHED_CONFIGS[config]
        cands, missing = _candidates(size, peers)
        out["missing"] += [dict(m, config=config) for m in missing]
        for m in missing:
            say(f"[{config}] skipping {m['name']}: {m['missing']}")
        timed = []
        for i, c in enumerate(cands):
            say(f"[{config}] building {c.name}")
            try:  # a peer that fails on this device is reported, not fatal to the whole table
                tm = _Timed(c, size, device, train_batch, sample_batch, seed + i)
                for _ in range(warmup):  # warm-up: first calls pay for allocation and kernel selection
                    tm.train_step()
                    tm.sample_step()
            except Exception as exc:  # noqa: BLE001 - any peer failure is recorded with its message
                out["missing"].append({"name": c.name, "missing": f"failed: {type(exc).__name__}: {exc}"[:300],
                                       "config": config})
                say(f"[{config}] {c.name} failed: {type(exc).__name__}: {exc}")
                continue
            timed.append(tm)
        say(f"[{config}] warm-up done")
        train_s = {tm.cand.name: [] for tm in timed}  # (wall, cpu) pairs
        sample_s = {tm.cand.name: [] for tm in timed}
        for r in range(repeats):
            fp32_runs.append(matmul_gflops(device, torch.float32))
            if device.type == "cuda":
                bf16_runs.append(matmul_gflops(device, torch.bfloat16))
            elif device.type == "cpu":
                onednn_runs.append(onednn_gemm_gflops())
                cpu_peak_runs.append(max(matmul_gflops(device, clock=time.process_time),
                                         onednn_gemm_gflops(clock=time.process_time)))
            order = timed[r % len(timed):] + timed[: r % len(timed)]  # rotate the order each round
            for tm in order:
                train_s[tm.cand.name].append(tm.train_step(inner))
                sample_s[tm.cand.name].append(tm.sample_step(inner))
            say(f"[{config}] round {r + 1}/{repeats} done")
        for tm in timed:
            name = tm.cand.name
            t_train = statistics.median(w for w, _ in train_s[name])
            img_per_s = train_batch / t_train
            row = {
                "name": name,
                "config": config,
                "conditioned": tm.cand.conditioned,
                "params": tm.params,
                "fwd_gflops_per_image": tm.fwd_flops / 1e9,
                "train_img_per_s": img_per_s,
                "sample_s_per_step": statistics.median(w for w, _ in sample_s[name]),
                "train_gflops_per_s": 3 * tm.fwd_flops * img_per_s / 1e9,
                "device": out["device"],
                "note": tm.cand.note,
            }
            if device.type == "cpu":
                # CPU seconds of this process: with one thread, robust to other programs' load
                row["train_img_per_cpu_s"] = train_batch / statistics.median(c for _, c in train_s[name])
                row["train_gflops_per_cpu_s"] = 3 * tm.fwd_flops * row["train_img_per_cpu_s"] / 1e9
                row["sample_cpu_s_per_step"] = statistics.median(c for _, c in sample_s[name])
            out["results"].append(row)
        del timed
    out["matmul_gflops"] = statistics.median(fp32_runs)
    if bf16_runs:
        out["matmul_bf16_gflops"] = statistics.median(bf16_runs)
    if onednn_runs:
        out["gemm_onednn_gflops"] = statistics.median(onednn_runs)
    # the ceiling: bf16 matmul under CUDA autocast; on CPU the faster of the two fp32 GEMMs
    peak = out.get("matmul_bf16_gflops") or max(out["matmul_gflops"], out.get("gemm_onednn_gflops", 0.0))
    out["peak_gflops"] = peak
    if cpu_peak_runs:  # the same ceiling per CPU-second: comparable with train_gflops_per_cpu_s
        out["peak_gflops_per_cpu_s"] = statistics.median(cpu_peak_runs)
    for row in out["results"]:
        row["fraction_of_matmul_peak"] = row["train_gflops_per_s"] / peak
        if "train_gflops_per_cpu_s" in row:
            row["fraction_of_peak_per_cpu_s"] = row["train_gflops_per_cpu_s"] / out["peak_gflops_per_cpu_s"]
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))
    return out


def format_table(result: dict) -> str:
    """The benchmark's results as a Markdown table (medians)."""
    peak_name = "bf16 matmul" if "matmul_bf16_gflops" in result else "fp32 GEMM"
    lines = [
        f"device: {result['device']}, torch {result['torch']}, threads {result['threads']}, "
        f"autocast {result['autocast']}, repeats {result['repeats']} (medians)",
        f"fp32 matmul (torch.mm): {result['matmul_gflops']:.1f} GFLOP/s"
        + (f", fp32 GEMM as 1x1 conv (oneDNN): {result['gemm_onednn_gflops']:.1f} GFLOP/s" if "gemm_onednn_gflops" in result else "")
        + (f", bf16 matmul: {result['matmul_bf16_gflops']:.1f} GFLOP/s" if "matmul_bf16_gflops" in result else "")
        + (f"; ceiling per CPU-second: {result['peak_gflops_per_cpu_s']:.1f} GFLOP/CPU-s" if "peak_gflops_per_cpu_s" in result else ""),
        "",
        f"| config | model | params (M) | fwd GFLOP/img | train img/s | sample s/step | train GFLOP/s | of {peak_name} "
        "| train img/CPU-s | sample CPU-s/step | train GFLOP/CPU-s | of ceiling per CPU-s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["results"]:
        cpu = (f"{r['train_img_per_cpu_s']:.2f} | {r['sample_cpu_s_per_step']:.3f} | {r['train_gflops_per_cpu_s']:.1f} | "
               f"{100 * r['fraction_of_peak_per_cpu_s']:.1f}%" if "train_img_per_cpu_s" in r else "– | – | – | –")
        lines.append(
            f"| {r['config']} | {r['name']} | {r['params'] / 1e6:.2f} | {r['fwd_gflops_per_image']:.3f} | "
            f"{r['train_img_per_s']:.2f} | {r['sample_s_per_step']:.4f} | {r['train_gflops_per_s']:.1f} | "
            f"{100 * r['fraction_of_matmul_peak']:.1f}% | {cpu} |"
        )
    for m in result.get("missing", []):
        lines.append(f"| {m['config']} | {m['name']} | missing: {m['missing']} | | | | | | | | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python benchmarks/bench_unet.py [--configs ref32 ref64] [--json FILE]``."""
    import argparse

    p = argparse.ArgumentParser(description="U-Net speed benchmark against peer libraries")
    p.add_argument("--configs", nargs="+", default=["ref32"], choices=list(MATCHED_CONFIGS))
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--inner", type=int, default=None, help="back-to-back steps per timing (default 1 on CPU, 10 on CUDA)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    result = run_benchmark(args.configs, args.peers, args.device, args.repeats, args.json,
                           train_batch=args.train_batch, sample_batch=args.sample_batch, threads=args.threads,
                           inner=args.inner)
    print(format_table(result))
    return 0
