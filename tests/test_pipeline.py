"""Tests for pipeline.py: text → prior → decoder → upsampler, variations, interpolations, text diffs.

The parts are tiny random models (16×16 decoder, 32×32 upsampler, a few steps): these tests
check the wiring, the seeding and the maths of the edits, not image quality.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dalle_mini_core.checkpoints import save_checkpoint
from dalle_mini_core.latents import slerp, text_diff_embeddings
from dalle_mini_core.pipeline import Generation, UnCLIP, UnCLIPOutput
from dalle_mini_core.pipeline_io import check_image
from dalle_mini_core.prior import DiffusionPrior, PriorConfig
from dalle_mini_core.unet import UNetConfig
from dalle_mini_core.upsampler import Upsampler, UpsamplerConfig
from dalle_mini_core.weights import write_manifest
from tiny_unclip import D, tiny_parts
FAST = dict(prior_steps=3, decoder_steps=3, upsampler_steps=2)  # generate's step counts in these tests
EDIT = dict(decoder_steps=3, upsampler_steps=2)  # the edits' step counts


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def pipe():
    return UnCLIP(*tiny_parts())


def image(seed: int, size: int = 16) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.arccos(F.cosine_similarity(a.double(), b.double(), dim=-1).clamp(-1, 1))


# --- slerp ------------------------------------------------------------------------------------


def test_slerp_endpoints_unit_norm_and_constant_angular_speed():
    g = torch.Generator().manual_seed(0)
    a, b = F.normalize(torch.randn(4, D, generator=g), dim=-1), F.normalize(torch.randn(4, D, generator=g), dim=-1)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    omega = angle(a, b)  # (4,)
    for t in (0.1, 0.25, 0.5, 0.9):
        z = slerp(a, b, t)
        assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
        assert torch.allclose(angle(a, z), t * omega, atol=1e-5)  # angle from a grows linearly in t
        assert torch.allclose(angle(z, b), (1 - t) * omega, atol=1e-5)  # and stays on the great circle
    # a linear mix would leave the sphere
    assert float((0.5 * (a + b)).norm(dim=-1).min()) < 0.99


def test_slerp_broadcasts_a_column_of_t_and_keeps_equal_norms():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 300, generator=g), torch.randn(1, 300, generator=g)
    b = b * a.norm() / b.norm()  # two noises of the same norm
    t = torch.linspace(0, 1, 7).view(7, 1)
    z = slerp(a, b, t)
    assert z.shape == (7, 300)
    assert torch.allclose(z.norm(dim=-1), a.norm().expand(7), rtol=1e-5)


def test_slerp_parallel_falls_back_and_opposite_raises():
    a = F.normalize(torch.arange(1.0, D + 1), dim=-1)
    assert torch.allclose(slerp(a, a.clone(), 0.3), a, atol=1e-6)
    with pytest.raises(ValueError, match="opposite"):
        slerp(a, -a, 0.5)
    with pytest.raises(ValueError, match="last dimension"):
        slerp(a, a[:-1], 0.5)


def test_text_diff_embeddings_start_at_the_image_and_turn_towards_the_difference():
    g = torch.Generator().manual_seed(2)
    z_i, z_from, z_to = (F.normalize(torch.randn(1, D, generator=g), dim=-1) for _ in range(3))
    path = text_diff_embeddings(z_i, z_from, z_to, [0.0, 0.2, 0.4, 1.0])
    assert path.shape == (4, D)
    assert torch.allclose(path[0], z_i[0], atol=1e-6)  # strength 0 is the image embedding itself
    z_d = F.normalize(z_to - z_from, dim=-1)
    assert torch.allclose(path[-1], z_d[0], atol=1e-6)
    cos_to_d = F.cosine_similarity(path, z_d, dim=-1)
    assert bool((cos_to_d.diff() > 0).all())
    with pytest.raises(ValueError, match="same text embedding"):
        text_diff_embeddings(z_i, z_from, z_from, [0.1])


# --- generate ---------------------------------------------------------------------------------


def test_generate_shapes_and_intermediates(pipe):
    prompts = ["a red circle", "a small blue square at the top"]
    out = pipe.generate(prompts, n_per_prompt=2, seed=0, return_intermediates=True, **FAST)
    assert isinstance(out, Generation)
    assert out.images.shape == (4, 3, 32, 32) and out.low_res.shape == (4, 3, 16, 16)
    assert out.image_emb.shape == out.text_emb.shape == (4, D)
    assert torch.allclose(out.image_emb.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert out.prompts == [prompts[0]] * 2 + [prompts[1]] * 2
    assert float(out.images.min()) >= -1 and float(out.images.max()) <= 1
    # rows of the same prompt share z_t but not z_i (independent prior samples)
    assert torch.allclose(out.text_emb[0], out.text_emb[1])
    assert not torch.allclose(out.image_emb[0], out.image_emb[1])
    low = pipe.generate(prompts, seed=0, upsample=False, **FAST)
    assert low.shape == (2, 3, 16, 16)


def test_generate_same_seed_same_images_other_seed_other_images(pipe):
    a = pipe.generate("a red circle", n_per_prompt=2, seed=7, **FAST)
    b = pipe.generate("a red circle", n_per_prompt=2, seed=7, **FAST)
    c = pipe.generate("a red circle", n_per_prompt=2, seed=8, **FAST)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


def test_generate_without_prior_decodes_the_text_embedding(pipe):
    out = pipe.generate(["a red circle"], seed=0, use_prior=False, return_intermediates=True, **FAST)
    assert torch.equal(out.image_emb, out.text_emb)
    with_prior = pipe.generate(["a red circle"], seed=0, return_intermediates=True, **FAST)
    assert not torch.allclose(with_prior.image_emb, out.image_emb)


def test_best_of_keeps_the_candidate_closest_to_the_text(pipe):
    one = pipe.generate(["a green triangle"] * 3, seed=3, best_of=1, return_intermediates=True, upsample=False, **FAST)
    four = pipe.generate(["a green triangle"] * 3, seed=3, best_of=4, return_intermediates=True, upsample=False, **FAST)
    cos = lambda g: F.cosine_similarity(g.image_emb, g.text_emb, dim=-1).mean()  # noqa: E731
    assert cos(four) >= cos(one) - 1e-6


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(prompts=""), ValueError, "empty"),
        (dict(prompts="   "), ValueError, "empty"),
        (dict(prompts=[]), ValueError, "non-empty"),
        (dict(prompts=["a red circle", 3]), TypeError, "str"),
        (dict(prompts="a red circle " * 20), ValueError, "tokens"),
        (dict(prompts="a red circle", n_per_prompt=0), ValueError, "n_per_prompt"),
        (dict(prompts="a red circle", prior_guidance=-1.0), ValueError, "prior_guidance"),
        (dict(prompts="a red circle", decoder_guidance=-0.5), ValueError, "decoder_guidance"),
        (dict(prompts="a red circle", best_of=0), ValueError, "best_of"),
        (dict(prompts="a red circle", seed=-1), ValueError, "seed"),
        (dict(prompts="a red circle", decoder_steps=0), ValueError, "decoder_steps"),
    ],
)
def test_generate_rejects_bad_input(pipe, kwargs, error, match):
    prompts = kwargs.pop("prompts")
    args = {**FAST, **kwargs}
    with pytest.raises(error, match=match):
        pipe.generate(prompts, **args)


def test_upsample_true_without_upsampler_raises():
    clip, prior, decoder, _ = tiny_parts()
    pipe = UnCLIP(clip, prior, decoder)
    assert pipe.generate("a red circle", **FAST).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="no upsampler"):
        pipe.generate("a red circle", upsample=True, **FAST)


def test_parts_must_agree():
    clip, prior, decoder, upsampler = tiny_parts()
    other = DiffusionPrior(PriorConfig(embed_dim=D + 1, width=32, depth=1, heads=2, num_timesteps=10))
    with pytest.raises(ValueError, match="embedding sizes"):
        UnCLIP(clip, other, decoder)
    big = Upsampler(UpsamplerConfig(unet=UNetConfig(image_size=64, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                                    attention_resolutions=(), num_heads=1, num_groups=4),
                                    low_res_size=32, num_timesteps=10))
    with pytest.raises(ValueError, match="upsampler takes 32"):
        UnCLIP(clip, prior, decoder, big)


# --- image checks -----------------------------------------------------------------------------


def test_check_image_accepts_tensors_and_rgb_pil_and_rejects_the_rest():
    x = image(0)
    assert check_image(x, (16,)).shape == (1, 3, 16, 16)
    pil = Image.fromarray(np.full((16, 16, 3), 255, dtype=np.uint8), "RGB")
    assert torch.allclose(check_image(pil, (16,)), torch.ones(1, 3, 16, 16))
    with pytest.raises(ValueError, match="mode 'RGBA'"):
        check_image(pil.convert("RGBA"), (16,))
    with pytest.raises(TypeError, match="uint8"):
        check_image((x * 127 + 128).to(torch.uint8), (16,))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_image(x * 255, (16,))
    with pytest.raises(ValueError, match="side in"):
        check_image(image(0, size=24), (16, 32))
    with pytest.raises(ValueError, match="one RGB image"):
        check_image(torch.zeros(4, 16, 16), (16,))
    with pytest.raises(ValueError, match="one RGB image"):
        check_image(torch.zeros(2, 3, 16, 16), (16,))
    with pytest.raises(ValueError, match="NaN"):
        check_image(torch.full((3, 16, 16), float("nan")), (16,))
    with pytest.raises(TypeError, match="float tensor"):
        check_image([[0.0]], (16,))


# --- variations, interpolations, text diffs ---------------------------------------------------


def test_variations_share_the_embedding_and_differ_in_noise(pipe):
    v = pipe.variations(image(1), 3, seed=0, **EDIT)
    assert v.shape == (3, 3, 32, 32)
    assert (v[0] - v[1]).abs().mean() > 1e-3
    assert torch.equal(v, pipe.variations(image(1), 3, seed=0, **EDIT))
    big = pipe.variations(image(1, size=32), 2, seed=0, upsample=False, **EDIT)  # the upsampler's size is accepted
    assert big.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="n must be"):
        pipe.variations(image(1), 0, **EDIT)
    with pytest.raises(ValueError, match="side in"):
        pipe.variations(image(1, size=8), 2, **EDIT)


def test_interpolate_endpoints_decode_each_images_own_latent(pipe):
    a, b = image(2), image(3)
    frames = pipe.interpolate(a, b, 4, upsample=False, **EDIT)
    assert frames.shape == (4, 3, 16, 16)
    for k, x in ((0, a), (3, b)):
        z, x_T = pipe.invert(x, steps=EDIT["decoder_steps"])
        own = pipe.decoder.sample(z, x_T=x_T, inverted=True, steps=EDIT["decoder_steps"], guidance_scale=None).clamp(-1, 1)
        assert torch.allclose(frames[k], own[0], atol=2e-3)  # batch of 4 vs 1: float noise only
    assert (frames[1] - frames[0]).abs().mean() > 1e-2
    with pytest.raises(ValueError, match="at least 2"):
        pipe.interpolate(a, b, 1, **EDIT)


def test_text_diff_at_strength_zero_reconstructs_through_the_inverted_latent(pipe):
    x = image(4)
    out = pipe.text_diff(x, "a red circle", "a blue circle", [0.0, 0.5], upsample=False, **EDIT)
    assert out.shape == (2, 3, 16, 16)
    z_i, x_T = pipe.invert(x, steps=EDIT["decoder_steps"])
    assert torch.allclose(z_i, pipe.clip.encode_image(x[None]))
    recon = pipe.decoder.sample(z_i, x_T=x_T, inverted=True, steps=EDIT["decoder_steps"], guidance_scale=None).clamp(-1, 1)
    assert torch.allclose(out[0], recon[0], atol=1e-4)
    assert (out[1] - out[0]).abs().mean() > 1e-4
    for bad, match in (([1.5], "strength"), ([], "non-empty"), (0.3, "non-empty")):
        with pytest.raises(ValueError, match=match):
            pipe.text_diff(x, "a red circle", "a blue circle", bad, **EDIT)
    with pytest.raises(ValueError, match="empty"):
        pipe.text_diff(x, "", "a blue circle", [0.1], **EDIT)


# --- loading ----------------------------------------------------------------------------------


def test_from_pretrained_without_weights_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dalle-mini train all"):
        UnCLIP.from_pretrained("shapes")


def test_from_pretrained_loads_checked_weights_and_reproduces_the_pipeline(tmp_path, monkeypatch):
    parts = tiny_parts(seed=5)
    weights = tmp_path / "weights"
    for name, part in zip(("clip", "prior", "decoder", "upsampler"), parts):
        save_checkpoint(weights / f"shapes_{name}", part, part.config)
    write_manifest(weights)
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path))
    loaded = UnCLIP.from_pretrained("shapes", device="cpu")
    original = UnCLIP(*parts)
    assert torch.allclose(loaded.generate("a red circle", seed=1, **FAST),  # channels-last on a CPU:
                          original.generate("a red circle", seed=1, **FAST), atol=1e-3)  # same to ~1e-4
    (weights / "shapes_upsampler.safetensors").unlink()
    assert UnCLIP.from_pretrained("shapes", device="cpu", upsampler=False).upsampler is None
    with pytest.raises(FileNotFoundError, match="shapes_upsampler"):
        UnCLIP.from_pretrained("shapes", device="cpu")
    # a training run's folder loads the same way, and its manifest is checked
    monkeypatch.delenv("DALLE_MINI_DATA")
    assert UnCLIP.from_pretrained("shapes", folder=weights, device="cpu", upsampler=False).upsampler is None
    (weights / "shapes_prior.json").write_text((weights / "shapes_prior.json").read_text() + " ")
    with pytest.raises(ValueError, match="corrupt"):
        UnCLIP.from_pretrained("shapes", folder=weights, device="cpu", upsampler=False)


def test_show_generation_draws_low_res_above_upsampled(pipe):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dalle_mini_core.viz import show_generation

    fig = show_generation(pipe, "a red circle", 2.0, 3.0, 0, n=3, **FAST)
    assert len(fig.axes) == 6 and "a red circle" in fig._suptitle.get_text()
    plt.close(fig)
    fig = show_generation(pipe, "a red circle", 2.0, 3.0, 0, n=2, upsample=False, **FAST)
    assert len(fig.axes) == 2
    plt.close(fig)


# --- familiar habits: folders, save_pretrained, the diffusers-style call, progress -------------


def test_save_pretrained_round_trip_gives_the_same_pictures(tmp_path, pipe):
    folder = pipe.save_pretrained(tmp_path / "my_pipe")
    names = sorted(p.name for p in folder.iterdir())
    assert "MANIFEST.json" in names and "pipeline.json" in names
    assert {f"shapes_{p}.safetensors" for p in ("clip", "prior", "decoder", "upsampler")} <= set(names)
    want = pipe.generate("a red circle", n_per_prompt=2, seed=3, **FAST)
    same_order = dict(device="cpu", channels_last=False)  # the fixture's memory order: bit-identical pictures
    for loaded in (UnCLIP.from_pretrained(str(folder), **same_order),  # a path, diffusers-style
                   UnCLIP.from_pretrained(folder, **same_order),  # a pathlib.Path
                   UnCLIP.from_pretrained("shapes", folder=folder, **same_order)):  # name + folder
        assert torch.equal(loaded.generate("a red circle", n_per_prompt=2, seed=3, **FAST), want)
    # a pipeline without an upsampler round-trips too (pipeline.json says which parts there are)
    clip, prior, decoder, _ = tiny_parts()
    UnCLIP(clip, prior, decoder).save_pretrained(tmp_path / "low", dataset="mine")
    low = UnCLIP.from_pretrained(tmp_path / "low", device="cpu")
    assert low.upsampler is None and low.dataset == "mine"


def test_a_saved_folder_is_checked_and_without_manifest_loads_with_a_warning(tmp_path, pipe):
    folder = pipe.save_pretrained(tmp_path / "p")
    (folder / "MANIFEST.json").unlink()
    with pytest.warns(UserWarning, match="no MANIFEST.json"):
        UnCLIP.from_pretrained(folder, device="cpu")
    folder = pipe.save_pretrained(tmp_path / "p")  # writes the manifest again
    blob = bytearray((folder / "shapes_prior.safetensors").read_bytes())
    blob[-10] ^= 0x40  # bit-rot in the last tensor
    (folder / "shapes_prior.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt"):
        UnCLIP.from_pretrained(folder, device="cpu")


def test_from_pretrained_names_the_unshipped_emoji_weights_and_refuses_paths_as_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="emoji pipeline's weights are not shipped yet"):
        UnCLIP.from_pretrained("emoji")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        UnCLIP.from_pretrained("../../elsewhere/shapes")  # M1: a name is never a path into data/weights
    with pytest.raises(ValueError, match="unknown pipeline 'nonsense'"):
        UnCLIP.from_pretrained("nonsense")
    with pytest.raises(FileNotFoundError, match="no pipeline weights"):
        UnCLIP.from_pretrained(tmp_path)


def test_calling_the_pipeline_like_diffusers_returns_pil_images(pipe):
    from dalle_mini_core.viz import to_uint8

    g = torch.Generator().manual_seed(4)
    out = pipe("a small red circle at the top left", num_images_per_prompt=4, generator=g, **FAST)
    assert isinstance(out, UnCLIPOutput) and len(out.images) == 4
    assert all(isinstance(im, Image.Image) and im.size == (32, 32) and im.mode == "RGB" for im in out.images)
    tensors = pipe.generate("a small red circle at the top left", n_per_prompt=4, seed=4, **FAST)  # the tensor API
    assert np.array_equal(np.stack([np.asarray(im) for im in out.images]), to_uint8(tensors))
    # diffusers' UnCLIPPipeline names are ours under another name
    karlo = pipe("a red circle", generator=torch.Generator().manual_seed(1), prior_num_inference_steps=3,
                 decoder_num_inference_steps=3, super_res_num_inference_steps=2, prior_guidance_scale=4.0,
                 decoder_guidance_scale=2.0, output_type="pt").images
    ours = pipe.generate("a red circle", seed=1, prior_steps=3, decoder_steps=3, upsampler_steps=2, prior_guidance=4.0,
                         decoder_guidance=2.0)
    assert torch.equal(karlo, (ours + 1) / 2)
    arr = pipe("a red circle", output_type="np", **FAST).images
    assert arr.shape == (1, 32, 32, 3) and 0 <= arr.min() and arr.max() <= 1
    (images,) = pipe("a red circle", return_dict=False, **FAST)
    assert len(images) == 1
    with pytest.raises(TypeError, match="prior_guidance=.*decoder_guidance="):
        pipe("a red circle", guidance_scale=7.5)
    with pytest.raises(TypeError, match="decoder_steps="):
        pipe("a red circle", num_inference_steps=50)
    with pytest.raises(TypeError, match="unexpected keyword argument 'negative_prompt'"):
        pipe("a red circle", negative_prompt="blurry")
    with pytest.raises(TypeError, match="pass a prompt"):
        pipe()


def test_progress_shows_one_bar_per_stage_with_its_steps(pipe, capsys):
    pipe.generate("a red circle", n_per_prompt=2, seed=0, **FAST)
    assert capsys.readouterr().err == ""  # off by default in the API
    pipe.generate("a red circle", n_per_prompt=2, seed=0, progress=True, **FAST)
    err = capsys.readouterr().err
    for stage, steps in (("prior", 3), ("decoder", 3), ("upsampler", 2)):
        assert f"{stage}: 100%" in err and f"{steps}/{steps}" in err, (stage, err)
    pipe.interpolate(image(2), image(3), 3, progress=True, **EDIT)
    err = capsys.readouterr().err
    assert "inversion: 100%" in err and "6/6" in err  # two images, 3 inversion steps each


def test_decoding_in_chunks_gives_the_same_images(pipe, monkeypatch):
    import dalle_mini_core.pipeline as P

    z = F.normalize(torch.randn(5, D, generator=torch.Generator().manual_seed(0)), dim=-1)
    x_T = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    whole, _ = pipe.decode(z, x_T=x_T, upsample=False, decoder_steps=3, decoder_guidance=None)
    monkeypatch.setattr(P, "DECODE_CHUNK", 2)  # 5 rows: chunks of 2, 2, 1
    chunked, _ = pipe.decode(z, x_T=x_T, upsample=False, decoder_steps=3, decoder_guidance=None)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert pipe.generate("a red circle", n_per_prompt=5, seed=0, **FAST).shape == (5, 3, 32, 32)


def test_from_pretrained_on_a_cpu_stores_conv_weights_channels_last_with_the_same_pictures(tmp_path, monkeypatch):
    parts = tiny_parts(seed=5)
    weights = tmp_path / "weights"
    for name, part in zip(("clip", "prior", "decoder", "upsampler"), parts):
        save_checkpoint(weights / f"shapes_{name}", part, part.config)
    write_manifest(weights)
    monkeypatch.setenv("DALLE_MINI_DATA", str(tmp_path))

    def conv_weights(pipe):
        return [m.weight for part in (pipe.decoder, pipe.upsampler) for m in part.modules()
                if isinstance(m, torch.nn.Conv2d)]

    fast = UnCLIP.from_pretrained("shapes", device="cpu")
    plain = UnCLIP.from_pretrained("shapes", device="cpu", channels_last=False)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(fast))
    assert not any(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                   for w in conv_weights(plain))
    a = fast.generate("a red circle", seed=3, **FAST)
    b = plain.generate("a red circle", seed=3, **FAST)
    assert torch.allclose(a, b, atol=1e-3)  # the same pictures to about 1e-4 (summation order differs)
    # a channels-last pipeline saves ordinary files that load back to the same pictures
    again = UnCLIP.from_pretrained(fast.save_pretrained(tmp_path / "saved"), device="cpu")
    assert torch.allclose(again.generate("a red circle", seed=3, **FAST), a, atol=1e-6)
    with pytest.raises(TypeError, match="channels_last"):
        UnCLIP.from_pretrained("shapes", device="cpu", channels_last="yes")


def test_slerp_and_check_image_are_still_importable_from_pipeline():
    """They live in latents.py and pipeline_io.py now; the old imports reach the same functions."""
    import dalle_mini_core.latents as latents
    import dalle_mini_core.pipeline as pipeline
    import dalle_mini_core.pipeline_io as pipeline_io

    assert pipeline.slerp is latents.slerp and pipeline.text_diff_embeddings is latents.text_diff_embeddings
    assert pipeline.check_image is pipeline_io.check_image and pipeline.PARTS is pipeline_io.PARTS
