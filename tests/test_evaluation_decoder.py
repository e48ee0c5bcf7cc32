"""Measuring a decoder (dalle_mini_core.evaluation.decoder): decoded attributes read back (shapes)
and decoded pictures retrieved among their sources (emoji)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.decoder import Decoder, DecoderConfig
from dalle_mini_core.evaluation.decoder import decoded_attribute_accuracy, decoded_retrieval
from dalle_mini_core.unet import UNetConfig

from tiny_models import FakeCLIP

D = 8




def _decoder(embed_dim: int, **overrides) -> Decoder:
    unet = UNetConfig(image_size=32, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=overrides.pop("attention_resolutions", ()), num_heads=2, num_groups=8)
    return Decoder(DecoderConfig(unet=unet, embed_dim=embed_dim, context_width=16, **overrides))


def test_decoded_attribute_accuracy_runs_end_to_end():
    torch.manual_seed(0)
    dec = _decoder(D, attention_resolutions=(16,), spatial="attention")
    acc = decoded_attribute_accuracy(dec, FakeCLIP(), num_images=3, steps=2, batch_size=2)
    assert acc["images"].shape == (3, 3, 32, 32) and len(acc["captions"]) == 3
    assert all(0.0 <= acc[k] <= 1.0 for k in ("shape", "colour", "size", "position", "all"))
    assert acc["all"] <= min(acc[k] for k in ("shape", "colour", "size", "position"))
    assert acc["captions"][0].startswith("a ")  # the full one-object template
    assert dec.training  # the decoder's mode is given back


def test_decoded_retrieval_on_emoji_test_pictures():
    from dalle_mini_core.clip import CLIPModel, clip_config
    from dalle_mini_core.data.emoji import EmojiDataset

    torch.manual_seed(0)
    clip = CLIPModel(clip_config("emoji")).eval()
    ds = EmojiDataset("test", image_size=64)
    images = torch.stack([ds[i][0] for i in range(6)])  # (6, 3, 64, 64)
    with torch.no_grad():
        bank = {"image": F.avg_pool2d(images, 2), "image_emb": clip.encode_image(images)}
    # a tiny decoder of the bank's embedding size: the measure runs and stays in range
    dec = _decoder(clip.embed_dim).eval()
    r = decoded_retrieval(dec, clip, bank, clip_size=64, steps=2, seed=0)
    assert r["n"] == 6 and 0.0 <= r["top1"] <= r["top5"] <= 1.0 and r["images"].shape == (6, 3, 32, 32)
    assert -1.0 <= r["cosine_to_source"] <= 1.0
    again = decoded_retrieval(dec, clip, bank, clip_size=64, steps=2, seed=0)
    assert torch.equal(again["images"], r["images"]) and again["top1"] == r["top1"]  # seeded
