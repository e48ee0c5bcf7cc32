"""The training loop: schedule, guards, EMA, exact resume, DDP with two CPU processes."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
from torch import nn

from dalle_mini_core.checkpoints import load_weights
from dalle_mini_core.runlog import latest_checkpoint, load_run_weights, read_metrics
from dalle_mini_core.train import EMA, TrainConfig, TrainingDiverged, lr_at, train


class TinyRegressor(nn.Module):
    """y = sum(x) with an MLP; dropout exercises the per-step RNG."""

    def __init__(self, dropout: float = 0.2, noise: float = 0.01) -> None:
        super().__init__()
        self.noise = noise
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 1))

    def loss(self, batch: dict) -> torch.Tensor:
        noise = self.noise * torch.randn_like(batch["y"])  # a draw from the global RNG, like a diffusion loss
        return (self.net(batch["x"]) - batch["y"] - noise).pow(2).mean()


def batch_fn(step: int, batch_size: int = 16) -> dict:
    """A pure function of the step: seeded by it."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(batch_size, 4, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True), "caption": [f"item {i}" for i in range(batch_size)]}


def fresh_model(dropout: float = 0.2) -> TinyRegressor:
    torch.manual_seed(0)
    return TinyRegressor(dropout)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=12, lr=3e-3, warmup_steps=3, log_every=4, progress=False, ema_decay=0.9, seed=5, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- schedule, guards, EMA ---------------------------------------------------------------------


def test_warmup_then_constant_and_cosine_values():
    c = cfg(steps=10, lr=1e-3, warmup_steps=4)
    assert [lr_at(s, c) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert lr_at(9, c) == 1e-3
    k = cfg(steps=10, lr=1e-3, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(3, k) == pytest.approx(1e-3)  # end of warm-up
    assert lr_at(4, k) == pytest.approx(1e-3)  # cosine starts at the peak
    mid = 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 2 / 5))  # step 6 of the 4..9 decay
    assert lr_at(6, k) == pytest.approx(mid)
    assert lr_at(9, k) == pytest.approx(1e-4)  # last step reaches min_lr_ratio * lr
    assert lr_at(0, cfg(warmup_steps=0, lr=2e-4)) == 2e-4


def test_learning_rate_above_the_ceiling_is_refused():
    with pytest.raises(ValueError, match=r"lr=0.05 is above max_lr=0.01.*raise max_lr"):
        cfg(lr=0.05)
    assert cfg(lr=0.05, max_lr=0.1).lr == 0.05  # allowed when asked for explicitly
    with pytest.raises(ValueError, match="schedule"):
        cfg(schedule="linear")
    with pytest.raises(ValueError, match="ema_decay"):
        cfg(ema_decay=1.0)
    with pytest.raises(TypeError):
        TrainConfig(12)  # keyword-only


def test_ema_math():
    model = nn.Linear(2, 1)
    model.register_buffer("stat", torch.zeros(1))
    ema = EMA(model, 0.9)
    old = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
        model.stat.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, 0.9 * old["weight"] + 0.1 * model.weight)
    assert torch.allclose(ema.model.bias, old["bias"])  # bias unchanged in both
    assert ema.model.stat.item() == 3.0  # buffers are copied, not averaged
    assert not ema.model.weight.requires_grad and not ema.model.training

    warm = EMA(model, 0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(warm.current_decay())
        warm.update(model)
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])


# --- the loop ----------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_returns_ema():
    result = train(fresh_model(0.0), batch_fn, cfg(steps=60, log_every=20, lr=5e-3, ema_decay=0.95))
    losses = [row["loss"] for row in result.metrics]
    assert [row["step"] for row in result.metrics] == [20, 40, 60]
    assert losses[-1] < 0.5 * losses[0]
    assert result.ema is not None and not same_weights(result.ema, result.model)
    assert result.step == 60 and result.out_dir is None


def test_exact_resume_after_a_crash(tmp_path):
    uninterrupted = train(fresh_model(), batch_fn, cfg(out_dir=str(tmp_path / "a"), ckpt_every=4))

    def crashing(step: int) -> dict:
        if step == 9:
            raise RuntimeError("power cut")
        return batch_fn(step)

    with pytest.raises(RuntimeError, match="power cut"):
        train(fresh_model(), crashing, cfg(out_dir=str(tmp_path / "b"), ckpt_every=4))
    assert latest_checkpoint(tmp_path / "b").name == "step_00000008"

    # A fresh process would rebuild the model from scratch: the weights come from the checkpoint.
    torch.manual_seed(99)
    resumed = train(TinyRegressor(0.2), batch_fn, cfg(out_dir=str(tmp_path / "b"), ckpt_every=4))
    assert resumed.resumed_from == 8 and resumed.step == 12
    assert same_weights(resumed.model, uninterrupted.model)
    assert same_weights(resumed.ema, uninterrupted.ema)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [4, 8, 12]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    # Without the per-step seeding the dropout masks would differ: a different seed differs.
    other = train(fresh_model(), batch_fn, cfg(seed=6))
    assert not same_weights(other.model, uninterrupted.model)


def test_extending_a_finished_run_matches_a_longer_run(tmp_path):
    longer = train(fresh_model(), batch_fn, cfg(steps=12))
    train(fresh_model(), batch_fn, cfg(steps=7, out_dir=str(tmp_path)))
    extended = train(fresh_model(), batch_fn, cfg(steps=12, out_dir=str(tmp_path)))
    assert extended.resumed_from == 7
    assert same_weights(extended.model, longer.model)
    # The saved EMA is the one from the end of the run.
    probe = TinyRegressor(0.2)
    assert load_run_weights(tmp_path, probe, ema=True) == 12
    assert same_weights(probe, longer.ema)


def test_resume_with_a_reiterable_fast_forwards(tmp_path):
    batches = [batch_fn(s) for s in range(5)]  # 5 batches, cycled over 12 steps
    straight = train(fresh_model(), batches, cfg())

    class Crashing:
        def __init__(self) -> None:
            self.served = 0

        def __iter__(self):
            for b in batches:
                self.served += 1
                if self.served == 8:
                    raise KeyboardInterrupt  # Ctrl-C: the loop saves the completed steps
                yield b

    with pytest.raises(KeyboardInterrupt):
        train(fresh_model(), Crashing(), cfg(out_dir=str(tmp_path)))
    assert latest_checkpoint(tmp_path).name == "step_00000007"
    resumed = train(fresh_model(), batches, cfg(out_dir=str(tmp_path)))
    assert resumed.resumed_from == 7 and same_weights(resumed.model, straight.model)


def test_nan_loss_stops_with_the_step_and_likely_causes():
    def poisoned(step: int) -> dict:
        b = batch_fn(step)
        if step == 3:
            b["x"][0, 0] = float("nan")
        return b

    model = fresh_model()
    with pytest.raises(TrainingDiverged) as err:
        train(model, poisoned, cfg())
    msg = str(err.value)
    assert msg.startswith("step 3: loss is nan")
    assert "learning rate is too high" in msg and "not in [-1, 1]" in msg
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad update never happened


def test_exploding_loss_stops():
    def exploding(step: int) -> dict:
        b = batch_fn(step)
        if step == 2:
            b["y"] = b["y"] * 1e3
        return b

    with pytest.raises(TrainingDiverged, match=r"step 2: loss is .* over 100x the first loss"):
        train(fresh_model(), exploding, cfg())


def test_run_directory_is_not_silently_overwritten(tmp_path):
    out = str(tmp_path / "run")
    train(fresh_model(), batch_fn, cfg(steps=4, out_dir=out))
    with pytest.raises(ValueError, match=r"different config \(lr: 0.003 -> 0.001\)"):
        train(fresh_model(), batch_fn, cfg(steps=4, lr=1e-3, out_dir=out))
    with pytest.raises(ValueError, match="resume=False would overwrite"):
        train(fresh_model(), batch_fn, cfg(steps=4, out_dir=out), resume=False)
    again = train(fresh_model(), batch_fn, cfg(steps=4, lr=1e-3, out_dir=out), overwrite=True)
    assert again.resumed_from is None and [r["step"] for r in read_metrics(out)] == [4]
    weights = latest_checkpoint(out) / "model"
    probe = fresh_model()
    load_weights(weights, probe)
    assert same_weights(probe, again.model)


def test_advice_never_suggests_deleting_the_run(tmp_path):
    """The refusals say how to keep the run (its config, another out_dir), never overwrite=True,
    and leave its checkpoints where they were."""
    out = str(tmp_path / "run")
    train(fresh_model(), batch_fn, cfg(steps=4, out_dir=out, ckpt_every=2))
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    for call in (lambda: train(fresh_model(), batch_fn, cfg(steps=4, lr=1e-3, out_dir=out, ckpt_every=2)),
                 lambda: train(fresh_model(), batch_fn, cfg(steps=4, out_dir=out, ckpt_every=2), resume=False)):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert "overwrite=True" not in msg and "delete" not in msg
        assert "another out_dir" in msg and "nothing was changed" in msg
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("spelling", ["trailing slash", "relative", "dot relative", "symlink", "moved"])
def test_a_run_directory_spelled_otherwise_or_moved_is_the_same_run(spelling, tmp_path, monkeypatch):
    uninterrupted = train(fresh_model(), batch_fn, cfg(ckpt_every=4))

    def crashing(step: int) -> dict:
        if step == 9:
            raise RuntimeError("power cut")
        return batch_fn(step)

    with pytest.raises(RuntimeError):
        train(fresh_model(), crashing, cfg(out_dir=str(tmp_path / "runs" / "a"), ckpt_every=4))
    monkeypatch.chdir(tmp_path)
    again = {"trailing slash": str(tmp_path / "runs" / "a") + "/", "relative": "runs/a", "dot relative": "./runs/a/",
             "symlink": "link", "moved": str(tmp_path / "elsewhere" / "b")}[spelling]
    if spelling == "symlink":
        os.symlink(tmp_path / "runs" / "a", tmp_path / "link")
    if spelling == "moved":
        (tmp_path / "elsewhere").mkdir()
        os.rename(tmp_path / "runs" / "a", tmp_path / "elsewhere" / "b")
    resumed = train(fresh_model(), batch_fn, cfg(out_dir=again, ckpt_every=4))
    assert resumed.resumed_from == 8 and resumed.step == 12
    assert same_weights(resumed.model, uninterrupted.model) and same_weights(resumed.ema, uninterrupted.ema)


def test_bad_model_or_data_is_refused():
    with pytest.raises(TypeError, match="loss"):
        train(nn.Linear(2, 2), batch_fn, cfg())
    with pytest.raises(TypeError, match="batch must be a dict"):
        train(fresh_model(), lambda step: torch.zeros(3), cfg())
    with pytest.raises(ValueError, match="one-shot iterator"):
        train(fresh_model(), iter([batch_fn(0)]), cfg())


# --- DDP: two CPU processes on gloo ------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), DALLE_MINI_DEVICE="cpu")
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    model = TinyRegressor(0.0, noise=0.0)
    seen: list[list[str]] = []

    def recording(step: int, *, rank: int, world_size: int) -> dict:
        full = batch_fn(step)
        lo, hi = rank * 16 // world_size, (rank + 1) * 16 // world_size
        shard = {k: v[lo:hi] for k, v in full.items()}
        seen.append(shard["caption"])
        return shard

    result = train(model, recording, cfg(steps=6, ema_decay=0.9))
    torch.save({"model": result.model.state_dict(), "ema": result.ema.state_dict(), "seen": seen},
               os.path.join(out, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_stay_in_sync(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children start from this process's imports (spawn would re-import torch, slowly)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)  # files this test just wrote
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key])
    assert r0["seen"][0] == [f"item {i}" for i in range(8)] and r1["seen"][0] == [f"item {i}" for i in range(8, 16)]
    # Averaged gradients over two halves = the gradient of the whole batch (no dropout here), so
    # one process on full batches with rank 0's initial weights lands on the same weights.
    torch.manual_seed(0)
    single = train(TinyRegressor(0.0, noise=0.0), batch_fn, cfg(steps=6, ema_decay=0.9))
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0["model"][k], v, rtol=1e-4, atol=1e-5)


def test_plot_losses_reads_the_metric_log(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from dalle_mini_core.runlog import plot_losses

    train(fresh_model(), batch_fn, cfg(steps=8, out_dir=str(tmp_path)))
    fig = plot_losses(tmp_path, title="tiny")
    ax = fig.axes[0]
    assert list(ax.lines[0].get_xdata()) == [4, 8] and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="no metric rows"):
        plot_losses([])


def test_max_seconds_stops_early_saves_and_resumes_exactly(tmp_path):
    full = train(fresh_model(), batch_fn, cfg(steps=8))
    cut = train(fresh_model(), batch_fn, cfg(steps=8, out_dir=str(tmp_path), max_seconds=1e-9))
    assert cut.step == 1 and [r["step"] for r in cut.metrics] == [1]  # logged and saved where it stopped
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    rest = train(fresh_model(), batch_fn, cfg(steps=8, out_dir=str(tmp_path)))  # max_seconds may change on resume
    assert rest.resumed_from == 1 and same_weights(rest.model, full.model)


def test_the_run_folder_readers_are_still_importable_from_train():
    """They live in runlog.py now; `from dalle_mini_core.train import latest_checkpoint` keeps working."""
    from dalle_mini_core import runlog
    from dalle_mini_core import train as train_module

    for name in ("latest_checkpoint", "load_run_weights", "read_metrics", "plot_losses"):
        assert getattr(train_module, name) is getattr(runlog, name)
