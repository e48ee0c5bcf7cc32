"""Lesson 09 (the upsampler): exercise references, cases and plausible wrong answers.

Five exercises, easiest first: the U-Net's input (implement), a blur corruption applied at the
wrong resolution (find the bug), noise augmentation of the conditioning image (implement), the
RMSE of the samples' mean against the samples' mean RMSE, per image (implement), and a prediction: does the
shipped upsampler beat bilinear interpolation on RMSE?
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.schedule import NoiseSchedule
from dalle_mini_core.upsampler import gaussian_blur


def _bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# --- 1. implement: what the U-Net sees ----------------------------------------------------------

def _input_cases():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 8, 8, generator=g)),
            (torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 3, 4, 4, generator=g))]


@exercise("09.upsampler_input", "implement", "upsampler_input",
          hint="bring the low-res image to x_t's size with bilinear upsampling (pixel centres aligned, "
               "align_corners=False), then stack it AFTER x_t on the channel axis (dim 1)",
          cases=_input_cases,
          wrong=(("nearest-neighbour upsampling", lambda x, z: torch.cat([x, F.interpolate(z, size=x.shape[-1])], dim=1)),
                 ("low-res first", lambda x, z: torch.cat([_bilinear(z, x.shape[-1]), x], dim=1)),
                 ("added instead of concatenated", lambda x, z: x + _bilinear(z, x.shape[-1]))))
def upsampler_input(x_t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    return torch.cat([x_t, _bilinear(low_res, x_t.shape[-1])], dim=1)


# --- 2. find the bug: a blur at the wrong resolution --------------------------------------------

def buggy_blur_then_upsample(low_res: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """The notebook's broken corruption (σ is meant in the decoder's, low-res, pixels)."""
    up = _bilinear(low_res, size)
    return gaussian_blur(up, sigma)


def _blur_cases():
    g = torch.Generator().manual_seed(9)
    return [(torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.tensor([0.5, 1.0]), 16),
            (torch.rand(3, 3, 8, 8, generator=g) * 2 - 1, torch.tensor([0.0, 0.6, 0.4]), 32)]


def _blur_doubled_sigma_at_high_res(low_res, sigma, size):  # rescales σ but still blurs the upsampled picture
    return gaussian_blur(_bilinear(low_res, size), sigma * size / low_res.shape[-1])


@exercise("09.blur_resolution", "find the bug", "blur at the right resolution",
          hint="σ is measured in pixels of the picture the DECODER hands over (32×32): blur that picture, "
               "then upsample it, as Upsampler.corrupt does",
          cases=_blur_cases,
          buggy=buggy_blur_then_upsample,
          wrong=(("σ rescaled, still blurred after upsampling", _blur_doubled_sigma_at_high_res),))
def blur_then_upsample(low_res: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    return _bilinear(gaussian_blur(low_res, sigma), size)


# --- 3. implement: noise augmentation -----------------------------------------------------------

_SCHEDULE = NoiseSchedule.make("cosine", 1000)


def _noise_cases():
    g = torch.Generator().manual_seed(4)
    abar = _SCHEDULE.alphas_cumprod.float()
    return [(torch.rand(3, 3, 4, 4, generator=g) * 2 - 1, torch.tensor([0, 100, 999]), torch.randn(3, 3, 4, 4, generator=g), abar),
            (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.tensor([250, 30]), torch.randn(2, 3, 8, 8, generator=g), abar)]


def _noise_variance_weights(up_z, s, eps, alphas_cumprod):  # ᾱ and 1 − ᾱ are variances: the weights are their roots
    a = alphas_cumprod[s].view(-1, 1, 1, 1)
    return a * up_z + (1 - a) * eps


def _noise_same_level_for_all(up_z, s, eps, alphas_cumprod):  # one level for the whole batch
    a = alphas_cumprod[s[0]]
    return a.sqrt() * up_z + (1 - a).sqrt() * eps


def _noise_added(up_z, s, eps, alphas_cumprod):  # noise added on top, the signal not shrunk
    a = alphas_cumprod[s].view(-1, 1, 1, 1)
    return up_z + (1 - a).sqrt() * eps


@exercise("09.noise_augment", "implement", "noise augmentation",
          hint="each image gets its own level s: look up ᾱ_s per image, shape it to (B, 1, 1, 1), and mix signal and "
               "noise with the square roots of ᾱ_s and 1 − ᾱ_s (the forward process, notebook 02)",
          cases=_noise_cases,
          wrong=(("variances as weights", _noise_variance_weights),
                 ("one level for the whole batch", _noise_same_level_for_all),
                 ("noise added, signal not shrunk", _noise_added)))
def noise_augment(up_z: torch.Tensor, s: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod[s].view(-1, 1, 1, 1).to(up_z.dtype)
    return a.sqrt() * up_z + (1 - a).sqrt() * eps


# --- 4. implement: RMSE of the mean against the mean RMSE, per image ---------------------------

def _rmse_per_image(x: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:  # (..., N, C, H, W) → (..., N)
    return ((x - truth) ** 2).mean(dim=(-3, -2, -1)).sqrt()


def _rmse_cases():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(3, 2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)),
            (torch.randn(5, 1, 3, 8, 8, generator=g), torch.zeros(1, 3, 8, 8)),
            (torch.randn(2, 4, 3, 4, 4, generator=g) * torch.arange(1.0, 5.0).view(1, 4, 1, 1, 1),
             torch.randn(4, 3, 4, 4, generator=g))]


def _rmse_swapped(samples, truth):
    a, b = rmse_of_mean(samples, truth)
    return b, a


def _rmse_mse_not_root(samples, truth):  # forgets the square root
    return (((samples.mean(0) - truth) ** 2).mean(dim=(-3, -2, -1)),
            ((samples - truth) ** 2).mean(dim=(-3, -2, -1)).mean(0))


def _rmse_pooled(samples, truth):  # one RMSE over every sample's pixels at once, not a mean of per-sample RMSEs
    return _rmse_per_image(samples.mean(0), truth), ((samples - truth) ** 2).mean(dim=(0, -3, -2, -1)).sqrt()


def _rmse_whole_batch(samples, truth):  # one number over all images instead of one per image
    m = ((samples.mean(0) - truth) ** 2).mean().sqrt()
    per = torch.stack([((s - truth) ** 2).mean().sqrt() for s in samples]).mean()
    return m.expand(truth.shape[0]).clone(), per.expand(truth.shape[0]).clone()


@exercise("09.rmse_of_mean", "implement", "rmse_of_mean",
          hint="work per image n: first item, average image n's K samples into one picture and take the RMSE over its "
               "C·H·W pixels; second item, take one RMSE per sample of image n, then average those K numbers",
          cases=_rmse_cases,
          wrong=(("the two items swapped", _rmse_swapped),
                 ("mean square, no root", _rmse_mse_not_root),
                 ("one pooled RMSE instead of a mean of RMSEs", _rmse_pooled),
                 ("one number for the whole batch", _rmse_whole_batch)))
def rmse_of_mean(samples: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _rmse_per_image(samples.mean(0), truth), _rmse_per_image(samples, truth).mean(0)


# --- 5. predict, then measure: the upsampler against bilinear on RMSE ---------------------------

RMSE_OPTIONS = {
    "a": "bilinear has the lower RMSE: RMSE rewards the hedged, blurred picture",
    "b": "the shipped upsampler's sample has the lower RMSE",
    "c": "they tie (within 0.005)",
}


def judge_rmse(measured) -> tuple[str, str]:
    """`measured` = (RMSE of bilinear, RMSE of one upsampler sample[, RMSE between two upsampler samples of the same
    inputs]), all against the true 64×64 pictures except the last."""
    bil, ups = float(measured[0]), float(measured[1])
    between = float(measured[2]) if len(measured) > 2 else None
    facts = f"Measured on clean downsampled pictures: bilinear RMSE {bil:.3f}, one upsampler sample {ups:.3f}."
    if between is not None:
        facts += f" Two upsampler samples of the same inputs differ from each other by RMSE {between:.3f}."
    if abs(bil - ups) < 0.005:
        return "c", facts + " A tie on this measure: the sample's sharper edges and the errors it invents cancel."
    if ups < bil:
        why = (" The samples differ from each other less than bilinear differs from the truth: on these inputs the 32×32 "
               "picture decides most of the 64×64 one, so a sample commits to nearly the right picture, while bilinear "
               "is soft at every edge." if between is not None and between < bil else
               " Bilinear is soft at every edge; the sample's edges are sharp and mostly in the right place.")
        return "b", facts + why + " RMSE favours blur only where the low-res picture leaves much open and samples disagree."
    return "a", (facts + " Bilinear wins: the upsampler's samples disagree with the truth where the low-res picture leaves "
                 "detail open, and RMSE punishes detail that is not exactly right more than it punishes blur.")


register(Exercise(
    name="09.beats_bilinear", kind="predict", title="upsampler against bilinear on RMSE",
    hint="how much does a 32×32 picture of a flat shape leave open for the 64×64 one?",
    options=RMSE_OPTIONS, judge=judge_rmse,
    wrong=(("bilinear wins (upsampler measured better)", ("a", (0.060, 0.046))),
           ("tie (upsampler measured better)", ("c", (0.060, 0.046))),
           ("upsampler wins (bilinear measured better)", ("b", (0.059, 0.113)))),
))
