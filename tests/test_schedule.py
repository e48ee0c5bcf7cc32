"""Tests for dalle_mini_core.schedule: maths checked independently, and parity with diffusers."""
from __future__ import annotations

import math

import pytest
import torch

from dalle_mini_core.schedule import NoiseSchedule, cosine_betas, extract, linear_betas

KINDS = ["linear", "cosine"]


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def schedule(kind) -> NoiseSchedule:
    return NoiseSchedule.make(kind, 1000)


def _betas64(kind: str) -> torch.Tensor:
    return linear_betas(1000) if kind == "linear" else cosine_betas(1000)


def _alphas_cumprod64(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ in float64 by a plain loop, independent of the module's cumprod."""
    out, prod = [], 1.0
    for b in betas.double().tolist():
        prod *= 1.0 - b
        out.append(prod)
    return torch.tensor(out, dtype=torch.float64)


# ---- beta schedules ---------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 10, 1000])
def test_betas_within_clip_and_alphas_cumprod_strictly_decreasing(T):
    lin = linear_betas(T)
    assert lin.dtype == torch.float64 and lin.shape == (T,)
    assert lin.min() >= 1e-4 - 1e-15 and lin.max() <= 0.02 + 1e-15
    cos = cosine_betas(T, max_beta=0.999)
    assert cos.dtype == torch.float64 and cos.shape == (T,)
    assert (cos > 0).all() and (cos <= 0.999).all()
    for betas in (lin, cos):
        ac = NoiseSchedule(betas).alphas_cumprod.double()
        assert (ac[1:] < ac[:-1]).all()
        assert (ac > 0).all() and (ac < 1).all()


def test_cosine_follows_squared_cosine_and_clips_the_last_betas():
    T, s = 1000, 0.008
    sched = NoiseSchedule(cosine_betas(T, s=s))
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 1, 250, 500, 900]:  # code index t is paper step t + 1
        assert sched.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)
    assert cosine_betas(T)[-1].item() == pytest.approx(0.999)  # clip is active at t = T
    assert cosine_betas(T, max_beta=0.5).max().item() == pytest.approx(0.5)


def test_linear_matches_its_endpoints():
    b = linear_betas(1000, 1e-4, 0.02)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_number_of_timesteps_is_refused(bad):
    with pytest.raises(ValueError, match="T"):
        linear_betas(bad)
    with pytest.raises(ValueError, match="T"):
        cosine_betas(bad)


def test_bad_schedule_arguments_are_refused():
    with pytest.raises(ValueError, match="beta_start"):
        linear_betas(10, beta_start=0.0)
    with pytest.raises(ValueError, match="beta_start"):
        linear_betas(10, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="max_beta"):
        cosine_betas(10, max_beta=1.0)
    with pytest.raises(ValueError, match="offset"):
        cosine_betas(10, s=-0.1)
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule.make("quadratic")


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [-0.1, 0.2], [0.1, float("nan")]])
def test_betas_outside_open_unit_interval_are_refused(betas):
    with pytest.raises(ValueError, match="open interval"):
        NoiseSchedule(torch.tensor(betas, dtype=torch.float64))


def test_betas_of_wrong_type_or_shape_are_refused():
    with pytest.raises(TypeError):
        NoiseSchedule([0.1, 0.2])
    with pytest.raises(TypeError):
        NoiseSchedule(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="1-D"):
        NoiseSchedule(torch.full((2, 2), 0.1))
    with pytest.raises(ValueError, match="1-D"):
        NoiseSchedule(torch.zeros(0))


# ---- buffers and extract ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_buffers_are_float32_computed_in_float64(kind):
    schedule = NoiseSchedule.make(kind, 1000)
    ac64 = _alphas_cumprod64(_betas64(kind))
    for name in ["betas", "alphas_cumprod", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2"]:
        assert getattr(schedule, name).dtype == torch.float32
    assert schedule.timestep_map.dtype == torch.long
    # float32 buffer is the float64 value rounded once (not a float32 cumprod): agrees to float32 resolution
    assert torch.allclose(schedule.alphas_cumprod.double(), ac64, rtol=1e-7, atol=0)
    assert torch.allclose(schedule.sqrt_recipm1_alphas_cumprod.double(), torch.sqrt(1 / ac64 - 1), rtol=1e-7, atol=0)
    assert schedule.num_timesteps == 1000
    assert schedule.state_dict() == {}  # schedules are not saved with model weights


def test_extract_shapes_and_values():
    a = torch.arange(10.0)
    t = torch.tensor([3, 0, 9])
    out = extract(a, t, (3, 2, 4, 4))
    assert out.shape == (3, 1, 1, 1)
    assert out.flatten().tolist() == [3.0, 0.0, 9.0]
    assert extract(a, 7, (5, 8)).shape == (1, 1)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        extract(a, torch.tensor([10]), (1, 3))
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        extract(a, -1, (1, 3))
    with pytest.raises(TypeError, match="integer"):
        extract(a, torch.tensor([1.0]), (1, 3))
    with pytest.raises(ValueError, match="batch"):
        extract(a, torch.tensor([1, 2]), (3, 3))


# ---- forward process --------------------------------------------------------------------------


def test_closed_form_noising_matches_iterated_one_step_noising(schedule):
    """q(x_t | x_0) in one jump has the mean and variance of t+1 single steps q(x_s | x_{s-1})."""
    g = torch.Generator().manual_seed(0)
    n, t = 20000, 200
    x0 = torch.tensor([1.0, -0.5]).expand(n, 2)
    betas = schedule.betas
    x = x0.clone()
    for s in range(t + 1):  # code index s is paper step s + 1 (Ho et al. 2020, Eq. 2)
        x = torch.sqrt(1 - betas[s]) * x + torch.sqrt(betas[s]) * torch.randn(x.shape, generator=g)
    jump = schedule.q_sample(x0, torch.full((n,), t), generator=g)
    ac = schedule.alphas_cumprod[t]
    tol_mean = 5 * math.sqrt(1.0 / n)  # five standard errors (variance ≤ 1)
    for sample in (x, jump):
        assert torch.allclose(sample.mean(0), math.sqrt(ac) * x0[0], atol=tol_mean)
        assert torch.allclose(sample.var(0), (1 - ac).expand(2), rtol=0.05)  # ~3.5 standard errors
    assert torch.allclose(x.mean(0), jump.mean(0), atol=2 * tol_mean)


def test_q_sample_with_given_noise_and_seed(schedule, kind):
    x0 = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 499, 999])
    x_t = schedule.q_sample(x0, t, noise=eps)
    ac = _alphas_cumprod64(_betas64(kind))[t].view(3, 1, 1, 1)
    assert torch.allclose(x_t.double(), ac.sqrt() * x0.double() + (1 - ac).sqrt() * eps.double(), atol=1e-6)
    a = schedule.q_sample(x0, t, generator=torch.Generator().manual_seed(5))
    b = schedule.q_sample(x0, t, generator=torch.Generator().manual_seed(5))
    c = schedule.q_sample(x0, t, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="noise shape"):
        schedule.q_sample(x0, t, noise=eps[:, :1])
    with pytest.raises(ValueError, match="not both"):
        schedule.q_sample(x0, t, noise=eps, generator=torch.Generator())
    with pytest.raises(ValueError, match="t must lie"):
        schedule.q_sample(x0, torch.tensor([0, 1, 1000]))


# ---- posterior --------------------------------------------------------------------------------


def test_posterior_equals_bayes_rule_in_float64(schedule, kind):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): multiply the two Gaussians by hand."""
    betas = _betas64(kind)
    ac = _alphas_cumprod64(betas)
    g = torch.Generator().manual_seed(3)
    x0, x_t = torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    for t in [1, 2, 50, 500, 998, 999]:
        alpha, ac_prev = 1 - betas[t], ac[t - 1]
        precision = alpha / betas[t] + 1 / (1 - ac_prev)  # likelihood in x_{t-1} times prior
        var = 1 / precision
        mean = var * (alpha.sqrt() / betas[t] * x_t + ac_prev.sqrt() / (1 - ac_prev) * x0)
        got_mean, got_var, got_log_var = schedule.q_posterior(x0.float(), x_t.float(), torch.full((5,), t))
        assert got_mean.shape == (5, 2) and got_var.shape == (5, 1)
        assert torch.allclose(got_mean.double(), mean, rtol=1e-4, atol=1e-5), t
        assert torch.allclose(got_var.double(), var.expand(5, 1), rtol=1e-4), t
        assert torch.allclose(got_log_var.double(), var.log().expand(5, 1), rtol=1e-4, atol=1e-5), t
    # at t = 0 the posterior is x_0 itself: zero variance, mean x_0; the log-variance is clipped
    mean0, var0, log_var0 = schedule.q_posterior(x0.float(), x_t.float(), 0)
    assert torch.allclose(mean0, x0.float(), atol=1e-6) and var0.item() == 0.0
    assert log_var0.item() == pytest.approx(math.log(schedule.posterior_variance[1].item()), rel=1e-5)


def test_snr_is_decreasing_and_matches_definition(schedule, kind):
    t = torch.arange(1000)
    snr = schedule.snr(t).double()
    ac = _alphas_cumprod64(_betas64(kind))
    assert torch.allclose(snr, ac / (1 - ac), rtol=1e-6)
    assert (snr[1:] < snr[:-1]).all()
    assert schedule.snr(torch.tensor([10, 20])).shape == (2,)


# ---- ε / x_0 / v conversions ------------------------------------------------------------------


def test_eps_x0_v_round_trips(schedule):
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(6, 3, 8, 8, generator=g).clamp(-1, 1)
    eps = torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 100, 400, 700, 900])
    x_t = schedule.q_sample(x0, t, noise=eps)
    assert torch.allclose(schedule.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-4)
    assert torch.allclose(schedule.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-3)
    # v is well conditioned at every t, the last step included
    t_all = torch.tensor([0, 1, 500, 998, 999, 999])
    x_t = schedule.q_sample(x0, t_all, noise=eps)
    v = schedule.v_target(x0, eps, t_all)
    assert torch.allclose(schedule.predict_x0_from_v(x_t, t_all, v), x0, atol=1e-5)
    assert torch.allclose(schedule.predict_eps_from_v(x_t, t_all, v), eps, atol=1e-5)
    # (x_t, v) is a rotation of (x_0, ε) by the angle φ_t with cos φ = sqrt(ᾱ_t): norms add up alike
    norm2 = lambda a: a.pow(2).sum((1, 2, 3))  # noqa: E731  per-sample squared norm, (B,)
    assert torch.allclose(norm2(x_t) + norm2(v), norm2(x0) + norm2(eps), rtol=1e-5)


# ---- respacing --------------------------------------------------------------------------------


def test_respace_keeps_alphas_cumprod_and_maps_timesteps(schedule):
    kept = [0, 5, 99, 500, 501, 999]
    short = schedule.respace(kept)
    assert short.num_timesteps == 6
    assert short.timestep_map.tolist() == kept
    assert torch.equal(short.alphas_cumprod, schedule.alphas_cumprod[kept])
    ac = _alphas_cumprod64(schedule.betas)[kept]  # new betas are ratios of the kept ᾱ (float64 reference)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    assert torch.allclose(short.betas.double(), 1 - ac / ac_prev, rtol=1e-5)
    # respacing a respaced schedule indexes the respaced one and maps back to the original
    shorter = short.respace([1, 3, 5])
    assert shorter.timestep_map.tolist() == [5, 500, 999]
    assert torch.equal(shorter.alphas_cumprod, schedule.alphas_cumprod[[5, 500, 999]])


def test_respace_by_count():
    sched = NoiseSchedule.make("cosine", 1000)
    short = sched.respace(50)
    tm = short.timestep_map
    assert short.num_timesteps == 50 and tm[0] == 0 and tm[-1] == 999 and (tm[1:] > tm[:-1]).all()
    assert torch.equal(short.alphas_cumprod, sched.alphas_cumprod[tm])
    assert sched.respace(1).timestep_map.tolist() == [999]
    full = sched.respace(1000)
    assert torch.equal(full.timestep_map, torch.arange(1000))
    assert torch.allclose(full.betas, sched.betas, rtol=1e-5)


@pytest.mark.parametrize(
    "steps, err",
    [(0, ValueError), (1001, ValueError), ([], ValueError), ([3, 2], ValueError), ([2, 2], ValueError),
     ([-1, 5], ValueError), ([5, 1000], ValueError), ([1.0, 2.0], TypeError)],
)
def test_respace_refuses_bad_steps(steps, err):
    with pytest.raises(err):
        NoiseSchedule.make("linear", 1000).respace(steps)


def test_single_step_schedule():
    sched = NoiseSchedule(torch.tensor([0.5], dtype=torch.float64))
    assert sched.posterior_variance.item() == 0.0 and torch.isfinite(sched.posterior_log_variance_clipped).all()
    assert sched.q_sample(torch.ones(1, 2), 0, noise=torch.zeros(1, 2)).allclose(torch.full((1, 2), math.sqrt(0.5)))


# ---- parity with diffusers' DDPMScheduler -----------------------------------------------------

DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def _diffusers(kind: str, prediction_type: str = "epsilon"):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[kind], variance_type="fixed_small",
        clip_sample=False, prediction_type=prediction_type,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_diffusers_betas_add_noise_and_variance(kind):
    ref = _diffusers(kind)
    ours = NoiseSchedule.make(kind, 1000)
    assert torch.allclose(ours.betas, ref.betas, rtol=1e-5, atol=1e-8)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod, rtol=1e-4, atol=1e-7)
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(4, 3, 8, 8, generator=g)
    eps = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    assert torch.allclose(ours.q_sample(x0, t, noise=eps), ref.add_noise(x0, eps, t), atol=1e-4)
    for step in [1, 2, 10, 300, 700, 998, 999]:
        # diffusers forms β_t = 1 - ᾱ_t/ᾱ_{t-1} in float32: a few float32 ulps of 1 (~1e-7) absolute
        assert ours.posterior_variance[step].item() == pytest.approx(ref._get_variance(step).item(), rel=1e-4, abs=3e-7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_parity_with_diffusers_step(kind, prediction):
    """One ancestral step x_t → x_{t-1} (Ho et al. 2020, Algorithm 2) with the same noise."""
    ref = _diffusers(kind, prediction)
    ours = NoiseSchedule.make(kind, 1000)
    g = torch.Generator().manual_seed(8)
    x_t = torch.randn(2, 3, 8, 8, generator=g)
    out = torch.randn(2, 3, 8, 8, generator=g)  # a stand-in model output
    for step in [1, 250, 999]:
        t = torch.full((2,), step)
        want = ref.step(out, step, x_t, generator=torch.Generator().manual_seed(step)).prev_sample
        if prediction == "epsilon":
            x0 = ours.predict_x0_from_eps(x_t, t, out)
        elif prediction == "v_prediction":
            x0 = ours.predict_x0_from_v(x_t, t, out)
        else:
            x0 = out
        mean, var, _ = ours.q_posterior(x0, x_t, t)
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(step))
        got = mean + var.sqrt() * z
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, want.abs().max().item())), (step, prediction)


@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_diffusers_respaced_step(kind):
    """diffusers' 50 inference steps ("leading" spacing) are our respace of the same timesteps."""
    ref = _diffusers(kind)
    ref.set_timesteps(50)
    timesteps = sorted(ref.timesteps.tolist())
    ours = NoiseSchedule.make(kind, 1000).respace(timesteps)
    g = torch.Generator().manual_seed(9)
    x_t = torch.randn(2, 3, 8, 8, generator=g)
    eps = torch.randn(2, 3, 8, 8, generator=g)
    for i in [1, 25, 49]:
        original_t = timesteps[i]
        assert ours.timestep_map[i].item() == original_t
        want = ref.step(eps, original_t, x_t, generator=torch.Generator().manual_seed(i)).prev_sample
        t = torch.full((2,), i)
        mean, var, _ = ours.q_posterior(ours.predict_x0_from_eps(x_t, t, eps), x_t, t)
        got = mean + var.sqrt() * torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i))
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-3), i


# ---- the notebook's picture ---------------------------------------------------------------------


def test_show_noising_draws_one_figure_and_refuses_bad_t():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dalle_mini_core.viz import show_noising

    sched = NoiseSchedule.make("cosine", 100)
    x = torch.zeros(3, 8, 8)
    fig = show_noising(x, 50, sched)
    assert len(fig.axes) == 4 and "t = 50" in fig.axes[2].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="t must be"):
        show_noising(x, 100, sched)
    with pytest.raises(ValueError, match="one image"):
        show_noising(torch.zeros(2, 3, 8, 8), 5, sched)
