"""`Denoiser.sample_loop`, the one sampling routine of the prior, the decoder and the upsampler.

Each stage's ``sample`` is checked against a reference written out here the way the three stages
wrote it before they shared the routine (draw x_T from the generator, wrap the model with
`sampling.guided`, call `sampling.run_sampler`): same seed, bit-identical output.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dalle_mini_core.decoder import Decoder, DecoderConfig
from dalle_mini_core.diffusion import Denoiser, scale_embedding, unscale_embedding
from dalle_mini_core.prior import DiffusionPrior, PriorConfig
from dalle_mini_core.sampling import guided, run_sampler
from dalle_mini_core.schedule import NoiseSchedule
from dalle_mini_core.unet import UNet, UNetConfig
from dalle_mini_core.upsampler import Upsampler, UpsamplerConfig


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (the zero-initialised output convolutions would make every sample alike)."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def small_unet(**kw) -> UNetConfig:
    return UNetConfig(image_size=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, num_groups=8, **kw)


def options(sampler: str, eta: float) -> dict:
    return {"eta": eta} if sampler == "ddim" else {}


@pytest.fixture(scope="module")
def prior():
    return randomized(DiffusionPrior(PriorConfig(embed_dim=8, width=16, depth=1, heads=2, context_length=4, vocab_size=20)), 1)


@pytest.fixture(scope="module")
def decoder():
    cfg = DecoderConfig(unet=small_unet(attention_resolutions=(4,), num_heads=2), embed_dim=8, context_width=16)
    return randomized(Decoder(cfg), 2)


@pytest.fixture(scope="module")
def upsampler():
    cfg = UpsamplerConfig(unet=small_unet(attention_resolutions=()), low_res_size=4, noise_aug_max_t=50, noise_aug_sample_t=20)
    return randomized(Upsampler(cfg), 3)


@pytest.mark.parametrize("sampler,guidance", [("ddim", None), ("ddim", 2.0), ("euler", 1.5)])
def test_prior_sample_matches_the_reference(prior, sampler, guidance):
    text = F.normalize(torch.randn(3, 8, generator=gen(4)), dim=-1)
    tokens = torch.randint(0, 20, (3, 4), generator=gen(5))
    got = prior.sample(text, tokens, steps=5, sampler=sampler, guidance_scale=guidance, eta=0.3, generator=gen(6))

    g = gen(6)
    cond = {"text_emb": scale_embedding(text), "tokens": tokens, "drop_text": torch.zeros(3, dtype=torch.bool)}
    model = prior if guidance is None else guided(prior, guidance, {"drop_text": torch.ones(1, dtype=torch.bool)})
    x_T = torch.randn(3, 8, generator=g)
    with torch.no_grad():
        want = unscale_embedding(run_sampler(sampler, model, x_T, prior.schedule, 5, options=options(sampler, 0.3),
                                             model_kwargs=cond, prediction="x0", clip_x0=False, generator=g))
    assert got.shape == (3, 8)
    assert torch.equal(got, want)


@pytest.mark.parametrize("sampler,guidance", [("ddim", 3.0), ("ddpm", None), ("dpmpp_2m", 2.0)])
def test_decoder_sample_matches_the_reference(decoder, sampler, guidance):
    emb = F.normalize(torch.randn(2, 8, generator=gen(7)), dim=-1)
    got = decoder.sample(emb, steps=4, sampler=sampler, guidance_scale=guidance, generator=gen(8))

    g = gen(8)
    cond = decoder.model_kwargs(emb)
    model = decoder if guidance is None else guided(decoder, guidance, decoder.null_kwargs())
    x_T = torch.randn(2, 3, 8, 8, generator=g)
    with torch.no_grad():
        want = run_sampler(sampler, model, x_T, decoder.schedule, 4, options=options(sampler, 0.0),
                           model_kwargs=cond, prediction="eps", clip_x0=True, generator=g)
    assert torch.equal(got, want)
    assert got.abs().max() <= 1.0


def test_decoder_inverted_sample_walks_the_inversion_schedule(decoder):
    emb = F.normalize(torch.randn(2, 8, generator=gen(9)), dim=-1)
    x_T = torch.randn(2, 3, 8, 8, generator=gen(10))
    got = decoder.sample(emb, steps=5, x_T=x_T, inverted=True, guidance_scale=None)
    with torch.no_grad():
        want = run_sampler("ddim", decoder, x_T, decoder.inversion_schedule(5), None, options={"eta": 0.0},
                           model_kwargs=decoder.model_kwargs(emb), prediction="eps", clip_x0=True)
    assert torch.equal(got, want)


@pytest.mark.parametrize("sampler", ["ddim", "heun"])
def test_upsampler_sample_matches_the_reference(upsampler, sampler):
    low = torch.rand(2, 3, 4, 4, generator=gen(11)) * 2 - 1
    got = upsampler.sample(low, steps=4, sampler=sampler, generator=gen(12))

    g = gen(12)
    z = upsampler.upsample(low)
    aug_t = torch.full((2,), 20, dtype=torch.long)
    z = upsampler.schedule.q_sample(z, aug_t, noise=torch.randn(z.shape, generator=g))  # conditioning noise first
    x_T = torch.randn(z.shape, generator=g)  # then x_T
    with torch.no_grad():
        want = run_sampler(sampler, upsampler, x_T, upsampler.schedule, 4, options=options(sampler, 0.0),
                           model_kwargs={"low_res": z, "aug_t": aug_t}, prediction="v", clip_x0=True, generator=g)
    assert got.shape == (2, 3, 8, 8)
    assert torch.equal(got, want)


def test_a_plain_denoiser_samples_with_the_same_routine():
    den = Denoiser(randomized(UNet(small_unet(attention_resolutions=())), 13), NoiseSchedule.make("cosine", 100))
    got = den.sample_loop((2, 3, 8, 8), {}, steps=5, generator=gen(14))
    again = den.sample_loop((2, 3, 8, 8), {}, steps=5, generator=gen(14))
    other = den.sample_loop((2, 3, 8, 8), {}, steps=5, generator=gen(15))
    assert got.shape == (2, 3, 8, 8) and torch.equal(got, again)
    assert not torch.equal(got, other)  # the seed matters
    x_T = torch.randn(2, 3, 8, 8, generator=gen(14))
    assert torch.equal(den.sample_loop((2, 3, 8, 8), {}, steps=5, x_T=x_T), got)  # x_T given = x_T drawn


def test_sample_loop_rejects_bad_input_before_drawing(decoder):
    g = gen(0)
    state = g.get_state()
    with pytest.raises(ValueError, match="sampler must be one of"):
        decoder.sample_loop((1, 3, 8, 8), {}, steps=3, sampler="nope", generator=g)
    with pytest.raises(ValueError, match="null_kwargs"):
        decoder.sample_loop((1, 3, 8, 8), {}, steps=3, guidance_scale=2.0, generator=g)
    assert torch.equal(g.get_state(), state)  # nothing was drawn
    with pytest.raises(ValueError, match="x_T must have shape"):
        decoder.sample_loop((1, 3, 8, 8), {}, steps=3, x_T=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="sampler must be one of"):
        decoder.sample(F.normalize(torch.randn(1, 8), dim=-1), sampler="nope", generator=g)
    with pytest.raises(ValueError, match="sampler must be one of"):
        Upsampler(UpsamplerConfig(unet=small_unet(attention_resolutions=()), low_res_size=4, noise_aug_max_t=5,
                                  noise_aug_sample_t=5)).sample(torch.zeros(1, 3, 4, 4), sampler="nope", generator=g)
    assert torch.equal(g.get_state(), state)


def test_every_stage_reads_its_device_one_way(prior, decoder, upsampler):
    for model in (prior, decoder, upsampler):
        assert model.device == next(model.parameters()).device == torch.device("cpu")


def test_scale_embedding_gives_unit_variance_coordinates_and_round_trips():
    z = F.normalize(torch.randn(4096, 64, generator=gen(16)), dim=-1)
    s = scale_embedding(z)
    assert abs(s.var().item() - 1.0) < 0.05  # unit vectors' coordinates have variance 1/D; scaled: ~1
    assert torch.allclose(unscale_embedding(s), z, atol=1e-6)
