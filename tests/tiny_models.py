"""Tiny models and inputs shared by the model tests and the evaluation tests (built in milliseconds).

Imported by test files as ``from tiny_models import ...`` (tests/ is on the path, as for tiny_unclip).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.clip import CLIPConfig
from dalle_mini_core.prior import PriorConfig

# A CLIP small enough to build and run in a fraction of a second.
TINY_CLIP = CLIPConfig(
    image_size=16, patch_size=4, vision_width=32, vision_layers=1, vision_head_width=16,
    text_width=32, text_layers=1, text_heads=2, embed_dim=16, context_length=16,
)
CAPTIONS = ["a red circle", "a blue square", "a big green triangle at the top", "a small yellow star"]

# A prior over 8-d embeddings, 5-token captions from a 50-word vocabulary, 50 timesteps.
PRIOR_D, PRIOR_L, PRIOR_V = 8, 5, 50


def tiny_prior_config(**overrides) -> PriorConfig:
    fields = dict(embed_dim=PRIOR_D, width=32, depth=2, heads=2, context_length=PRIOR_L, vocab_size=PRIOR_V,
                  num_timesteps=50)
    fields.update(overrides)
    return PriorConfig(**fields)


def random_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uniform in [-1, 1], seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def unit_vectors(*shape: int, seed: int = 0) -> torch.Tensor:
    """Gaussian vectors of the given shape, normalised along the last axis, seeded."""
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


class FakeCLIP(torch.nn.Module):
    """encode_image: a fixed random projection of the pixels to `dim`, unit-normalised (stands in for CLIP)."""

    def __init__(self, size: int = 32, dim: int = 8) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * size * size, dim)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(images.flatten(1)), dim=-1)
