"""The run machinery of ``dalle-mini train`` (`stages.train_all`): run directories, plans,
resuming, and moving finished stages into the output folder so that it is never half new.

* each stage of a dataset trains in its own run directory, ``OUT/train_runs/<dataset>/<stage>/``,
  with train.py's checkpoints; ``stage.json`` there records the settings (the *plan*) it was
  started with, and `decide` tells, per stage, whether a rerun starts it afresh, resumes it,
  finds it finished (``final/``, not yet moved into OUT) or finds it in OUT already;
* `commit` moves finished stages' files into OUT through a journal (``COMMIT.json``):
  ``MANIFEST.json`` is first rewritten without the files about to be replaced and written in full
  last, so it never vouches for a file it does not match; `finish_commit` completes the moves
  an interrupted run began;
* the checks before any work (`check_out`, `check_memory`, `check_space`), `fit_steps` (how many
  steps fit a time budget), the float16 the weights ship in, and `Progress`, the readable
  progress lines;
* speed (`bf16_peak_tflops`, `train_flops_per_item`, `speed`): each stage's images/s and its
  fraction of the device's measured bf16 matrix-product peak, in the report.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .device import get_device

__all__ = ["RUNS_FOLDER", "MAX_SEED", "MANIFEST", "process_rank", "machine_description", "fit_steps", "write_json",
           "read_json", "sha256", "duration", "round_to_float16", "save_weights", "Progress", "check_out",
           "check_memory", "check_space", "stage_dir", "weights_name", "decide", "commit", "finish_commit",
           "bf16_peak_tflops", "train_flops_per_item", "speed"]

RUNS_FOLDER = "train_runs"  # OUT/train_runs/<dataset>/<stage>/: a stage's run directory and its record
MAX_SEED = 2**32 - 1  # seeds are mixed into 64-bit generator seeds; larger ones would alias
_JOURNAL = "COMMIT.json"  # OUT/train_runs/COMMIT.json: the moves into OUT still to be done
MANIFEST = "MANIFEST.json"


def process_rank() -> int:
    """This process's rank: torch.distributed's when initialised, else ``RANK`` (torchrun), else 0."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
def machine_description() -> str:
    """A one-line description of the machine a run used (recorded in the manifest)."""
    dev = get_device()
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} GPU, {cpu}"
    return cpu


def fit_steps(model: torch.nn.Module, batch_fn: Callable[[int], dict], *, max_steps: int, budget_s: float | None,
              calib_steps: int = 15, lr: float = 1e-4) -> tuple[int, float]:
    """How many steps of `model.loss` on `batch_fn` fit in `budget_s` seconds (at most `max_steps`).

    Times `calib_steps` forward/backward/AdamW steps on a throw-away copy (after 3 warm-up
    steps) and returns (steps, seconds per step). With no budget, returns (max_steps, nan).
    """
    import copy

    from .device import autocast

    if budget_s is None:
        return max_steps, float("nan")
    dev = get_device()
    probe = copy.deepcopy(model).to(dev).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, **({"fused": True} if dev.type == "cuda" else {}))  # as train.py

    def step(i: int) -> None:
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch_fn(i).items()}
        with autocast(dev):
            loss = probe.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # one sync per step, as train.py does

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    for i in range(calib_steps):
        step(3 + i)
    per_step = (time.perf_counter() - t0) / calib_steps
    del probe, opt
    return max(1, min(max_steps, int(budget_s / per_step))), per_step


def bf16_peak_tflops(device: torch.device) -> float:
    """The device's measured bf16 matrix-product rate in TFLOP/s (`bench.matmul_gflops`: n×n products,
    n = 8192 on CUDA, 1024 elsewhere), the ceiling a stage's throughput is compared with."""
    from .bench import matmul_gflops

    return matmul_gflops(device, torch.bfloat16) / 1e3


def train_flops_per_item(model: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> float:
    """FLOPs of one training step's forward and backward, per item of `batch` (counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on a throw-away copy, attention on the math path;
    the optimizer's few element-wise FLOPs are left out)."""
    import copy

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from .device import autocast

    probe = copy.deepcopy(model).to(device).train()
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), autocast(device), counter:
        probe.loss(batch).backward()
    n = next(v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.dim() > 0)
    return counter.get_total_flops() / n


def speed(img_per_s: float | None, flops_per_item: float, peak_tflops: float) -> dict[str, Any]:
    """A stage's throughput in a report: items/s × FLOPs per item, and its fraction of the measured peak."""
    achieved = (img_per_s or 0.0) * flops_per_item / 1e12
    return {"train_gflop_per_item": round(flops_per_item / 1e9, 4), "train_tflop_per_s": round(achieved, 4),
            "bf16_peak_tflop_per_s": round(peak_tflops, 1), "fraction_of_bf16_peak": achieved / peak_tflops}


# ---------------------------------------------------------------------------------------------
# Small helpers: strict JSON written atomically, durations, the float16 the weights ship in
# ---------------------------------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON (no NaN) atomically: a temporary file, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); move it aside and run the command again") from None


def sha256(path: Path) -> str:
    from .checkpoints import sha256_file

    return sha256_file(path)


def duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@torch.no_grad()
def round_to_float16(model: torch.nn.Module) -> torch.nn.Module:
    """Round floating weights to float16 and back, in place: the values the shipped file holds.

    The later stages train on what this stage ships, so a run that reloads a finished stage
    from its file and a run that never stopped see the same numbers."""
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.copy_(t.to(torch.float16))
    return model


def save_weights(model: torch.nn.Module, config: Any, path: Path, extra: dict[str, Any]) -> Path:
    from .checkpoints import save_checkpoint

    # float16 halves the shipped files; the models are trained in bf16/fp32 and sampled in fp32
    return save_checkpoint(path, model.cpu(), config, extra=extra, dtype=torch.float16)


class Progress:
    """Readable progress lines for one stage, written from inside its batch function:
    ``[decoder] step 400/1600 (25%)  loss 0.0812  2150 images/s  ETA 1 min 40 s``.

    The loop asks for step k's batch once steps 0..k-1 are done; the loss is the newest row of
    the run's metrics.csv (a window mean). A line at most every `every_s` seconds."""

    def __init__(self, stage: str, total: int, metrics: Path | None, log: Callable[[str], None], every_s: float):
        self.stage, self.total, self.metrics, self.log, self.every_s = stage, total, metrics, log, every_s
        self.t0: float | None = None
        self.first = self.batch = 0
        self.last_line = 0.0

    def wrap(self, batch_fn: Callable[[int], dict]) -> Callable[[int], dict]:
        def batch_with_progress(step: int) -> dict:
            self.tick(step)
            batch = batch_fn(step)
            self.batch = next((v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), 0)
            return batch

        return batch_with_progress

    def tick(self, done: int) -> None:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.first, self.last_line = now, done, now
            return
        if done > self.first and now - self.last_line >= self.every_s:
            self.last_line = now
            self.log(self.line(done, now))

    def line(self, done: int, now: float) -> str:
        elapsed = now - (self.t0 or now)
        per_step = elapsed / max(1, done - self.first)
        rate = self.batch / per_step if per_step > 0 else 0.0
        return (f"[{self.stage}] step {done}/{self.total} ({100 * done / self.total:.0f}%)  loss {self.loss()}  "
                f"{rate:.1f} images/s  ETA {duration((self.total - done) * per_step)}")

    def loss(self) -> str:
        try:
            lines = self.metrics.read_text().splitlines() if self.metrics else []
            return f"{float(lines[-1].split(',')[1]):.4f}" if len(lines) > 1 else "–"
        except (OSError, ValueError, IndexError):
            return "–"


def check_out(out: Path, name: str) -> None:
    """OUT is a folder this process can write to (created if missing)."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise ValueError(f"{name} {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write_test")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{name} {out} cannot be written to ({exc.strerror or exc})") from None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(banks: dict[str, tuple[int, int, int]], name: str) -> None:
    """Refuse a bank whose rendered items could not fit in this machine's memory.

    `banks` maps a stage to (items, image side, embedding size; 0 when not embedded)."""
    if not banks:
        return

    def need(spec: tuple[int, int, int]) -> int:
        n, side, embed_dim = spec
        return n * (3 * side * side * 4 + 32 * 8 + 2 * embed_dim * 4)  # float images, tokens, two embeddings

    worst = max(banks, key=lambda s: need(banks[s]))
    total = _physical_memory()
    if total and need(banks[worst]) > 0.8 * total:
        raise ValueError(f"{name} {banks[worst][0]}: the {worst} stage's rendered scenes would need about "
                         f"{need(banks[worst]) / 1e9:.1f} GB of memory, and this machine has {total / 1e9:.1f} GB; "
                         f"give a smaller {name}")


def check_space(out: Path, models: dict[str, tuple[torch.nn.Module, bool]], name: str) -> None:
    """Refuse to start when OUT's disk cannot hold the weights and a stage's checkpoints."""
    finals, peak = 0, 0
    for model, has_ema in models.values():
        n = sum(t.numel() for t in model.state_dict().values())
        finals += 2 * n  # float16 weights
        # a checkpoint: float32 model (+ EMA) and AdamW's two moments; two kept and one being written
        peak = max(peak, 3 * 4 * n * (3 + has_ema))
    need = int(1.1 * (finals + peak)) + (1 << 20)
    free = shutil.disk_usage(out).free
    if free < need:
        raise ValueError(f"{name} {out}: about {need / 1e6:.1f} MB of free disk space are needed (the weights, and a "
                         f"stage's checkpoints while it trains), {free / 1e6:.1f} MB are free")


def stage_dir(out: Path, dataset: str, stage: str) -> Path:
    """A stage's run directory: ``OUT/train_runs/<dataset>/<stage>``."""
    return out / RUNS_FOLDER / dataset / stage


def weights_name(dataset: str, stage: str) -> str:
    """The stem of a stage's shipped files: ``<dataset>_<stage>`` (.safetensors and .json)."""
    return f"{dataset}_{stage}"


def decide(out: Path, dataset: str, plans: dict[str, dict], names: dict[str, str]) -> dict[str, str]:
    """Per stage: "fresh", "resume" (an unfinished run with the same settings), "staged" (finished,
    not yet moved into OUT) or "done" (in OUT already, trained with the same settings).
    Unfinished work started with other settings stops the command, untouched."""
    decisions, conflicts = {}, []
    for stage, plan in plans.items():
        d = stage_dir(out, dataset, stage)
        rec = read_json(d / "stage.json")
        if rec is None:
            if (d / "final").exists():  # finished work whose settings are unknown: not ours to replace
                conflicts.append(f"{d} holds a finished {stage} stage without its record (stage.json)")
            decisions[stage] = "fresh"
            continue
        same = rec.get("plan") == plan
        committed = rec.get("committed")
        if (d / "final").is_dir() or not committed:
            if same:
                decisions[stage] = "staged" if (d / "final").is_dir() else "resume"
                continue
            old = rec.get("plan") or {}
            diffs = [f"{k} {old.get(k)!r} -> {plan.get(k)!r}" for k in sorted(set(old) | set(plan))
                     if old.get(k) != plan.get(k)]
            what = "finished but not yet moved into the folder" if (d / "final").is_dir() else "unfinished"
            conflicts.append(f"{d} holds an {what} {stage} run started with other settings ({'; '.join(diffs)})")
            continue
        in_out = all((out / f).is_file() and sha256(out / f) == h for f, h in committed.items())
        decisions[stage] = "done" if same and in_out else "fresh"
    if conflicts:
        raise ValueError("; ".join(conflicts) + ". Nothing was changed. To finish that run, run the command again "
                         f"with its settings; to start this one, use another {names['out_dir']} or move "
                         f"{out / RUNS_FOLDER} aside.")
    return decisions


# ---------------------------------------------------------------------------------------------
# Moving finished stages into OUT: the manifest never vouches for a file it does not match
# ---------------------------------------------------------------------------------------------


def commit(out: Path, dataset: str, stages: Sequence[str], report: dict[str, Any]) -> None:
    """Move the finished stages' files (and train_report.json) into OUT, manifest last."""
    write_json(out / RUNS_FOLDER / _JOURNAL, {"dataset": dataset, "stages": list(stages), "report": report})
    finish_commit(out)


def _move(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def finish_commit(out: Path) -> bool:
    """Complete the moves a COMMIT.json journal lists (again, if a kill interrupted them)."""
    journal = out / RUNS_FOLDER / _JOURNAL
    job = read_json(journal)
    if job is None:
        return False
    stages, dataset = job["stages"], job.get("dataset", "shapes")
    names = [f"{weights_name(dataset, s)}{ext}" for s in stages for ext in (".safetensors", ".json")]
    names.append("train_report.json")
    # 1. The manifest without the files about to be replaced: every entry it keeps matches its file.
    #    Entries of other files are kept as they were (a file changed since stays detectably changed).
    old = read_json(out / MANIFEST) if (out / MANIFEST).is_file() else None
    old = old if isinstance(old, dict) else {}
    kept = {p.name: old.get(p.name) or sha256(p) for p in sorted(out.iterdir())
            if p.is_file() and p.suffix in (".safetensors", ".json") and p.name != MANIFEST and p.name not in names}
    write_json(out / MANIFEST, kept)
    # 2. The moves (renames inside one file system), then the report.
    for stage in stages:
        final = stage_dir(out, dataset, stage) / "final"
        for ext in (".safetensors", ".json"):
            src = final / f"{weights_name(dataset, stage)}{ext}"
            if src.is_file():
                _move(src, out / src.name)
    write_json(out / "train_report.json", job["report"])
    # 3. The full manifest, last.
    full = {**kept, **{n: sha256(out / n) for n in names}}
    write_json(out / MANIFEST, dict(sorted(full.items())))
    # 4. The stage records say what is in OUT; the staging folders go.
    for stage in stages:
        d = stage_dir(out, dataset, stage)
        rec = read_json(d / "stage.json") or {}
        info = read_json(d / "final" / "info.json")
        if info is not None or not rec.get("committed"):
            rec["report"] = info if info is not None else rec.get("report")
            stem = weights_name(dataset, stage)
            rec["committed"] = {n: full[n] for n in (f"{stem}.safetensors", f"{stem}.json")}
            write_json(d / "stage.json", rec)
        shutil.rmtree(d / "final", ignore_errors=True)
    journal.unlink()
    return True


