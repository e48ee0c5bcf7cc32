"""Samplers and the denoiser loss, tested with denoisers whose optimum is known in closed form.

* One-image data x*: the optimal ε-predictor is ε(x_t, t) = (x_t − sqrt(ᾱ_t) x*) / sqrt(1 − ᾱ_t),
  and its x̂₀ is x* at every step, so every sampler must return x*.
* Gaussian data N(μ, σ²): x_t ~ N(sqrt(ᾱ_t) μ, ᾱ_t σ² + 1 − ᾱ_t), and
  E[ε | x_t] = sqrt(1 − ᾱ_t) (x_t − sqrt(ᾱ_t) μ) / (ᾱ_t σ² + 1 − ᾱ_t); samples must have mean μ
  and variance σ². Its probability-flow ODE has a closed-form solution: in y = x_t/sqrt(ᾱ_t)
  and s = sqrt((1 − ᾱ_t)/ᾱ_t), y(s) = μ + (y(s_T) − μ) · sqrt(σ² + s²) / sqrt(σ² + s_T²), so
  the deterministic samplers are compared with the exact answer and their order is measured.

The analytic models read ᾱ at the ORIGINAL timestep they are given, from the full schedule, so
they also check that a respaced sampler passes `timestep_map[t]` to the model.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dalle_mini_core.diffusion import Denoiser, model_output_to_x0_eps
import math

from dalle_mini_core.sampling import (
    DEFAULT_SPACING,
    SAMPLERS,
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    guided,
    model_calls,
    run_sampler,
    sampling_schedule,
)
from dalle_mini_core.schedule import NoiseSchedule
from dalle_mini_core.solvers import dpmpp_2m_sample, euler_sample, heun_sample, karras_timesteps

T = 1000
SHAPE = (4, 2, 4, 4)  # (B, C, H, W)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.make("cosine", num_timesteps=T)


def _coefs(schedule: NoiseSchedule, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(ᾱ_t), sqrt(1 − ᾱ_t) in float64, shaped (B, 1, 1, 1) for original timesteps t."""
    abar = schedule.alphas_cumprod.double()[t].view(-1, *([1] * (ndim - 1)))
    return abar.sqrt(), (1 - abar).sqrt()


class OneImage(nn.Module):
    """The optimal denoiser for a dataset holding the single image `x_star`, as eps / x0 / v."""

    def __init__(self, schedule: NoiseSchedule, x_star: torch.Tensor, prediction: str = "eps") -> None:
        super().__init__()
        self.schedule, self.prediction = schedule, prediction
        self.x_star = nn.Parameter(x_star.clone())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, b = _coefs(self.schedule, t, x_t.dim())
        x0 = self.x_star.double().expand_as(x_t)
        eps = (x_t.double() - a * x0) / b
        out = {"eps": eps, "x0": x0, "v": a * eps - b * x0}[self.prediction]
        return out.to(x_t.dtype)


class Gaussian(nn.Module):
    """The optimal denoiser for data N(mu, sigma²) per channel, as eps / x0 / v."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor, sigma: torch.Tensor, prediction: str = "eps") -> None:
        super().__init__()
        self.schedule, self.prediction = schedule, prediction
        self.mu, self.sigma = mu.double().view(1, -1, 1, 1), sigma.double().view(1, -1, 1, 1)  # (1, C, 1, 1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, b = _coefs(self.schedule, t, x_t.dim())
        x = x_t.double()
        eps = b * (x - a * self.mu) / (a**2 * self.sigma**2 + b**2)
        x0 = (x - b * eps) / a
        out = {"eps": eps, "x0": x0, "v": a * eps - b * x0}[self.prediction]
        return out.to(x_t.dtype)


def _x_star() -> torch.Tensor:
    return torch.rand((1,) + SHAPE[1:], generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9


def _noise(shape=SHAPE, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- (a) one image ---------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [T, 50, 7])
@pytest.mark.parametrize("clip_x0", [True, False])
def test_one_image_ddim_and_ddpm_return_the_image(schedule, steps, clip_x0):
    sched = schedule if steps == T else schedule.respace(steps)
    x_star = _x_star()
    model = OneImage(schedule, x_star)
    x_T = _noise()
    out_ddim = ddim_sample(model, x_T, sched, clip_x0=clip_x0)
    out_ddpm = ddpm_sample(model, x_T, sched, clip_x0=clip_x0, generator=torch.Generator().manual_seed(2))
    target = x_star.expand(SHAPE)
    assert (out_ddim - target).abs().max() < 1e-4
    assert (out_ddpm - target).abs().max() < 1e-3


def test_one_image_invert_then_sample_reconstructs(schedule):
    x_star = _x_star()
    model = OneImage(schedule, x_star)
    sched = schedule.respace(50)
    x_T = ddim_invert(model, x_star.expand(SHAPE).clone(), sched)
    assert (x_T - x_star).abs().mean() > 0.2  # it really moved away from the image
    back = ddim_sample(model, x_T, sched)
    assert torch.allclose(back, x_star.expand(SHAPE), atol=1e-4)


def test_gaussian_invert_then_sample_reconstructs_and_improves_with_steps(schedule):
    """A non-trivial inverse: for Gaussian data x̂₀ depends on x_t, so inversion is only approximately exact."""
    mu, sigma = torch.tensor([0.3, -0.2]), torch.tensor([0.5, 0.2])
    model = Gaussian(schedule, mu, sigma)
    x0 = mu.view(1, -1, 1, 1) + sigma.view(1, -1, 1, 1) * _noise(seed=3)
    errors = []
    for steps in (20, 200):
        sched = schedule.respace(steps)
        x_T = ddim_invert(model, x0, sched)
        back = ddim_sample(model, x_T, sched, clip_x0=False)
        errors.append((back - x0).abs().max().item())
    assert errors[1] < 0.02
    assert errors[1] < errors[0] / 3


# --- (b) Gaussian data: the moments of the samples ------------------------------------------------

def exact_moments(sched: NoiseSchedule, mu: torch.Tensor, sigma: torch.Tensor, sampler: str, eta: float = 0.0):
    """Mean and std of what a FINITE-step sampler returns for N(mu, sigma²) data, from x_T ~ N(0, I).

    With the optimal Gaussian denoiser each step is affine in x plus fresh noise,
    x ← A x + B + s z, so mean and variance propagate exactly (float64, written independently of
    the samplers: scalars per step, no tensors of samples).
    """
    ab, abp = sched.alphas_cumprod.double(), sched.alphas_cumprod_prev.double()
    c1, c2 = sched.posterior_mean_coef1.double(), sched.posterior_mean_coef2.double()
    m, var = torch.zeros_like(mu, dtype=torch.float64), torch.ones_like(mu, dtype=torch.float64)
    for t in reversed(range(sched.num_timesteps)):
        a, b = ab[t].sqrt(), (1 - ab[t]).sqrt()
        v2 = a**2 * sigma**2 + b**2
        ae, be = b / v2, -a * b * mu / v2  # ε̂ = ae·x + be
        ax, bx = (1 - b * ae) / a, -b * be / a  # x̂₀ = ax·x + bx
        if sampler == "ddpm":  # posterior mean c1·x̂₀ + c2·x, variance β̃
            A, B, s2 = c1[t] * ax + c2[t], c1[t] * bx, sched.posterior_variance.double()[t]
        else:  # DDIM, Song et al. 2021 Eq. 12 and 16
            s2 = eta**2 * (1 - abp[t]) / (1 - ab[t]) * (1 - ab[t] / abp[t])
            d = (1 - abp[t] - s2).sqrt()
            A, B = abp[t].sqrt() * ax + d * ae, abp[t].sqrt() * bx + d * be
        m, var = A * m + B, A**2 * var + (s2 if t > 0 else 0.0)
    return m, var.sqrt()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta1"])
@pytest.mark.parametrize("steps", [T, 50, 10])
def test_gaussian_samples_have_the_data_moments(schedule, sampler, steps):
    """Full schedule: the data's mean and std. Respaced: the exact finite-step moments (fewer steps
    shrink the variance — DDPM with β̃ more than DDIM — which is part of what is tested)."""
    mu, sigma = torch.tensor([0.3, -0.2]), torch.tensor([0.5, 0.2])
    model = Gaussian(schedule, mu, sigma)
    sched = schedule if steps == T else schedule.respace(steps)
    x_T = _noise((512, 2, 4, 4), seed=4)
    gen = torch.Generator().manual_seed(5)
    eta = 1.0 if sampler == "ddim_eta1" else 0.0
    if sampler == "ddpm":
        x = ddpm_sample(model, x_T, sched, clip_x0=False, generator=gen)
    else:
        x = ddim_sample(model, x_T, sched, clip_x0=False, eta=eta, generator=gen)
    per_channel = x.transpose(0, 1).reshape(2, -1)  # (C, B·H·W)
    want_mean, want_std = exact_moments(sched, mu.double(), sigma.double(), sampler[:4], eta)
    if steps == T:
        want_mean, want_std = mu, sigma
        assert torch.allclose(exact_moments(sched, mu.double(), sigma.double(), sampler[:4], eta)[1].float(), sigma, rtol=0.01)
    else:
        assert not torch.allclose(want_std.float(), sigma, rtol=0.02)  # the finite-step bias is real
    assert torch.allclose(per_channel.mean(1), want_mean.float(), atol=0.01)
    assert torch.allclose(per_channel.std(1), want_std.float(), rtol=0.02)


def test_ddim_with_eta_one_is_ddpm(schedule):
    """η = 1 gives σ_t² = β̃_t and the same mean as the DDPM posterior (Song et al. 2021, §4.1)."""
    model = Gaussian(schedule, torch.tensor([0.3, -0.2]), torch.tensor([0.5, 0.2]))
    sched = schedule.respace(20)
    a = ddpm_sample(model, _noise(), sched, generator=torch.Generator().manual_seed(3))
    b = ddim_sample(model, _noise(), sched, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-4)


# --- (c) classifier-free guidance ------------------------------------------------------------------

class ImageConditioned(nn.Module):
    """Optimal ε for 'the data is exactly the image y' (y is the condition); counts its calls."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.schedule, self.calls, self.batches = schedule, 0, []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, y: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
        self.calls += 1
        self.batches.append(x_t.shape[0])
        a, b = _coefs(self.schedule, t, x_t.dim())
        return ((x_t.double() - a * y.double()) / b).to(x_t.dtype) + shift


def test_guidance_scale_one_is_conditional_and_zero_is_unconditional(schedule):
    model = ImageConditioned(schedule)
    x_t, t = _noise(), torch.tensor([10, 200, 500, 999])
    y, null = _x_star().expand(SHAPE), torch.zeros(1, *SHAPE[1:])
    cond, uncond = model(x_t, t, y=y), model(x_t, t, y=null.expand(SHAPE))
    model.calls, model.batches = 0, []
    assert torch.allclose(guided(model, 1.0, {"y": null})(x_t, t, y=y), cond, atol=1e-6)
    assert torch.allclose(guided(model, 0.0, {"y": null})(x_t, t, y=y), uncond, atol=1e-6)
    three = guided(model, 3.0, {"y": null})(x_t, t, y=y)
    assert torch.allclose(three, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert model.calls == 3 and model.batches == [8, 8, 8]  # one forward of 2B per guided call


def test_guided_sampling_at_scale_one_matches_conditional_sampling(schedule):
    model = ImageConditioned(schedule)
    y, null = _x_star().expand(SHAPE), torch.zeros(SHAPE)
    sched = schedule.respace(20)
    a = ddim_sample(model, _noise(), sched, model_kwargs={"y": y}, eta=0.5, generator=torch.Generator().manual_seed(0))
    b = ddim_sample(guided(model, 1.0, {"y": null}), _noise(), sched, model_kwargs={"y": y}, eta=0.5,
                    generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a, y, atol=1e-4)


def test_guided_shares_unnamed_kwargs_and_checks_its_input(schedule):
    model = ImageConditioned(schedule)
    x_t, t, y = _noise(), torch.full((4,), 100), _x_star().expand(SHAPE)
    wrapped = guided(model, 2.0, {"y": torch.zeros(1, *SHAPE[1:])})
    assert torch.allclose(wrapped(x_t, t, y=y, shift=1.0), wrapped(x_t, t, y=y) + 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        guided(model, -0.5, {"y": y})
    with pytest.raises(ValueError, match="null_kwargs"):
        guided(model, 2.0, {"label": y})(x_t, t, y=y)
    with pytest.raises(ValueError, match="null_kwargs"):
        guided(model, 2.0, {"y": torch.zeros(3, *SHAPE[1:])})(x_t, t, y=y)


# --- (d) reproducibility --------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", [ddpm_sample, lambda *a, **k: ddim_sample(*a, eta=0.7, **k)])
def test_same_generator_seed_gives_same_samples(schedule, sampler):
    model = Gaussian(schedule, torch.tensor([0.3, -0.2]), torch.tensor([0.5, 0.2]))
    sched = schedule.respace(25)
    run = lambda seed: sampler(model, _noise(), sched, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


# --- (e) eps / x0 / v agree --------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [T, 30])
def test_prediction_types_agree(schedule, steps):
    mu, sigma = torch.tensor([0.3, -0.2]), torch.tensor([0.5, 0.2])
    sched = schedule if steps == T else schedule.respace(steps)
    outs = {}
    for prediction in ("eps", "x0", "v"):
        model = Gaussian(schedule, mu, sigma, prediction)
        outs[prediction] = ddpm_sample(model, _noise(), sched, prediction=prediction,
                                       generator=torch.Generator().manual_seed(0))
    assert torch.allclose(outs["eps"], outs["x0"], atol=1e-3)
    assert torch.allclose(outs["eps"], outs["v"], atol=1e-3)


def test_model_output_to_x0_eps_inverts_q_sample(schedule):
    x0, eps, t = _x_star().expand(SHAPE), _noise(), torch.tensor([0, 10, 500, 900])
    x_t = schedule.q_sample(x0, t, noise=eps)
    v = schedule.v_target(x0, eps, t)
    for prediction, out in (("eps", eps), ("x0", x0), ("v", v)):
        got_x0, got_eps = model_output_to_x0_eps(schedule, x_t, t, out, prediction)
        assert torch.allclose(got_x0, x0, atol=1e-3), prediction
        assert torch.allclose(got_eps, eps, atol=1e-3), prediction


# --- (f) the denoiser loss --------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_is_zero_for_the_optimal_predictor(schedule, prediction):
    x_star = _x_star()
    den = Denoiser(OneImage(schedule, x_star, prediction), schedule, prediction=prediction)
    loss = den.loss({"image": x_star.expand(SHAPE).clone()}, generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and loss.item() < 1e-6
    wrong = Denoiser(OneImage(schedule, x_star + 0.5, prediction), schedule, prediction=prediction)
    assert wrong.loss({"image": x_star.expand(SHAPE).clone()}, generator=torch.Generator().manual_seed(0)) > 1e-3


def test_loss_gradient_flows_to_the_net(schedule):
    """With x0-prediction of a learnable image θ, the loss is exactly mean((θ − x*)²), whatever t is."""
    x_star = _x_star()
    theta = torch.zeros_like(x_star)
    den = Denoiser(OneImage(schedule, theta, "x0"), schedule, prediction="x0")
    loss = den.loss({"image": x_star.expand(SHAPE).clone()}, generator=torch.Generator().manual_seed(0))
    loss.backward()
    want = 2 * (theta - x_star) / x_star.numel()  # d/dθ of mean over B copies of (θ − x*)²
    assert torch.allclose(den.net.x_star.grad, want, atol=1e-6)
    assert torch.allclose(loss, ((theta - x_star) ** 2).mean(), atol=1e-6)


def test_loss_is_seeded_and_passes_conditioning(schedule):
    seen = {}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x_t, t, *, cond):
            seen["t"], seen["cond"] = t, cond
            return self.w * x_t

    batch = {"image": _x_star().expand(SHAPE).clone(), "emb": torch.arange(4.0)}
    den = Denoiser(Net(), schedule, cond_keys={"cond": "emb"})
    a = den.loss(batch, generator=torch.Generator().manual_seed(7))
    t_a = seen["t"].clone()
    b = den.loss(batch, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(seen["t"], t_a)
    assert torch.equal(seen["cond"], batch["emb"])
    assert seen["t"].dtype == torch.long and 0 <= seen["t"].min() and seen["t"].max() < T
    with pytest.raises(KeyError, match="emb"):
        den.loss({"image": batch["image"]})
    with pytest.raises(ValueError, match="prediction"):
        Denoiser(Net(), schedule, prediction="score")


def test_loss_on_respaced_schedule_gives_the_net_original_timesteps(schedule):
    seen = []
    den = Denoiser(lambda x, t: (seen.append(t), torch.zeros_like(x))[1], schedule.respace(10))
    den.loss({"image": torch.zeros(64, 1, 2, 2)}, generator=torch.Generator().manual_seed(0))
    assert set(seen[0].tolist()) <= set(schedule.respace(10).timestep_map.tolist())


# --- the loop's contract: callback, respacing, errors -------------------------------------------------

def test_callback_sees_every_step_with_original_timesteps(schedule):
    sched = schedule.respace(10)
    seen = []
    model = OneImage(schedule, _x_star())
    ddim_sample(model, _noise(), sched, callback=lambda i, t, x_t, x0: seen.append((i, t, x_t.shape, x0.shape)))
    assert [s[0] for s in seen] == list(range(10))
    assert [s[1] for s in seen] == sched.timestep_map.flip(0).tolist()
    assert seen[0][1] == T - 1 and all(s[2] == SHAPE and s[3] == SHAPE for s in seen)


def test_progress_bar_runs(schedule):
    out = ddpm_sample(OneImage(schedule, _x_star()), _noise(), schedule.respace(3), progress=True)
    assert out.shape == SHAPE


def test_vectors_work_as_well_as_images(schedule):
    """The prior samples CLIP embeddings (B, D): nothing in the samplers assumes 4-D."""
    x_star = torch.linspace(-0.5, 0.5, 8)[None]  # (1, D)

    def model(x_t, t):
        abar = schedule.alphas_cumprod[t][:, None]  # (B, 1)
        return (x_t - abar.sqrt() * x_star) / (1 - abar).sqrt()

    out = ddim_sample(model, torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), schedule.respace(20))
    assert torch.allclose(out, x_star.expand(3, 8), atol=1e-4)


def test_clear_errors(schedule):
    model = OneImage(schedule, _x_star())
    sched = schedule.respace(5)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(model, _noise(), sched, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(model, _noise(), sched, eta=1.5)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(lambda x, t: x[:, :1], _noise(), sched)
    with pytest.raises(ValueError, match="prediction"):
        ddpm_sample(model, _noise(), sched, prediction="score")
    with pytest.raises(ValueError, match="predicts 'eps'"):
        ddim_sample(model, _noise(), sched, prediction="v")
    with pytest.raises(TypeError, match="NoiseSchedule"):
        ddpm_sample(model, _noise(), "cosine")


# --- (f) the Karras-σ samplers and DPM-Solver++(2M) -------------------------------------------------

MU, SD = torch.tensor([0.3, -0.2]), torch.tensor([0.5, 0.2])


def ode_solution(grid: NoiseSchedule, x_T: torch.Tensor) -> torch.Tensor:
    """The exact probability-flow ODE solution for N(MU, SD²) data from x_T at the grid's top level to σ = 0."""
    top = float(grid.alphas_cumprod.double()[-1])
    s_T2 = (1 - top) / top
    mu, sd = MU.double().view(1, -1, 1, 1), SD.double().view(1, -1, 1, 1)
    y_T = x_T.double() / math.sqrt(top)
    return mu + (y_T - mu) * sd / torch.sqrt(sd**2 + s_T2)


def test_karras_timesteps_follow_eq5_and_stay_distinct(schedule):
    steps = karras_timesteps(schedule, 10)
    assert len(steps) == 10 and steps == sorted(set(steps)) and steps[0] == 0
    sigma = ((1 - schedule.alphas_cumprod.double()) / schedule.alphas_cumprod.double()).sqrt()
    assert abs(float(sigma[steps[-1]]) - 80.0) / 80.0 < 0.02  # σ_max = 80, the paper's value
    want = (80.0 ** (1 / 7) + torch.linspace(0, 1, 10, dtype=torch.float64)
            * (float(sigma[0]) ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    got = sigma[torch.tensor(steps[::-1])]
    assert ((got.log() - want.log()).abs() < 0.15).all()  # nearest levels of a 1000-step schedule
    assert len(karras_timesteps(schedule, 200)) == 200  # dense near σ_min: still distinct
    assert karras_timesteps(schedule, 5, sigma_max=1e9)[-1] == T - 1  # capped at the schedule's top
    with pytest.raises(ValueError, match="steps"):
        karras_timesteps(schedule, 0)


def test_euler_is_ddim_on_the_same_levels(schedule):
    """x' = x + (σ' − σ) ε̂ in x/sqrt(ᾱ) is Song et al.'s Eq. 13: the same numbers as DDIM with η = 0."""
    model = Gaussian(schedule, MU, SD)
    for grid in (sampling_schedule(schedule, 12, "karras"), schedule.respace(list(range(0, 960, 40)))):
        a = ddim_sample(model, _noise(), grid, clip_x0=True)
        b = euler_sample(model, _noise(), grid, clip_x0=True)
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("name,order", [("ddim", 1), ("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_deterministic_samplers_converge_to_the_exact_ode_solution_at_their_order(schedule, name, order):
    """Error against the closed-form ODE solution as the Karras levels double: ×½ (first order), ×¼ (second)."""
    model = Gaussian(schedule, MU, SD)
    x_T = _noise().double()
    errors = []
    for steps in (20, 40, 80):
        grid = sampling_schedule(schedule, steps, "karras")
        out = SAMPLERS[name](model, x_T, grid, clip_x0=False)
        errors.append((out - ode_solution(grid, x_T)).abs().max().item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert errors[-1] < (0.05 if order == 1 else 0.005)
    for r in ratios:
        assert 2.0**order * 0.8 < r < 2.0**order * 1.25, (errors, ratios)


def test_second_order_beats_first_order_per_model_call(schedule):
    """At about 40 model calls Heun (21 levels) is about twice and DPM-Solver++ (40) over 4× closer than Euler (40)."""
    model = Gaussian(schedule, MU, SD)
    x_T = _noise().double()
    err = {}
    for name, steps in (("euler", 40), ("heun", 21), ("dpmpp_2m", 40)):
        grid = sampling_schedule(schedule, steps, "karras")
        err[name] = (SAMPLERS[name](model, x_T, grid, clip_x0=False) - ode_solution(grid, x_T)).abs().max().item()
    assert model_calls("heun", 21) == 41 and model_calls("euler", 40) == 40
    assert err["heun"] < err["euler"] * 0.6 and err["dpmpp_2m"] < err["euler"] / 4


@pytest.mark.parametrize("name,options,steps,rtol", [("heun", {}, 60, 0.02), ("dpmpp_2m", {}, 60, 0.02),
                                                     ("euler", {}, 200, 0.03), ("heun", {"churn": 20.0}, 200, 0.02)])
def test_new_samplers_converge_to_the_data_moments(schedule, name, options, steps, rtol):
    """Enough levels: samples of N(μ, σ²) data have mean μ and std σ (Euler, first order, needs more)."""
    model = Gaussian(schedule, MU, SD)
    x = run_sampler(name, model, _noise((512, 2, 4, 4), seed=4), schedule, steps, options=options, clip_x0=False,
                    generator=torch.Generator().manual_seed(5))
    per_channel = x.transpose(0, 1).reshape(2, -1)  # (C, B·H·W)
    assert torch.allclose(per_channel.mean(1), MU, atol=0.01)
    assert torch.allclose(per_channel.std(1), SD, rtol=rtol)


@pytest.mark.parametrize("name,options", [("euler", {}), ("euler", {"churn": 40.0}), ("heun", {"churn": 20.0})])
def test_std_bias_shrinks_with_more_levels(schedule, name, options):
    """The finite-step bias of the std (Euler shrinks it; churn's longer steps more) falls as levels grow."""
    model = Gaussian(schedule, MU, SD)
    bias = []
    for steps in (30, 200):
        x = run_sampler(name, model, _noise((512, 2, 4, 4), seed=4), schedule, steps, options=options, clip_x0=False,
                        generator=torch.Generator().manual_seed(5))
        bias.append((x.transpose(0, 1).reshape(2, -1).std(1) / SD - 1).abs().max().item())
    assert bias[1] < bias[0] / 2, bias


def test_churn_adds_noise_and_is_seeded(schedule):
    model = Gaussian(schedule, MU, SD)
    grid = sampling_schedule(schedule, 20, "karras")
    calls = []
    counting = lambda x_t, t: (calls.append(int(t[0])), model(x_t, t))[1]
    plain = euler_sample(counting, _noise(), grid)
    plain_t = list(calls)
    calls.clear()
    run = lambda seed: euler_sample(model, _noise(), grid, churn=10.0, generator=torch.Generator().manual_seed(seed))
    churned = euler_sample(counting, _noise(), grid, churn=10.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(0), churned) and torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1)) and not torch.allclose(run(0), plain)
    # σ̂ = σ(1 + γ) lands on an ORIGINAL level above the grid's: the model sees higher timesteps
    assert len(calls) == len(plain_t) and all(c >= p for c, p in zip(calls, plain_t)) and calls != plain_t
    # churn_tmax below every σ: no churn at all
    assert torch.equal(euler_sample(model, _noise(), grid, churn=10.0, churn_tmax=1e-6,
                                    generator=torch.Generator().manual_seed(0)), plain)


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_new_samplers_return_the_one_image_and_count_their_calls(schedule, name):
    """One-image data: x̂₀ = x* at every level, so every sampler lands on x*; calls as `model_calls` says."""
    x_star = _x_star()
    model = OneImage(schedule, x_star)
    seen = []
    out = run_sampler(name, model, _noise(), schedule, 9,
                      callback=lambda i, t, x_t, x0: seen.append((i, t)))
    assert torch.allclose(out, x_star.expand(SHAPE), atol=1e-4)
    assert [i for i, _ in seen] == list(range(9))
    assert [t for _, t in seen] == karras_timesteps(schedule, 9)[::-1]  # original timesteps, top first
    calls = []
    run_sampler(name, lambda x_t, t: (calls.append(1), model(x_t, t))[1], _noise(), schedule, 9)
    assert len(calls) == model_calls(name, 9)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_registry_runs_every_sampler_with_every_prediction(schedule, name):
    outs = []
    for prediction in ("eps", "x0", "v"):
        model = Gaussian(schedule, MU, SD, prediction)
        outs.append(run_sampler(name, model, _noise(), schedule, 15, prediction=prediction,
                                generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(outs[0], outs[1], atol=1e-3) and torch.allclose(outs[0], outs[2], atol=1e-3)
    assert set(DEFAULT_SPACING) == set(SAMPLERS)


def test_vectors_work_with_the_new_samplers(schedule):
    x_star = torch.linspace(-0.5, 0.5, 8)[None]  # (1, D), the prior's shape

    def model(x_t, t):
        abar = schedule.alphas_cumprod[t][:, None]  # (B, 1)
        return (x_t - abar.sqrt() * x_star) / (1 - abar).sqrt()

    for name in ("euler", "heun", "dpmpp_2m"):
        out = run_sampler(name, model, torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), schedule, 12)
        assert torch.allclose(out, x_star.expand(3, 8), atol=1e-4)


def test_new_sampler_errors(schedule):
    model = OneImage(schedule, _x_star())
    with pytest.raises(ValueError, match="sampler must be one of"):
        run_sampler("dpm", model, _noise(), schedule, 5)
    with pytest.raises(ValueError, match="churn"):
        euler_sample(model, _noise(), schedule.respace(5), churn=-1.0)
    with pytest.raises(ValueError, match="spacing"):
        sampling_schedule(schedule, 5, "log")
    with pytest.raises(ValueError, match="predicts 'eps'"):
        heun_sample(model, _noise(), schedule.respace(5), prediction="v")
    with pytest.raises(TypeError, match="NoiseSchedule"):
        dpmpp_2m_sample(model, _noise(), "cosine")


def test_the_solvers_are_in_the_registry_and_still_importable_from_sampling():
    """Euler, Heun and DPM-Solver++ live in solvers.py; `SAMPLERS` and the old imports reach the same functions."""
    import dalle_mini_core.sampling as sampling
    import dalle_mini_core.solvers as solvers

    for name, fn in (("euler", "euler_sample"), ("heun", "heun_sample"), ("dpmpp_2m", "dpmpp_2m_sample")):
        assert sampling.SAMPLERS[name] is getattr(solvers, fn) is getattr(sampling, fn)
    assert sampling.karras_timesteps is solvers.karras_timesteps


@pytest.mark.parametrize("steps,first_order", [(3, True), (5, True), (9, True), (10, False), (20, False)])
def test_dpmpp_2m_steps_into_the_last_level_at_first_order_below_ten_levels(schedule, steps, first_order):
    """Lower order at the final step (Lu et al.'s multistep DPM-Solver code, ``lower_order_final``, below 10
    steps): with fewer than 10 levels the step into the last level uses x̂₀ alone, i.e. the DDIM step
    x_u = (σ_u/σ_s) x_s + (α_u − α_s σ_u/σ_s) x̂₀(s), not the extrapolated D, whose overshoot on a
    few large steps leaves the upsampler's backgrounds rough; from 10 levels on it stays second order."""
    model = Gaussian(schedule, MU, SD)
    grid = sampling_schedule(schedule, steps, "karras")
    seen = []
    dpmpp_2m_sample(model, _noise().double(), grid, clip_x0=False,
                    callback=lambda i, t, x_t, x0: seen.append((x_t, x0)))
    abar = grid.alphas_cumprod.double()
    a_s, a_u = float(abar[1]), float(abar[0])
    (x_s, x0_s), (x_u, _) = seen[-2], seen[-1]  # the states the model saw at the last two levels
    ratio = math.sqrt((1 - a_u) / (1 - a_s))
    first_order_step = ratio * x_s + (math.sqrt(a_u) - math.sqrt(a_s) * ratio) * x0_s
    gap = (x_u - first_order_step).abs().max().item()  # ᾱ here is float32-rounded: agreement is to ~1e-6
    assert gap < 1e-5 if first_order else gap > 1e-3, gap
