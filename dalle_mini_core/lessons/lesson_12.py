"""Lesson 12 (training all of unCLIP on one GPU): exercise references, cases and plausible wrong answers.

1. ``12.batch_scaling`` (predict): how a stage's images/s change when its batch grows, measured on the
   machine the notebook runs on;
2. ``12.ddp_step`` (implement): the rows each process computes and the images one optimizer step sees
   under DistributedDataParallel, for the package's global batch and for a per-GPU batch;
3. ``12.still_learning`` (predict): read a loss curve, is the stage still learning when it stops?
"""
from __future__ import annotations

import statistics

from dalle_mini_core.exercises import Exercise, exercise, register

# ------------------------------------------------------------------------------------------------
# 1. Predict, then measure: images/s against the batch size
# ------------------------------------------------------------------------------------------------

BATCH_OPTIONS = {
    "a": "about the same images/s (less than 1.3 times as many): a step's time grows with its rows",
    "b": "more images/s, but less than in proportion to the batch",
    "c": "nearly in proportion to the batch (at least 3/4 of it): a step takes about as long whatever its rows",
}


def judge_batch_scaling(measured) -> tuple[str, str]:
    """`measured` = (small batch, its images/s, large batch, its images/s), timed on one machine."""
    small, small_rate, large, large_rate = measured
    small, large, small_rate, large_rate = int(small), int(large), float(small_rate), float(large_rate)
    if not (0 < small < large) or small_rate <= 0 or large_rate <= 0:
        raise ValueError(f"expected (small batch, images/s, larger batch, images/s) with positive rates, got {measured!r}")
    gain, batch_ratio = large_rate / small_rate, large / small
    if gain < 1.3:
        letter = "a"
    elif gain < 0.75 * batch_ratio:
        letter = "b"
    else:
        letter = "c"
    why = (f"Measured: {small_rate:.1f} images/s at batch {small}, {large_rate:.1f} at batch {large} "
           f"({batch_ratio:.0f} times the rows): {gain:.2f} times the images/s. ")
    if letter == "a":
        why += ("The arithmetic units were already busy at the small batch, so a step's time grew with the rows it "
                "computed: what a CPU does. Larger batches then buy little per image (they change the optimisation, "
                "not the speed).")
    elif letter == "b":
        why += ("Part of a step's time is fixed (Python, launching each operation, the optimizer's update of every "
                "weight) and part grows with the rows: larger batches spread the fixed part over more images.")
    else:
        why += ("A step cost about the same whatever its rows: fixed costs per step (Python, one launch per "
                "operation, the optimizer, synchronisations) dominated, as on a GPU training a small model. Larger "
                "batches are then almost free images until the device is full.")
    return letter, why


register(Exercise(
    name="12.batch_scaling", kind="predict", title="images/s against the batch size",
    hint="split a step's time into a part that grows with the rows (the arithmetic) and a part that does not "
         "(Python, launching each operation, the optimizer's update): which part dominates on this device?",
    options=BATCH_OPTIONS, judge=judge_batch_scaling,
    wrong=(("a GPU speeds up with the batch, so a CPU does too (measured: 1.1 times at 4 times the batch)",
            ("c", (4, 10.0, 16, 11.0))),
           ("bigger batches are always more efficient (measured: 1.1 times)", ("b", (4, 10.0, 16, 11.0))),
           ("a step's time always grows with its rows (measured: 3.8 times at 4 times the batch)",
            ("a", (64, 1000.0, 256, 3800.0)))),
))


# ------------------------------------------------------------------------------------------------
# 2. Implement: the batch under DistributedDataParallel
# ------------------------------------------------------------------------------------------------


def _ddp_cases():
    return [(256, 4, False), (256, 4, True), (128, 1, False), (96, 8, True), (1024, 2, False), (16, 2, False)]


@exercise("12.ddp_step", "implement", "the batch under DDP",
          hint="this package's recipes name the GLOBAL batch: train.py cuts it into world_size contiguous slices, one "
               "per process, and DDP averages their gradients, so one optimizer step has seen the whole batch; a "
               "per-GPU batch (a DataLoader with a DistributedSampler) is what each process computes, so a step sees "
               "world_size times as many images",
          cases=_ddp_cases,
          wrong=(("per_gpu ignored: the batch always split", lambda b, w, p: (b // w, b)),
                 ("always a per-GPU batch", lambda b, w, p: (b, b * w)),
                 ("the images of one process counted as the step's", lambda b, w, p: (b, b) if p else (b // w, b // w))))
def ddp_step(batch: int, world_size: int, per_gpu: bool) -> tuple[int, int]:
    """(rows each process computes per step, images one optimizer step sees)."""
    if per_gpu:
        return batch, batch * world_size
    if batch % world_size:
        raise ValueError(f"global batch size {batch} is not divisible by the {world_size} processes")
    return batch // world_size, batch


# ------------------------------------------------------------------------------------------------
# 3. Predict, then measure: read a loss curve
# ------------------------------------------------------------------------------------------------

CURVE_OPTIONS = {
    "a": "still falling clearly: the last rows are more than 10% below the middle of the run",
    "b": "falling slowly: 2% to 10% below the middle of the run",
    "c": "flat or rising: within 2% of the middle of the run, or above it",
}


def curve_drop(losses) -> tuple[float, float, float, int]:
    """(drop, late mean, middle mean, rows per window) of a logged loss curve: the mean of the last quarter
    of the rows against the mean of as many rows ending at the middle of the run."""
    values = [float(v) for v in losses]
    n = len(values)
    if n < 2:
        raise ValueError(f"a loss curve needs at least 2 logged rows, got {n}")
    k = max(1, n // 4)
    middle = values[max(0, n // 2 - k): max(1, n // 2)]
    late = values[-k:]
    mid_mean, late_mean = statistics.fmean(middle), statistics.fmean(late)
    return 1.0 - late_mean / mid_mean, late_mean, mid_mean, k


def judge_still_learning(measured) -> tuple[str, str]:
    """`measured` = a stage's logged losses in step order (the window means of its metrics.csv)."""
    drop, late, mid, k = curve_drop(measured)
    letter = "a" if drop > 0.10 else ("b" if drop >= 0.02 else "c")
    direction = f"{100 * drop:.1f}% below" if drop >= 0 else f"{-100 * drop:.1f}% above"
    why = (f"Measured over the {len(measured)} logged rows: the last {k} average {late:.4g}, the {k} ending at the "
           f"middle of the run {mid:.4g}, {direction} it. ")
    if letter == "a":
        why += ("The stage stopped while it was still learning: its step budget, not the model, ended it, and more "
                "steps would lower the loss further.")
    elif letter == "b":
        why += ("It is still learning, slowly: more steps would help a little; a lower learning rate at the end "
                "(the cosine decay) is what usually buys the last part.")
    else:
        why += ("The curve has flattened at this scale (or rows are noisy: each diffusion row averages random "
                "timesteps, so compare windows of rows, never two single rows). More steps of the same run buy little.")
    return letter, why


register(Exercise(
    name="12.still_learning", kind="predict", title="is the stage still learning?",
    hint="compare the end of the curve with its middle, window against window (single rows are noisy), and look "
         "at the log scale: a straight descent on a log axis is a steady relative fall",
    options=CURVE_OPTIONS, judge=judge_still_learning,
    wrong=(("it fell at the start, so it still falls (measured: flat after the first rows)",
            ("a", [1.0, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3])),
           ("diffusion losses never move after the start (measured: a steady fall)",
            ("c", [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])),
           ("slowly (measured: 53% lower)", ("b", [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]))),
))
