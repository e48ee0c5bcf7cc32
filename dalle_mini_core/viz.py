"""Pictures: image grids, trajectories and small plots shared by the notebooks and the CLI.

Images everywhere in the course are float tensors in [-1, 1], NCHW (or CHW). These helpers
turn them into grids, PNG files or matplotlib figures. Figures are small and low-dpi so a
saved notebook stays under 2 MB.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["to_uint8", "image_grid", "save_grid", "show_images"]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW (or CHW) tensor → uint8 NHWC (or HWC) array."""
    if not torch.is_tensor(images):
        raise TypeError(f"expected a torch.Tensor, got {type(images).__name__}")
    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    if x.dim() == 3:
        return x.permute(1, 2, 0).numpy()  # (H, W, C)
    raise ValueError(f"expected CHW or NCHW images, got shape {tuple(images.shape)}")


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """Tile N images (N, C, H, W) into one (C, H', W') image, `nrow` images per row."""
    if images.dim() != 4:
        raise ValueError(f"expected NCHW images, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol_rows = math.ceil(n / nrow)
    grid = torch.full((c, ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i].detach().cpu()
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid; `scale` enlarges with nearest neighbours."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = to_uint8(image_grid(images, nrow=nrow))
    img = Image.fromarray(grid)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path


def show_images(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    nrow: int | None = None,
    size: float = 1.2,
    suptitle: str | None = None,
):
    """Show images (N, C, H, W) in [-1, 1] in a matplotlib grid; returns the figure."""
    import matplotlib.pyplot as plt

    if images.dim() == 3:
        images = images[None]
    n = images.shape[0]
    nrow = nrow or min(n, 8)
    rows = math.ceil(n / nrow)
    fig, axes = plt.subplots(rows, nrow, figsize=(size * nrow, (size + (0.45 if titles else 0)) * rows), dpi=72, squeeze=False)
    arr = to_uint8(images)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(arr[i], interpolation="nearest")
            if titles is not None and i < len(titles):
                ax.set_title(textwrap.fill(str(titles[i]), 22), fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    return fig


def show_noising(x: torch.Tensor, t: int, schedule, *, seed: int = 0, size: float = 1.5):
    """One image noised to step `t` by a `NoiseSchedule`: x_0, ε, x_t, and ᾱ over time with t marked.

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (Ho et al. 2020, Eq. 4). Pure: ε is drawn from `seed`,
    so the same arguments give the same figure, and sliding `t` fades one fixed noise sample in.
    `x` is one image, (C, H, W) or (1, C, H, W), in [-1, 1]. Returns the figure.
    """
    import matplotlib.pyplot as plt

    x = x.detach().float().cpu()
    if x.dim() == 3:
        x = x[None]  # (1, C, H, W)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image, (C, H, W) or (1, C, H, W), got shape {tuple(x.shape)}")
    T = schedule.num_timesteps
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T:
        raise ValueError(f"t must be an int in [0, {T - 1}], got {t!r}")
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    x_t = schedule.q_sample(x, t, noise=eps).cpu()
    alphas_cumprod = schedule.alphas_cumprod.detach().cpu()
    abar = alphas_cumprod[t].item()

    fig, axes = plt.subplots(1, 4, figsize=(size * 4.6, size + 0.4), dpi=72, gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    for ax, img, title in zip(axes[:3], (x, eps, x_t), ("x_0", "noise ε", f"x_t, t = {t}")):
        ax.imshow(to_uint8(img[0]), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    ax = axes[3]
    ax.plot(alphas_cumprod.numpy(), lw=1, label="ᾱ_t (signal²)")
    ax.plot((1 - alphas_cumprod).numpy(), lw=1, label="1 - ᾱ_t (noise²)")
    ax.axvline(t, color="k", lw=0.8, ls="--")
    ax.set_title(f"ᾱ_t = {abar:.3f}, SNR = {abar / max(1 - abar, 1e-12):.3g}", fontsize=8)
    ax.set_xlabel("t", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="center right")
    fig.tight_layout()
    return fig


__all__.append("show_noising")


def show_confusion(matrix: torch.Tensor, labels: Sequence[str], *, title: str = "", size: float = 2.6, ax=None):
    """Draw a (K, K) confusion matrix (rows = truth, columns = prediction) with its counts.

    Rows are normalised to fractions for the colours; the numbers are the raw counts.
    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    m = torch.as_tensor(matrix).detach().cpu()
    if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels):
        raise ValueError(f"matrix must be (K, K) with K = len(labels) = {len(labels)}, got {tuple(m.shape)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(size, size), dpi=72)
    else:
        fig = ax.figure
    frac = m.float() / m.sum(dim=1, keepdim=True).clamp(min=1)
    ax.imshow(frac.numpy(), cmap="Blues", vmin=0, vmax=1)
    k = len(labels)
    for i in range(k):
        for j in range(k):
            if m[i, j] > 0:
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(k), labels, fontsize=6)
    ax.set_xlabel("predicted", fontsize=7)
    ax.set_ylabel("true", fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    return fig


__all__.append("show_confusion")


def show_generation(
    pipeline,
    prompt: str = "a large red circle at the centre",
    prior_guidance: float = 2.0,
    decoder_guidance: float = 3.0,
    seed: int = 0,
    *,
    n: int = 4,
    size: float = 1.2,
    **generate_kwargs,
):
    """Run an `UnCLIP` pipeline on one prompt and show its `n` images: the decoder's low-res
    draw above the final (upsampled) image. Returns the figure (for the unCLIP notebook's widget)."""
    import matplotlib.pyplot as plt

    out = pipeline.generate([prompt], n_per_prompt=n, seed=seed, prior_guidance=prior_guidance,
                            decoder_guidance=decoder_guidance, return_intermediates=True, **generate_kwargs)
    rows = [("decoder", out.low_res)] + ([("upsampled", out.images)] if out.images.shape != out.low_res.shape else [])
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows) + 0.4), dpi=72, squeeze=False)
    for r, (label, images) in enumerate(rows):
        arr = to_uint8(images)
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(arr[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(f"{label}\n{images.shape[-1]}×{images.shape[-1]}", fontsize=7)
    fig.suptitle(textwrap.fill(f"{prompt!r}  prior s={prior_guidance}, decoder s={decoder_guidance}, seed {seed}", 70),
                 fontsize=8)
    fig.tight_layout()
    return fig


__all__.append("show_generation")
