"""The GPU speed-ups are guarded by device type: on the CPU nothing changes.

On CUDA, training uses the fused AdamW kernel, banks moved to the GPU once, bf16 autocast and (opt-in)
torch.compile, and `train_all` reports each stage's images/s and fraction of the measured bf16 matmul
peak. These tests run on the CPU: the guards keep every CPU number as it was (same seed, same weights,
bit for bit), the device path of the banks is exercised on the "meta" device, and the speed report's
arithmetic is checked with a stand-in peak.
"""
from __future__ import annotations

import pytest
import torch

from dalle_mini_core import banks, recipes
from dalle_mini_core.runs import speed, train_flops_per_item
from dalle_mini_core.stages import train_all
from dalle_mini_core.train import TrainConfig, make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_adamw_is_fused_only_for_cuda_parameters():
    model = torch.nn.Linear(4, 4)
    opt = make_optimizer(model, TrainConfig(steps=1))
    assert not opt.defaults.get("fused")  # the CPU keeps the default implementation (its exact numbers)


def test_compile_is_ignored_on_the_cpu_same_weights():
    recipe = recipes.upsampler.UpsamplerRecipe(steps=2, batch_size=2, bank=4, base_channels=8, num_res_blocks=1,
                                               channel_mult=(1, 2), image_size=16, warmup_steps=1, ema_decay=0.9)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    a, _ = recipes.upsampler.train(recipe=recipe, bank={"image": images}, progress=False)
    model = recipes.upsampler.build(recipe, seed=0)
    batch_fn = recipes.upsampler.batches(recipe, {"image": images}, seed=0)
    b, result = recipes.common.fit(model, batch_fn, recipe, progress=False, compile=True, channels_last=True)
    assert result.step == 2
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_compile_switch_reads_the_environment(monkeypatch):
    from dalle_mini_core.recipes.common import compile_requested

    monkeypatch.delenv("DALLE_MINI_COMPILE", raising=False)
    assert compile_requested() is False
    monkeypatch.setenv("DALLE_MINI_COMPILE", "1")
    assert compile_requested() is True
    monkeypatch.setenv("DALLE_MINI_COMPILE", "yes")
    with pytest.raises(ValueError, match="DALLE_MINI_COMPILE must be 0 or 1"):
        compile_requested()


def test_banks_stay_on_the_cpu_and_the_device_path_cuts_the_same_rows():
    bank = {"image": torch.randn(10, 3, 8, 8), "tokens": torch.arange(40).reshape(10, 4), "item": torch.arange(10),
            "caption": [str(i) for i in range(10)]}
    assert banks.resident_device().type == "cpu"
    kept = banks.on_device(bank)
    assert all(kept[k] is bank[k] for k in bank)  # the same tensors, not copies
    cpu = banks.batches(bank, ("image", "tokens"), 4, seed=3, flip=True)(7)
    assert torch.equal(cpu["image"], banks.batches(bank, ("image", "tokens"), 4, seed=3, flip=True,
                                                   device=torch.device("cpu"))(7)["image"])
    # the GPU path (moved once, rows cut there) on the meta device: same shapes, same row choices
    meta = banks.batches(bank, ("image", "tokens"), 4, seed=3, flip=True, device=torch.device("meta"))(7)
    assert meta["image"].device.type == "meta" and meta["image"].shape == cpu["image"].shape
    distinct = banks.batches(bank, ("tokens",), 4, seed=3, distinct=True, device=torch.device("meta"))(7)
    assert distinct["tokens"].shape == (4, 4)
    moved = banks.on_device(bank, torch.device("meta"))
    assert moved["image"].device.type == "meta" and moved["item"] is bank["item"] and moved["caption"] is bank["caption"]


def test_speed_report_arithmetic_and_flop_count():
    from dalle_mini_core.recipes.upsampler import UpsamplerRecipe, build

    recipe = UpsamplerRecipe(steps=1, batch_size=2, bank=2, base_channels=8, num_res_blocks=1, channel_mult=(1, 2),
                             image_size=16)
    model = build(recipe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = train_flops_per_item(model, {"image": torch.rand(2, 3, 16, 16) * 2 - 1}, torch.device("cpu"))
    assert flops > 0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    row = speed(1000.0, 2e9, 500.0)  # 1,000 images/s × 2 GFLOP = 2 TFLOP/s of a 500 TFLOP/s peak
    assert row["train_tflop_per_s"] == 2.0 and row["fraction_of_bf16_peak"] == pytest.approx(0.004)


def test_train_all_speed_report_changes_no_weight(tmp_path, monkeypatch):
    import dalle_mini_core.stages as stages

    monkeypatch.setattr(stages, "bf16_peak_tflops", lambda device: 0.2)  # a stand-in peak: the CPU's is slow to time
    lines: list[str] = []
    plain = train_all(mode="smoke", stages=("upsampler",), out_dir=tmp_path / "a", progress=False, log=lambda s: None)
    timed = train_all(mode="smoke", stages=("upsampler",), out_dir=tmp_path / "b", progress=False, log=lines.append,
                      measure_speed=True)
    assert "fraction_of_bf16_peak" not in plain["stages"]["upsampler"]  # off by default on the CPU
    row = timed["stages"]["upsampler"]
    assert row["fraction_of_bf16_peak"] > 0 and row["train_gflop_per_item"] > 0 and timed["bf16_peak_tflop_per_s"] == 0.2
    assert any("of the measured bf16 matmul peak" in line for line in lines)
    a = (tmp_path / "a" / "shapes_upsampler.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "shapes_upsampler.safetensors").read_bytes()
