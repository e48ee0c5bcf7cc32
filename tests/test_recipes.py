"""recipes/ and banks.py: one training path per stage, whoever calls it.

* THE SAME PATH: a few steps of every stage through ``recipes.<stage>.train`` (as a notebook
  calls it) and through ``stages.train_all`` (as ``dalle-mini train`` calls it), same recipe and
  seed, give bit-identical weights (both rounded to the float16 the files ship in).
* ``train_all`` for any dataset: emoji end to end into a folder; a bad dataset refused first.
* banks: the one batch-seed rule, distinct rows, flips, render/embed.
* the unconditional denoiser's checkpoint says how it samples, and the CLI reads it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from dalle_mini_core import banks, recipes
from dalle_mini_core.checkpoints import load_checkpoint, save_checkpoint, verify_manifest
from dalle_mini_core.clip import CLIPConfig, CLIPModel
from dalle_mini_core.options import DATASETS, RUN_MODES, STAGES
from dalle_mini_core.runs import round_to_float16
from dalle_mini_core.stages import train_all

SEED = 3
STEPS = {"clip": 2, "prior": 2, "decoder": 2, "upsampler": 2}


def silent(line: str) -> None:
    pass


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k].float().cpu(), sb[k].float().cpu())]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def shipped_by_train_all(tmp_path_factory) -> Path:
    """Every shapes stage through train_all (smoke recipes, seed 3, two steps each)."""
    out = tmp_path_factory.mktemp("train_all") / "weights"
    train_all(mode="smoke", out_dir=out, seed=SEED, max_steps=STEPS, log=silent, progress=False)
    return out


def load(out: Path, stage: str) -> torch.nn.Module:
    return load_checkpoint(out / f"shapes_{stage}", device="cpu").float().eval()


# --- THE SAME PATH ------------------------------------------------------------------------------


def test_clip_notebook_path_equals_train_all(shipped_by_train_all):
    clip, result = recipes.clip.train("shapes", "smoke", steps=STEPS["clip"], seed=SEED, progress=False)
    assert result.step == STEPS["clip"]
    assert_same_weights(round_to_float16(clip.cpu()), load(shipped_by_train_all, "clip"))


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_stages_on_the_clip_notebook_path_equal_train_all(stage, shipped_by_train_all):
    clip = load(shipped_by_train_all, "clip")  # what train_all's later stages trained on (float16-rounded)
    module = recipes.STAGE_RECIPES[stage]
    model, result = module.train("shapes", "smoke", steps=STEPS[stage], clip=clip, seed=SEED, progress=False)
    assert result.step == STEPS[stage] and result.ema is not None  # the model returned is the EMA
    assert_same_weights(round_to_float16(model.cpu()), load(shipped_by_train_all, stage))


def test_upsampler_notebook_path_equals_train_all(shipped_by_train_all):
    model, _ = recipes.upsampler.train("shapes", "smoke", steps=STEPS["upsampler"], seed=SEED, progress=False)
    assert_same_weights(round_to_float16(model.cpu()), load(shipped_by_train_all, "upsampler"))


def test_a_different_seed_gives_different_weights(shipped_by_train_all):
    """The comparison above can fail: another seed is another run."""
    model, _ = recipes.upsampler.train("shapes", "smoke", steps=STEPS["upsampler"], seed=SEED + 1, progress=False)
    with pytest.raises(AssertionError, match="tensors differ"):
        assert_same_weights(round_to_float16(model.cpu()), load(shipped_by_train_all, "upsampler"))


def test_every_stage_has_a_recipe_for_every_dataset_and_mode():
    assert tuple(recipes.STAGE_RECIPES) == STAGES
    for stage, module in recipes.STAGE_RECIPES.items():
        for dataset in DATASETS:
            for mode in RUN_MODES:
                recipe = module.RECIPES[dataset][mode]
                assert isinstance(recipe, recipes.Recipe) and recipe.steps >= 1 and recipe.bank >= 1, (stage, dataset)


def test_one_warmup_rule_and_the_wrap_hook_sees_every_step():
    recipe = recipes.upsampler.RECIPES["shapes"]["cpu"]
    assert recipes.warmup_for(recipe, 10_000) == recipe.warmup_steps
    assert recipes.warmup_for(recipe, 10) == 2 and recipes.warmup_for(recipe, 1) == 1
    seen: list[int] = []

    def wrap(batch_fn):
        def fn(step):
            seen.append(step)
            return batch_fn(step)
        return fn

    _, result = recipes.upsampler.train("shapes", "smoke", steps=2, wrap=wrap, progress=False)
    assert seen == [0, 1] and result.step == 2


def test_recipe_train_refuses_bad_names_before_any_work(monkeypatch):
    monkeypatch.setattr(banks, "render", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match="dataset must be one of 'shapes', 'emoji'; got 'mnist'"):
        recipes.clip.train("mnist", "smoke")
    with pytest.raises(ValueError, match="mode must be one of"):
        recipes.upsampler.train("shapes", "fast")
    with pytest.raises(ValueError, match="give clip="):
        recipes.decoder.train("shapes", "smoke")


def test_upsampler_recipe_sets_the_corruption_and_the_sampling_noise_level():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for max_t, sample_t, expected in [(0, None, 0), (200, None, 50), (200, 120, 120), (30, None, 30)]:
        recipe = recipes.upsampler.UpsamplerRecipe(steps=1, batch_size=2, bank=4, base_channels=8, num_res_blocks=1,
                                                   channel_mult=(1, 2), image_size=16, warmup_steps=1, ema_decay=0.9,
                                                   noise_aug_max_t=max_t, noise_aug_sample_t=sample_t)
        model, _ = recipes.upsampler.train(recipe=recipe, bank={"image": images}, progress=False)
        assert model.config.noise_aug_max_t == max_t and model.config.noise_aug_sample_t == expected
        assert model.config.noise_augmentation == (max_t > 0)
        assert model.config.low_res_size == 8 and model.config.prediction == "v"


# --- train_all for any dataset ------------------------------------------------------------------


def test_train_all_emoji_smoke_end_to_end(tmp_path):
    out = tmp_path / "emoji"
    lines: list[str] = []
    report = train_all(mode="smoke", dataset="emoji", out_dir=out, max_steps={s: 1 for s in STAGES},
                       log=lines.append, progress=False)
    names = [f"emoji_{s}{ext}" for s in STAGES for ext in (".safetensors", ".json")]
    assert all((out / n).is_file() for n in names)
    assert not any(p.name.startswith("shapes_") for p in out.iterdir())
    verify_manifest(out / "MANIFEST.json", files=names + ["train_report.json"])
    written = json.loads((out / "train_report.json").read_text())
    assert written["dataset"] == report["dataset"] == "emoji"
    assert set(written["stages"]) == set(STAGES) and all(written["stages"][s]["steps"] == 1 for s in STAGES)
    assert json.loads((out / "emoji_decoder.json").read_text())["extra"]["plan"]["dataset"] == "emoji"
    # the emoji CLIP is the 64×64 preset; the decoder draws 32×32 from its embeddings
    clip = load_checkpoint(out / "emoji_clip")
    decoder = load_checkpoint(out / "emoji_decoder")
    assert clip.image_size == 64 and decoder.config.unet.image_size == 32
    assert decoder.config.embed_dim == clip.embed_dim
    # with the emoji captions' compact vocabulary (tests/test_vocab_trim.py), saved and loaded with it
    from dalle_mini_core.recipes.clip import dataset_vocab
    assert clip.config.vocab == dataset_vocab("emoji")
    assert clip.model.token_embedding.weight.shape[0] == len(clip.config.vocab) + 1
    assert any("moved emoji_clip" in line for line in lines)
    # the same command again: nothing to do
    lines.clear()
    train_all(mode="smoke", dataset="emoji", out_dir=out, max_steps={s: 1 for s in STAGES}, log=lines.append)
    assert "nothing to do" in lines[0]


def test_train_all_refuses_a_bad_dataset_in_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    from dalle_mini_core.cli import main

    monkeypatch.setattr(banks, "render", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "never"
    with pytest.raises(ValueError) as err:
        train_all(mode="smoke", dataset="mnist", out_dir=out)
    assert str(err.value) == "dataset must be one of 'shapes', 'emoji'; got 'mnist'"
    assert not out.exists()
    with pytest.raises(ValueError, match="--dataset must be one of"):
        train_all(mode="smoke", dataset="Shapes", out_dir=out, option_names={"dataset": "--dataset"})
    assert main(["train", "clip", "--mode", "smoke", "--dataset", "mnist", "--out", str(out)]) == 2
    err_text = capsys.readouterr().err
    assert "--dataset" in err_text and "mnist" in err_text and "Traceback" not in err_text
    assert not out.exists()


def test_a_prior_needs_the_clip_of_its_own_dataset(tmp_path, shipped_by_train_all):
    """A folder with a shapes CLIP has no emoji CLIP: training the emoji prior stops first, naming it."""
    import shutil

    out = tmp_path / "w"
    shutil.copytree(shipped_by_train_all, out)
    with pytest.raises(ValueError, match="has no trained CLIP \\(emoji_clip.safetensors"):
        train_all(mode="smoke", dataset="emoji", stages=("prior",), out_dir=out, log=silent)


# --- banks --------------------------------------------------------------------------------------


def test_the_batch_seed_rule():
    bank = {"image": torch.randn(50, 3, 4, 4), "tokens": torch.arange(50)[:, None]}
    fn = banks.batches(bank, ("image", "tokens"), 8, seed=7)
    assert banks.batch_seed(7, 5) == 7 * 1_000_003 + 5
    assert torch.equal(fn(5)["tokens"], fn(5)["tokens"])  # same (seed, step): same batch
    assert torch.equal(fn(5)["tokens"], banks.batches(bank, ("image", "tokens"), 8, seed=7)(5)["tokens"])
    assert not torch.equal(fn(5)["tokens"], fn(6)["tokens"])  # another step: another batch
    assert not torch.equal(fn(5)["tokens"], banks.batches(bank, ("tokens",), 8, seed=8)(5)["tokens"])
    expected = torch.randint(0, 50, (8,), generator=torch.Generator().manual_seed(banks.batch_seed(7, 5)))
    assert torch.equal(fn(5)["tokens"][:, 0], expected)
    b = fn(0)
    assert torch.equal(bank["image"][b["tokens"][:, 0]], b["image"])  # rows stay paired


def test_distinct_rows_and_flips():
    bank = {"image": torch.arange(5 * 3 * 4 * 4, dtype=torch.float32).view(5, 3, 4, 4), "tokens": torch.arange(5)}
    rows = banks.batches(bank, ("tokens",), 4, distinct=True)
    assert all(len(set(rows(s)["tokens"].tolist())) == 4 for s in range(20))
    assert len(rows(0)["tokens"]) == 4 and len(banks.batches(bank, ("tokens",), 9, distinct=True)(0)["tokens"]) == 5
    originals = {tuple(x.flatten().tolist()) for x in bank["image"]}
    plain = banks.batches(bank, ("image",), 64)(3)["image"]
    assert all(tuple(x.flatten().tolist()) in originals for x in plain)
    flipped = banks.batches(bank, ("image",), 64, flip=True)(3)["image"]
    mirrored = {tuple(x.flip(-1).flatten().tolist()) for x in bank["image"]}
    assert all(tuple(x.flatten().tolist()) in originals | mirrored for x in flipped)
    assert any(tuple(x.flatten().tolist()) not in originals for x in flipped)
    # an emoji bank repeats each picture with other captions: a contrastive batch takes each picture once
    repeated = {"tokens": torch.arange(12), "item": torch.arange(12) % 4}
    for step in range(20):
        batch = banks.batches(repeated, ("tokens",), 3, distinct=True)(step)["tokens"]
        assert len(batch) == 3 and len(set((batch % 4).tolist())) == 3
    assert len(banks.batches(repeated, ("tokens",), 10, distinct=True)(0)["tokens"]) == 4
    assert set(banks.batches(repeated, ("tokens",), 12)(0)["tokens"].tolist()) - set(range(12)) == set()
    with pytest.raises(ValueError, match="batch_size"):
        banks.batches(bank, ("image",), 0)
    with pytest.raises(ValueError, match="no \\['image_emb'\\]"):
        banks.batches(bank, ("image_emb",), 2)


TINY = CLIPConfig(image_size=16, patch_size=4, vision_width=32, vision_layers=1, vision_head_width=16,
                  text_width=32, text_layers=1, text_heads=2, embed_dim=16, context_length=32)


def test_render_and_embed_once():
    torch.manual_seed(0)
    clip = CLIPModel(TINY).eval()
    shapes = banks.render("shapes", 6, image_size=16, num_objects=(1,), seed=2)
    assert shapes["image"].shape == (6, 3, 16, 16) and shapes["tokens"].shape == (6, 32) and len(shapes["caption"]) == 6
    assert torch.equal(banks.render("shapes", 3, image_size=16, num_objects=(1,), seed=2)["image"], shapes["image"][:3])
    embedded = banks.embed(clip, shapes, image_size=8)
    assert embedded["image"].shape == (6, 3, 8, 8) and embedded["image_emb"].shape == (6, 16)
    torch.testing.assert_close(embedded["image_emb"].norm(dim=-1), torch.ones(6))
    torch.testing.assert_close(embedded["text_emb"], clip.encode_text(shapes["tokens"]).float())
    with pytest.raises(ValueError, match="image_size 6"):
        banks.embed(clip, shapes, image_size=6)
    emoji = banks.render("emoji", 90, image_size=32, split="test")  # 82 test emoji, then other captions
    assert emoji["image"].shape[0] == 90 and torch.equal(emoji["image"][82], emoji["image"][0])
    assert emoji["item"][82] == emoji["item"][0] == 0 and torch.equal(shapes["item"], torch.arange(6))
    assert banks.make(banks.BankSpec("shapes", 4, 8, embedded=True), clip=clip)["image"].shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="needs the CLIP"):
        banks.make(banks.BankSpec("shapes", 4, 8, embedded=True))
    with pytest.raises(ValueError, match="dataset must be one of"):
        banks.render("mnist", 4, image_size=8)


# --- the unconditional denoiser -----------------------------------------------------------------


def test_uncond_checkpoint_stores_its_schedule_and_the_cli_reads_it(tmp_path, capsys):
    from dalle_mini_core.cli import _load_uncond
    from dalle_mini_core.recipes import uncond

    recipe = dataclasses.replace(uncond.RECIPES["shapes"]["smoke"], schedule="linear", timesteps=500, prediction="v",
                                 steps=1, bank=4, batch_size=2)
    model, result = uncond.train(recipe=recipe, progress=False)
    assert result.step == 1 and model.prediction == "v" and model.schedule.num_timesteps == 500
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir(), old.mkdir()
    save_checkpoint(new / "shapes_uncond", model.net, model.net.config, extra=uncond.schedule_fields(recipe))
    save_checkpoint(old / "shapes_uncond", model.net, model.net.config, extra={"steps": 1})  # as shipped: no fields
    read = _load_uncond(new)
    assert (read.prediction, read.schedule.num_timesteps) == ("v", 500)
    assert torch.equal(read.schedule.betas, model.schedule.betas.cpu())
    fallback = _load_uncond(old)
    assert (fallback.prediction, fallback.schedule.num_timesteps) == ("eps", 1000)
    assert uncond.schedule_fields({"steps": 1}) == uncond.DEFAULT_SCHEDULE
    assert uncond.schedule_fields({"num_timesteps": 250})["timesteps"] == 250  # the shipped JSON's older name
    from dalle_mini_core.paths import data_dir

    if (data_dir() / "weights" / "shapes_uncond.safetensors").is_file():  # the shipped file, as the demo reads it
        shipped = _load_uncond()
        assert (shipped.prediction, shipped.schedule.num_timesteps) == ("eps", 1000)
    with pytest.raises(ValueError, match="the checkpoint's schedule must be one of"):
        uncond.schedule_fields({"schedule": "quadratic"})
    with pytest.raises(ValueError, match="timesteps"):
        uncond.schedule_fields({"timesteps": 0})
