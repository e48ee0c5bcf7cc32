"""Tests of the diffusion upsampler: no attention, conditioning corruption statistics, the
low-res path, sampling determinism, checkpoints. Tiny U-Nets (8 → 16 pixels)."""
from __future__ import annotations

import pytest
import torch

from dalle_mini_core.checkpoints import load_checkpoint, save_checkpoint
from dalle_mini_core.unet import AttentionBlock, UNetConfig
from dalle_mini_core.upsampler import (
    Upsampler,
    UpsamplerConfig,
    downsample,
    gaussian_blur,
)


def tiny_unet(**overrides) -> UNetConfig:
    fields = dict(image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(), num_heads=2, num_groups=8)
    fields.update(overrides)
    return UNetConfig(**fields)


def make(seed: int = 0, **overrides) -> Upsampler:
    torch.manual_seed(seed)
    up = Upsampler(UpsamplerConfig(unet=tiny_unet(), low_res_size=8, **overrides))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised output layers would hide the inputs' effect
        for p in up.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return up.eval()


def low_res_images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def high_frequency_energy(x: torch.Tensor) -> float:
    """Mean squared difference between neighbouring pixels (large for sharp, small for smooth images)."""
    return float(((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean())


# --- config -------------------------------------------------------------------------------------

def test_config_rejects_attention_and_bad_values():
    with pytest.raises(ValueError, match="no attention"):
        UpsamplerConfig(unet=tiny_unet(attention_resolutions=(8,)), low_res_size=8)
    with pytest.raises(ValueError, match="multiple"):
        UpsamplerConfig(unet=tiny_unet(), low_res_size=6)
    with pytest.raises(ValueError, match="blur_sigma"):
        UpsamplerConfig(unet=tiny_unet(), low_res_size=8, blur_sigma=(0.6, 0.4))
    with pytest.raises(ValueError, match="noise_aug_sample_t"):
        UpsamplerConfig(unet=tiny_unet(), low_res_size=8, noise_aug_max_t=10, noise_aug_sample_t=20)


def test_network_has_no_attention_at_all():
    up = make()
    assert not any(isinstance(m, AttentionBlock) for m in up.modules())
    assert up.config.unet_config().low_res_channels == 3


# --- corruption ---------------------------------------------------------------------------------

def test_gaussian_blur_reduces_high_frequencies_and_keeps_the_mean():
    x = low_res_images(4)
    sigma = torch.tensor([0.0, 0.5, 1.0, 2.0])
    y = gaussian_blur(x, sigma)
    torch.testing.assert_close(y[0], x[0])  # σ = 0 is the identity
    energies = [high_frequency_energy(y[i]) for i in range(4)]
    assert energies[0] > energies[1] > energies[2] > energies[3]
    big = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(gaussian_blur(big, 0.5).mean(dim=(1, 2, 3)), big.mean(dim=(1, 2, 3)), atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_blur_rate_and_range_follow_the_config():
    up = make(blur_probability=0.5, blur_sigma=(0.4, 0.6))
    out = up.corrupt(low_res_images(1).expand(4000, -1, -1, -1), torch.Generator().manual_seed(0))
    sigma = out["sigma"]
    blurred = sigma > 0
    assert abs(blurred.float().mean().item() - 0.5) < 0.03
    assert sigma[blurred].min() >= 0.4 and sigma[blurred].max() <= 0.6
    assert out["low_res"].shape == (4000, 3, 16, 16)
    sharp, soft = out["low_res"][~blurred][0], out["low_res"][blurred][0]
    assert high_frequency_energy(soft) < high_frequency_energy(sharp)
    assert (out["aug_t"] == 0).all()  # no noise augmentation in this config


def test_noise_augmentation_adds_noise_of_the_schedule_level():
    up = make(blur_probability=0.0, noise_aug_max_t=300, noise_aug_sample_t=50)
    z = low_res_images(1).expand(3000, -1, -1, -1)
    out = up.corrupt(z, torch.Generator().manual_seed(0))
    aug_t = out["aug_t"]
    assert aug_t.min() >= 0 and aug_t.max() <= 300 and aug_t.float().std() > 50  # spread over [0, 300]
    clean = up.upsample(z)
    # residual after removing the sqrt(ᾱ_s) signal has std sqrt(1 − ᾱ_s)
    a = up.schedule.alphas_cumprod[aug_t][:, None, None, None]
    residual = out["low_res"] - a.sqrt() * clean
    high = aug_t > 200
    expected = (1 - a[high]).sqrt().mean()
    torch.testing.assert_close(residual[high].std(), expected, atol=0.02, rtol=0.05)


def test_without_corruption_the_conditioning_is_the_bilinear_upsampling():
    up = make(blur_probability=0.0)
    z = low_res_images(3)
    torch.testing.assert_close(up.corrupt(z, torch.Generator().manual_seed(0))["low_res"], up.upsample(z))


# --- the low-res path, loss, sampling ---------------------------------------------------------------

def test_low_res_image_changes_the_output():
    up = make()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.full((2,), 400, dtype=torch.long)
    with torch.no_grad():
        a = up(x, t, low_res=up.upsample(low_res_images(2, 0)))
        b = up(x, t, low_res=up.upsample(low_res_images(2, 1)))
    assert not torch.allclose(a, b, atol=1e-5)


def test_loss_downsamples_the_image_when_no_low_res_is_given():
    up = make().train()
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = up.loss({"image": image}, generator=torch.Generator().manual_seed(2))
    b = up.loss({"image": image, "low_res": downsample(image, 8)}, generator=torch.Generator().manual_seed(2))
    assert a.dim() == 0 and a.item() == b.item()
    a.backward()
    assert up.net.unet.input_conv.weight.grad is not None
    with pytest.raises(ValueError, match="batch\\['image'\\]"):
        up.loss({"image": image[:, :, :8, :8]})


@pytest.mark.parametrize("noise_aug_max_t", [0, 100])
def test_sample_shapes_and_seeds(noise_aug_max_t):
    up = make(noise_aug_max_t=noise_aug_max_t, noise_aug_sample_t=min(noise_aug_max_t, 20))
    z = low_res_images(2)
    a = up.sample(z, steps=3, generator=torch.Generator().manual_seed(0))
    b = up.sample(z, steps=3, generator=torch.Generator().manual_seed(0))
    c = up.sample(z, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 16, 16) and a.abs().max() <= 1.0 + 1e-6
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="low_res must be"):
        up.sample(torch.zeros(2, 3, 16, 16), steps=2)


def test_save_and_load_round_trip(tmp_path):
    up = make(noise_aug_max_t=100, noise_aug_sample_t=10)
    stem = save_checkpoint(tmp_path / "upsampler", up, up.config)
    loaded = load_checkpoint(stem, Upsampler).eval()
    assert loaded.config == up.config
    z = low_res_images(2)
    torch.testing.assert_close(loaded.sample(z, steps=2, generator=torch.Generator().manual_seed(0)),
                               up.sample(z, steps=2, generator=torch.Generator().manual_seed(0)))
