"""Tests for dalle_mini_core.bench: FLOP counting, the result schema, missing peers, errors.
Timings are never asserted (the machine is shared); only structure and counted work."""
from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from dalle_mini_core import bench
from dalle_mini_core.unet import UNet


def test_forward_flops_count_a_known_convolution():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    batch = {"x": torch.randn(2, 3, 16, 16)}
    flops = bench.forward_flops_per_image(conv, lambda m, b: m(b["x"]), batch)
    assert flops == 2 * 3 * 8 * 9 * 16 * 16  # 2·C_in·C_out·k²·H·W per image


def test_attention_flops_are_counted():
    """Attention is forced onto the math path, so its QKᵀ and AV products are counted."""
    small = bench.ours_config(32)
    no_attn = type(small)(**{**small.__dict__, "attention_resolutions": ()})
    b = bench._make_batch(2, 32, torch.device("cpu"), torch.Generator().manual_seed(0))

    def call(m, batch):
        return m(batch["x"], batch["t"])

    with_attn = bench.forward_flops_per_image(UNet(small), call, b)
    without = bench.forward_flops_per_image(UNet(no_attn), call, b)
    L, C, layers = 16 * 16, 128, 5  # 2 down + 3 up attention blocks at 16×16 with 128 channels
    # per layer: qkv (2·L·C·3C) + QKᵀ and AV (2 · 2·L·L·C) + proj_out (2·L·C·C)
    per_layer = 2 * L * C * 3 * C + 4 * L * L * C + 2 * L * C * C
    assert with_attn - without == layers * per_layer


def test_run_benchmark_schema_and_missing_peer(tmp_path, monkeypatch):
    def missing(size):
        raise ImportError("no module", name="not_a_real_peer")

    monkeypatch.setitem(bench._PEER_FACTORIES, "diffusers.UNet2DModel", missing)
    real_mm, real_gemm = bench.matmul_gflops, bench.onednn_gemm_gflops  # small ceilings: a fast test
    monkeypatch.setattr(bench, "matmul_gflops", lambda device, dtype=torch.float32, clock=time.perf_counter:
                        real_mm(device, dtype, n=128, iters=1, min_seconds=0, clock=clock))
    monkeypatch.setattr(bench, "onednn_gemm_gflops", lambda clock=time.perf_counter:
                        real_gemm(n=128, iters=1, min_seconds=0, clock=clock))
    path = tmp_path / "bench.json"
    out = bench.run_benchmark(("ref32",), peers=("diffusers.UNet2DModel",), device="cpu", repeats=1,
                              json_path=path, train_batch=2, sample_batch=1, warmup=0, log=None)
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))
    names = [r["name"] for r in out["results"]]
    assert names == ["dalle_mini_core", "dalle_mini_core+cond"]
    assert out["missing"] == [{"name": "diffusers.UNet2DModel", "missing": "not installed (not_a_real_peer)", "config": "ref32"}]
    for r in out["results"]:
        assert set(r) >= {"name", "config", "params", "fwd_gflops_per_image", "train_img_per_s", "sample_s_per_step", "device"}
        assert r["config"] == "ref32" and r["params"] > 0 and r["train_img_per_s"] > 0
        assert r["train_img_per_cpu_s"] > 0 and r["sample_cpu_s_per_step"] > 0 and r["fraction_of_peak_per_cpu_s"] > 0
    assert out["matmul_gflops"] > 0
    # the conditioned model does strictly more work than the plain one
    assert out["results"][1]["fwd_gflops_per_image"] > out["results"][0]["fwd_gflops_per_image"]
    assert "| ref32 | dalle_mini_core |" in bench.format_table(out)


@pytest.mark.parametrize("kw, match", [(dict(configs=("ref16",)), "unknown configs"),
                                       (dict(peers=("nope",)), "unknown peers"),
                                       (dict(repeats=0), "repeats")])
def test_run_benchmark_rejects_bad_arguments(kw, match):
    args = dict(configs=("ref32",), peers=(), device="cpu", repeats=1, log=None)
    with pytest.raises(ValueError, match=match):
        bench.run_benchmark(**{**args, **kw})
