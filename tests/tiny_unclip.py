"""A tiny random unCLIP pipeline for tests: 16×16 decoder, 32×32 upsampler, 100-step schedules.

Shared by test_pipeline.py, test_cli.py and test_bad_input.py; it checks wiring, not image quality.
"""
from __future__ import annotations

import torch

from dalle_mini_core.clip import CLIPModel, clip_config
from dalle_mini_core.decoder import Decoder, DecoderConfig
from dalle_mini_core.prior import DiffusionPrior, PriorConfig
from dalle_mini_core.unet import UNetConfig
from dalle_mini_core.upsampler import Upsampler, UpsamplerConfig

D = 16  # embedding size


def tiny_parts(seed: int = 0):
    torch.manual_seed(seed)
    clip = CLIPModel(clip_config("shapes", image_size=16, vision_width=32, vision_layers=1, vision_head_width=16,
                                 text_width=32, text_layers=1, text_heads=2, embed_dim=D))
    prior = DiffusionPrior(PriorConfig(embed_dim=D, width=32, depth=1, heads=2, num_timesteps=100))
    unet = UNetConfig(image_size=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(8,), num_heads=1, num_groups=4)
    decoder = Decoder(DecoderConfig(unet=unet, embed_dim=D, context_width=16, num_timesteps=100, spatial="attention"))
    up_unet = UNetConfig(image_size=32, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                         attention_resolutions=(), num_heads=1, num_groups=4)
    upsampler = Upsampler(UpsamplerConfig(unet=up_unet, low_res_size=16, num_timesteps=100))
    with torch.no_grad():  # zero-initialised output layers would make an untrained net ignore its conditioning
        for part in (decoder, upsampler):
            for p in part.parameters():
                if not p.any():
                    p.normal_(0, 0.05)
    return clip.eval(), prior.eval(), decoder.eval(), upsampler.eval()


def tiny_pipeline(seed: int = 0):
    from dalle_mini_core.pipeline import UnCLIP

    return UnCLIP(*tiny_parts(seed))
