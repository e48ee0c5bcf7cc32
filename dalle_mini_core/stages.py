"""Train every stage of the shapes unCLIP pipeline in order, and write shipped weights.

    dalle-mini train all --mode gpu --out data/weights      (one command, every stage)

The stages, each with train.py's one loop and its module's own recipe:

1. ``clip``      — a tiny CLIP on captioned shapes (clip.py);
2. ``prior``     — the diffusion prior on that CLIP's (text, image) embedding pairs (prior.py);
3. ``decoder``   — the CLIP-image-embedding-conditioned U-Net at 32×32 (decoder.py);
4. ``upsampler`` — the 32→64 diffusion upsampler (upsampler.py).

Scenes are rendered once into a bank (in parallel worker processes) and every stage samples
batches from it, so the GPU is not left waiting for the CPU to draw shapes. Each stage may
be given a wall-clock budget: a short calibration measures seconds per step, and the stage
then runs ``min(recipe steps, budget / seconds per step)`` steps — the number it ran is
recorded in the weights' JSON and in ``MANIFEST.json`` beside the command, the machine and
the time, so every shipped file says how it was made.

Stopping and resuming. A run can be killed at any moment (Ctrl-C, kill -9, a lost
session) and the same command started again:

* each stage trains in its own run directory, ``OUT/train_runs/<stage>/``, with train.py's
  checkpoints (about ten per stage); a rerun resumes the interrupted stage from its latest
  checkpoint and ends with the same weights, bit for bit, as a run that was never stopped;
* a finished stage is written whole to ``train_runs/<stage>/final/`` (a temporary folder,
  then a rename) and its checkpoints are dropped; a rerun skips it;
* nothing in OUT itself changes until every stage of the command has finished. Then the new
  files are moved in (first ``MANIFEST.json`` is rewritten without the files being replaced,
  and it is written in full last), so OUT never holds a half-new pipeline that its manifest
  vouches for: a kill during the moves leaves files the manifest does not list (loaders
  refuse them), and the rerun completes the moves;
* ``train_runs/<stage>/stage.json`` records the settings a stage was started with. A rerun
  with other settings does not touch unfinished work: it stops with a message naming the
  differences. A stage already trained into OUT with the same settings is skipped.

The run directories live inside OUT, so OUT may be given as a relative path, with a trailing
slash, through a symlink, or moved elsewhere: it is the same run.

Under ``torchrun`` only rank 0 prints and writes files; the other ranks train beside it.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .device import get_device, run_mode

__all__ = ["STAGES", "RUNS_FOLDER", "train_all", "fit_steps", "machine_description", "process_rank"]

STAGES = ("clip", "prior", "decoder", "upsampler")
RUNS_FOLDER = "train_runs"  # OUT/train_runs/<stage>/: a stage's run directory and its record
MAX_SEED = 2**32 - 1  # seeds are mixed into 64-bit generator seeds; larger ones would alias
_JOURNAL = "COMMIT.json"  # OUT/train_runs/COMMIT.json: the moves into OUT still to be done
_MANIFEST = "MANIFEST.json"


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
    opt = torch.optim.AdamW(probe.parameters(), lr=lr)

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


# ---------------------------------------------------------------------------------------------
# Small helpers: strict JSON written atomically, durations, the float16 the weights ship in
# ---------------------------------------------------------------------------------------------


def _write_json(path: Path, obj: Any) -> None:
    """Write strict JSON (no NaN) atomically: a temporary file, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); move it aside and run the command again") from None


def _sha256(path: Path) -> str:
    from .checkpoints import sha256_file

    return sha256_file(path)


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@torch.no_grad()
def _round_to_float16(model: torch.nn.Module) -> torch.nn.Module:
    """Round floating weights to float16 and back, in place: the values the shipped file holds.

    The later stages train on what this stage ships, so a run that reloads a finished stage
    from its file and a run that never stopped see the same numbers."""
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.copy_(t.to(torch.float16))
    return model


def _save(model: torch.nn.Module, config: Any, path: Path, extra: dict[str, Any]) -> Path:
    from .checkpoints import save_checkpoint

    # float16 halves the shipped files; the models are trained in bf16/fp32 and sampled in fp32
    return save_checkpoint(path, model.cpu(), config, extra=extra, dtype=torch.float16)


def _text_embeddings(clip: Any, tokens: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([clip.encode_text(tokens[i : i + batch_size]).float().cpu()
                          for i in range(0, tokens.shape[0], batch_size)])


class _Progress:
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
                f"{rate:.1f} images/s  ETA {_duration((self.total - done) * per_step)}")

    def loss(self) -> str:
        try:
            lines = self.metrics.read_text().splitlines() if self.metrics else []
            return f"{float(lines[-1].split(',')[1]):.4f}" if len(lines) > 1 else "–"
        except (OSError, ValueError, IndexError):
            return "–"


# ---------------------------------------------------------------------------------------------
# Arguments, plans and what a rerun finds in OUT/train_runs
# ---------------------------------------------------------------------------------------------

_NAMES = {"stages": "stages", "budgets": "budgets", "max_steps": "max_steps", "bank_size": "bank_size",
          "seed": "seed", "out_dir": "out_dir", "mode": "mode"}


def _check_arguments(mode: str, stages: Sequence[str], budgets: dict, caps: dict, bank_size: Any, seed: Any,
                     names: dict[str, str]) -> None:
    """Every argument checked before any work, with messages that name it as the caller knows it."""
    if mode not in ("smoke", "cpu", "gpu"):
        raise ValueError(f"{names['mode']} must be 'smoke', 'cpu' or 'gpu', got {mode!r}")
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"unknown stages {unknown}; choose from {STAGES}" if unknown else "no stage to train")
    for what, table in (("budgets", budgets), ("max_steps", caps)):
        other = sorted(set(table) - set(stages))
        if other:
            raise ValueError(f"{names[what]} names stages that are not being trained: {other} "
                             f"(training: {', '.join(s for s in STAGES if s in stages)})")
    for stage, b in budgets.items():
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not (math.isfinite(b) and b > 0):
            raise ValueError(f"{names['budgets']} must be a positive, finite number of seconds, got {b!r} for {stage}")
    for stage, n in caps.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{names['max_steps']} must be a whole number of steps, at least 1, got {n!r} for {stage}")
    if bank_size is not None and (isinstance(bank_size, bool) or not isinstance(bank_size, int) or bank_size < 1):
        default = {"smoke": 64, "cpu": 4000, "gpu": 200_000}[mode]
        raise ValueError(f"{names['bank_size']} must be a whole number of scenes, at least 1 (leave it out for "
                         f"the {mode} default, {default}), got {bank_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{names['seed']} must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    if budgets and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ValueError(f"{names['budgets']} is not available under torchrun (each process would fit its own step "
                         f"count); give {names['max_steps']} instead")


def _check_out(out: Path, name: str) -> None:
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


def _check_memory(todo: Sequence[str], n_bank: int, n_up: int, embed_dim: int, name: str) -> None:
    """Refuse a bank whose rendered scenes could not fit in this machine's memory."""
    per_scene = {"clip": 3 * 32 * 32 * 4 + 32 * 8,
                 "prior": 3 * 32 * 32 * 4 + 32 * 8 + 2 * embed_dim * 4,
                 "decoder": 3 * 32 * 32 * 4 + 32 * 8 + 2 * embed_dim * 4,
                 "upsampler": 3 * 64 * 64 * 4}
    todo = list(todo)
    if not todo:
        return
    worst = max(todo, key=lambda s: (n_up if s == "upsampler" else n_bank) * per_scene[s])
    n = n_up if worst == "upsampler" else n_bank
    need, total = n * per_scene[worst], _physical_memory()
    if total and need > 0.8 * total:
        raise ValueError(f"{name} {n}: the {worst} stage's rendered scenes would need about {need / 1e9:.1f} GB of "
                         f"memory, and this machine has {total / 1e9:.1f} GB; give a smaller {name}")


def _check_space(out: Path, models: dict[str, tuple[torch.nn.Module, bool]], name: str) -> None:
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


def _stage_dir(out: Path, stage: str) -> Path:
    return out / RUNS_FOLDER / stage


def _decide(out: Path, plans: dict[str, dict], names: dict[str, str]) -> dict[str, str]:
    """Per stage: "fresh", "resume" (an unfinished run with the same settings), "staged" (finished,
    not yet moved into OUT) or "done" (in OUT already, trained with the same settings).
    Unfinished work started with other settings stops the command, untouched."""
    decisions, conflicts = {}, []
    for stage, plan in plans.items():
        d = _stage_dir(out, stage)
        rec = _read_json(d / "stage.json")
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
        in_out = all((out / f).is_file() and _sha256(out / f) == h for f, h in committed.items())
        decisions[stage] = "done" if same and in_out else "fresh"
    if conflicts:
        raise ValueError("; ".join(conflicts) + ". Nothing was changed. To finish that run, run the command again "
                         f"with its settings; to start this one, use another {names['out_dir']} or move "
                         f"{out / RUNS_FOLDER} aside.")
    return decisions


# ---------------------------------------------------------------------------------------------
# Moving finished stages into OUT: the manifest never vouches for a file it does not match
# ---------------------------------------------------------------------------------------------


def _commit(out: Path, stages: Sequence[str], report: dict[str, Any]) -> None:
    """Move the finished stages' files (and train_report.json) into OUT, manifest last."""
    _write_json(out / RUNS_FOLDER / _JOURNAL, {"stages": list(stages), "report": report})
    _finish_commit(out)


def _move(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _finish_commit(out: Path) -> bool:
    """Complete the moves a COMMIT.json journal lists (again, if a kill interrupted them)."""
    journal = out / RUNS_FOLDER / _JOURNAL
    job = _read_json(journal)
    if job is None:
        return False
    stages = job["stages"]
    names = [f"shapes_{s}{ext}" for s in stages for ext in (".safetensors", ".json")] + ["train_report.json"]
    # 1. The manifest without the files about to be replaced: every entry it keeps matches its file.
    #    Entries of other files are kept as they were (a file changed since stays detectably changed).
    old = _read_json(out / _MANIFEST) if (out / _MANIFEST).is_file() else None
    old = old if isinstance(old, dict) else {}
    kept = {p.name: old.get(p.name) or _sha256(p) for p in sorted(out.iterdir())
            if p.is_file() and p.suffix in (".safetensors", ".json") and p.name != _MANIFEST and p.name not in names}
    _write_json(out / _MANIFEST, kept)
    # 2. The moves (renames inside one file system), then the report.
    for stage in stages:
        final = _stage_dir(out, stage) / "final"
        for ext in (".safetensors", ".json"):
            src = final / f"shapes_{stage}{ext}"
            if src.is_file():
                _move(src, out / src.name)
    _write_json(out / "train_report.json", job["report"])
    # 3. The full manifest, last.
    full = {**kept, **{n: _sha256(out / n) for n in names}}
    _write_json(out / _MANIFEST, dict(sorted(full.items())))
    # 4. The stage records say what is in OUT; the staging folders go.
    for stage in stages:
        d = _stage_dir(out, stage)
        rec = _read_json(d / "stage.json") or {}
        info = _read_json(d / "final" / "info.json")
        if info is not None or not rec.get("committed"):
            rec["report"] = info if info is not None else rec.get("report")
            rec["committed"] = {n: full[n] for n in (f"shapes_{stage}.safetensors", f"shapes_{stage}.json")}
            _write_json(d / "stage.json", rec)
        shutil.rmtree(d / "final", ignore_errors=True)
    journal.unlink()
    return True


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def _load_out_clip(out: Path, dev: torch.device, names: dict[str, str]) -> tuple[torch.nn.Module, dict[str, str]]:
    """The CLIP in OUT (for a command that trains the prior or the decoder but not the CLIP)."""
    from . import clip as clip_mod
    from .checkpoints import load_checkpoint, verify_manifest

    st, js = out / "shapes_clip.safetensors", out / "shapes_clip.json"
    retrain = f"train it again with `dalle-mini train clip --out {out}`"
    if not (st.is_file() and js.is_file()):
        raise ValueError(f"{names['out_dir']} {out} has no trained CLIP (shapes_clip.safetensors and .json), which "
                         f"the prior and the decoder are trained on; train it first with `dalle-mini train clip "
                         f"--out {out}`, or every stage with `dalle-mini train all`")
    if (out / _MANIFEST).is_file():
        try:
            verify_manifest(out / _MANIFEST, files=[st.name, js.name])
        except (FileNotFoundError, ValueError):
            raise ValueError(f"{st} does not match {out / _MANIFEST} (not listed, or changed since it was written); "
                             f"{retrain}") from None
    try:
        clip = load_checkpoint(out / "shapes_clip", clip_mod.CLIPModel, config_cls=clip_mod.CLIPConfig, device=dev)
    except Exception as exc:  # a damaged file: SafetensorError, a JSON error, a mismatch... one clear line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{st} cannot be loaded ({type(exc).__name__}: {reason}); {retrain}") from None
    return clip.float().eval(), {"sha256": _sha256(st)}


def train_all(
    *,
    mode: str | None = None,
    out_dir: str | Path,
    stages: Sequence[str] = STAGES,
    budgets: dict[str, float] | None = None,
    max_steps: dict[str, int] | None = None,
    bank_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    progress_every: float = 10.0,
    option_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train `stages` of the shapes pipeline into `out_dir` as ``shapes_<stage>.safetensors/.json``.

    `budgets` maps a stage to a wall-clock budget in seconds (see module docstring);
    `max_steps` overrides a stage's recipe step count (the cap a budget fits under); a stage
    that needs the CLIP loads ``shapes_clip`` from `out_dir` when the clip stage is not run.
    `bank_size` is the number of scenes rendered once (default by mode), `seed` fixes every draw.
    Every argument, the folder, the disk space and the memory are checked before any work.

    Resumable (module docstring): run the same call again after an interruption and it skips
    finished stages and resumes the interrupted one from its checkpoint, with the same final
    weights. `progress` prints a line per stage step every `progress_every` seconds through
    `log`; under torchrun only rank 0 logs and writes. `option_names` names the arguments in
    error messages as the caller knows them (the CLI passes its options).

    Returns a report (per stage: steps, seconds, final loss, img/s) also written to
    ``out_dir/train_report.json``; ``MANIFEST.json`` (sha256 of every file) is rewritten.
    """
    from . import clip as clip_mod
    from . import decoder as dec_mod
    from . import prior as prior_mod
    from . import upsampler as up_mod
    from .evaluation.clip import evaluate_retrieval
    from .checkpoints import load_checkpoint
    from .data.tokens import DEFAULT_CONTEXT_LENGTH
    from .train import TrainConfig, latest_checkpoint, train
    from .unet import UNetConfig

    # 1. Arguments, before anything else.
    names = {**_NAMES, **(option_names or {})}
    mode = mode or run_mode()
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    budgets = dict(budgets or {})
    caps = dict(max_steps or {})
    _check_arguments(mode, stages, budgets, caps, bank_size, seed, names)
    order = [s for s in STAGES if s in stages]
    main = process_rank() == 0
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if not main:  # under torchrun: only rank 0 prints and writes
        log, progress = (lambda line: None), False
    out = Path(out_dir)
    dev = get_device()
    workers = min(16, os.cpu_count() or 1) if mode == "gpu" else 0

    # 2. The folder: writable; moves an interrupted run left half done are completed first.
    if main:
        _check_out(out, names["out_dir"])
        if _finish_commit(out):
            log(f"completed the moves into {out} that an interrupted run had started")

    # 3. What each stage is: its settings (the plan), and what an earlier run left of it.
    clip_recipe, clip_cfg = clip_mod.RECIPES["shapes"][mode], clip_mod.clip_config("shapes")
    dec_recipe = dec_mod.RECIPES[mode]
    up_recipe = replace(up_mod.RECIPES[mode], **UPSAMPLER_OVERRIDES.get(mode, {}))
    prior_recipe = PRIOR_RECIPES[mode]
    n_bank = bank_size if bank_size is not None else {"smoke": 64, "cpu": 4000, "gpu": 200_000}[mode]
    n_up = bank_size if bank_size is not None else up_recipe.num_images
    recipe_steps = {"clip": clip_recipe.steps, "prior": prior_recipe["steps"], "decoder": dec_recipe.steps,
                    "upsampler": up_recipe.steps}
    plans = {s: {"stage": s, "mode": mode, "seed": seed, "bank": n_up if s == "upsampler" else n_bank,
                 "steps_cap": caps.get(s, recipe_steps[s]), "budget": budgets.get(s)} for s in order}
    clip = None
    if "clip" in plans:
        clip_source: dict[str, Any] = {"trained_with": dict(plans["clip"])}
    elif {"prior", "decoder"} & set(order):
        clip, clip_source = _load_out_clip(out, dev, names)
    for s in ("prior", "decoder"):
        if s in plans:
            plans[s]["clip"] = clip_source
    decisions = _decide(out, plans, names)
    todo = [s for s in order if decisions[s] in ("fresh", "resume")]
    embed_dim = clip.embed_dim if clip is not None else clip_cfg.embed_dim

    # 4. The models to train (seeded, as each stage always built them), then memory and disk.
    models: dict[str, tuple[torch.nn.Module, Any]] = {}
    for s in todo:
        torch.manual_seed(seed)
        if s == "clip":
            models[s] = clip_mod.CLIPModel(clip_cfg), clip_cfg
        elif s == "prior":
            r = prior_recipe
            cfg = prior_mod.PriorConfig(embed_dim=embed_dim, width=r["width"], depth=r["depth"], heads=r["heads"],
                                        context_length=DEFAULT_CONTEXT_LENGTH, use_tokens=r["use_tokens"])
            models[s] = prior_mod.DiffusionPrior(cfg), cfg
        elif s == "decoder":
            models[s] = _decoder_model(dec_mod, dec_recipe, embed_dim, seed)
        else:
            unet = UNetConfig(image_size=64, base_channels=up_recipe.base_channels, channel_mult=up_recipe.channel_mult,
                              num_res_blocks=up_recipe.num_res_blocks, attention_resolutions=(),
                              num_groups=min(32, up_recipe.base_channels))
            cfg = up_mod.UpsamplerConfig(unet=unet, low_res_size=32)  # default corruption: blur half the conditionings
            models[s] = up_mod.Upsampler(cfg), cfg
    _check_memory(todo, n_bank, n_up, embed_dim, names["bank_size"])
    if main:
        _check_space(out, {s: (m, s != "clip") for s, (m, _) in models.items()}, names["out_dir"])

    report: dict[str, Any] = {"mode": mode, "machine": machine_description(), "device": str(dev),
                              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "stages": {}}
    t_all = time.perf_counter()
    if not todo and all(decisions[s] == "done" for s in order):
        log(f"every stage asked for is already in {out}, trained with these settings: nothing to do")

    def skip(stage: str) -> dict[str, Any]:
        """A stage finished by an earlier run: its report entry, and a line saying so."""
        d = _stage_dir(out, stage)
        if decisions[stage] == "staged":
            log(f"[{stage}] finished by an earlier run (in {d / 'final'}): skipped")
            return _read_json(d / "final" / "info.json") or {}
        log(f"[{stage}] already in {out}, trained with these settings: skipped")
        return (_read_json(d / "stage.json") or {}).get("report") or {}

    def load_finished(stage: str, build: Any, config_cls: type) -> torch.nn.Module:
        d = _stage_dir(out, stage)
        path = d / "final" / f"shapes_{stage}" if decisions[stage] == "staged" else out / f"shapes_{stage}"
        return load_checkpoint(path, build, config_cls=config_cls, device=dev).float().eval()

    def run(stage: str, batch_fn: Callable[[int], dict], *, lr: float, warmup: int, ema_decay: float | None,
            extra: dict[str, Any], **tc_kwargs: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train one stage in its run directory (resuming it), with train.py; return the trained
        (EMA) model, rounded to the float16 it ships in, and its report entry."""
        model, _ = models[stage]
        d, plan, budget = _stage_dir(out, stage), plans[stage], budgets.get(stage)
        if decisions[stage] == "fresh":
            old = _read_json(d / "stage.json") if d.is_dir() else None
            if main and old is not None and old.get("committed"):
                shutil.rmtree(d)  # the record of a finished run whose weights this one replaces
            # the cosine schedule is laid out over the fitted steps so that the learning rate has
            # decayed when the budget is spent; max_seconds (a quarter over the budget) only guards
            # against a machine that slows down after the calibration
            steps, per = fit_steps(model, batch_fn, max_steps=plan["steps_cap"], budget_s=budget, lr=lr)
            record = {"plan": plan, "steps": steps, "ms_per_step": round(per * 1e3, 3) if budget else None,
                      "committed": None, "report": None}
            if main:
                d.mkdir(parents=True, exist_ok=True)
                _write_json(d / "stage.json", record)
        else:  # resume with the step count the first attempt fitted
            record = _read_json(d / "stage.json")
            steps = record["steps"]
        if budget is not None:
            log(f"[{stage}] budget {budget:g} s: {steps} steps fit ({record['ms_per_step']:.1f} ms per step measured; "
                f"cap {plan['steps_cap']})")
        run_dir = d / "run"
        ckpt = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        if ckpt is not None:
            log(f"[{stage}] resuming at step {int(ckpt.name[5:])} of {steps} from {ckpt}")
        else:
            log(f"[{stage}] training {steps} steps (checkpoints in {run_dir})")
        tc = TrainConfig(steps=steps, lr=lr, warmup_steps=min(warmup, max(1, steps // 5)), schedule="cosine",
                         grad_clip=1.0, ema_decay=ema_decay, ema_warmup=ema_decay is not None,
                         log_every=max(1, min(50, steps // 100)), ckpt_every=max(1, math.ceil(steps / 10)),
                         keep_checkpoints=2, out_dir=str(run_dir) if (main or world > 1) else None, seed=seed,
                         progress=False, max_seconds=None if budget is None else 1.25 * budget, **tc_kwargs)
        meter = _Progress(stage, steps, run_dir / "metrics.csv" if main else None, log,
                          progress_every if progress else math.inf)
        result = train(model, meter.wrap(batch_fn), tc)
        trained = _round_to_float16((result.ema if result.ema is not None else result.model).eval())
        last = result.metrics[-1] if result.metrics else {}
        info = {"steps": result.step, "steps_planned": steps,
                "seconds": round(float(last.get("time_s", result.train_time_s)), 1),
                "final_loss": last.get("loss"), "img_per_s": round(last["img_per_s"], 1) if last else None,
                "ms_per_step_calibration": record["ms_per_step"], "resumed_from": result.resumed_from, **extra}
        loss = f"{info['final_loss']:.4f}" if info["final_loss"] is not None else "–"
        log(f"[{stage}] done: {result.step} steps in {_duration(info['seconds'])}, final loss {loss}, "
            f"{info['img_per_s'] or 0:.1f} images/s")
        return trained, info

    def stage_final(stage: str, model: torch.nn.Module, info: dict[str, Any]) -> None:
        """Write a finished stage whole (temporary folder, then a rename); drop its checkpoints."""
        report["stages"][stage] = info
        if not main:
            return
        d = _stage_dir(out, stage)
        tmp = d / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        header = {"stage": stage, "mode": mode, "machine": report["machine"], "seed": seed, "plan": plans[stage], **info}
        _save(model, models[stage][1], tmp / f"shapes_{stage}", header)
        model.to(dev)
        _write_json(tmp / "info.json", info)
        os.replace(tmp, d / "final")
        shutil.rmtree(d / "run" / "checkpoints", ignore_errors=True)  # the stage is finished: its weights are in final/

    # 5. CLIP ------------------------------------------------------------------------------
    if "clip" in order:
        if decisions["clip"] in ("staged", "done"):
            report["stages"]["clip"] = skip("clip")
            clip = load_finished("clip", clip_mod.CLIPModel, clip_mod.CLIPConfig)
        else:
            log(f"[clip] rendering a bank of {n_bank} scenes ({workers} workers)")
            bank = _render_bank(n_bank, image_size=clip_cfg.image_size, seed=seed, workers=workers)
            clip, info = run("clip", _clip_batches(bank, clip_recipe.batch_size, seed=seed), lr=clip_recipe.lr,
                             warmup=clip_recipe.warmup_steps, ema_decay=None, extra={"bank": n_bank},
                             weight_decay=clip_recipe.weight_decay, betas=(0.9, 0.98), adam_eps=1e-6)
            del bank
            if main:
                ev = evaluate_retrieval(clip, _shapes_test(), gallery_size=100,
                                        num_galleries=5 if mode != "smoke" else 1, seed=seed)
                info["retrieval_test"] = ev
                log(f"[clip] test retrieval among 100 scenes: text→image top-1 {ev['text_to_image_top1']:.1%}, "
                    f"top-5 {ev['text_to_image_top5']:.1%}; image→text top-1 {ev['image_to_text_top1']:.1%}")
            stage_final("clip", clip, info)

    # 6. Embedding bank shared by the prior and the decoder (only when one of them trains) ------
    emb_bank = None
    if {"prior", "decoder"} & set(todo):
        t0 = time.perf_counter()
        emb_bank = dec_mod.embed_shapes(clip.to(dev), n_bank, seed=seed, num_workers=workers,
                                        batch_size=1024 if mode == "gpu" else 256)
        emb_bank["text_emb"] = _text_embeddings(clip, emb_bank["tokens"])
        log(f"[bank] {n_bank} scenes embedded in {time.perf_counter() - t0:.1f} s")

    # 7. Prior ------------------------------------------------------------------------------
    if "prior" in order:
        if decisions["prior"] in ("staged", "done"):
            report["stages"]["prior"] = skip("prior")
        else:
            r = prior_recipe
            trained, info = run("prior", _rows(emb_bank, ("text_emb", "image_emb", "tokens"), r["batch_size"], seed),
                                lr=r["lr"], warmup=200, ema_decay=0.999, extra={}, weight_decay=0.01)
            stage_final("prior", trained, info)

    # 8. Decoder ----------------------------------------------------------------------------
    if "decoder" in order:
        if decisions["decoder"] in ("staged", "done"):
            report["stages"]["decoder"] = skip("decoder")
        else:
            if dev.type == "cuda":
                models["decoder"] = models["decoder"][0].to(memory_format=torch.channels_last), models["decoder"][1]
            trained, info = run("decoder", dec_mod.embedding_batches(emb_bank, dec_recipe.batch_size, seed=seed),
                                lr=dec_recipe.lr, warmup=dec_recipe.warmup_steps, ema_decay=dec_recipe.ema_decay,
                                extra={"bank": n_bank})
            stage_final("decoder", trained, info)
    del emb_bank

    # 9. Upsampler --------------------------------------------------------------------------
    if "upsampler" in order:
        if decisions["upsampler"] in ("staged", "done"):
            report["stages"]["upsampler"] = skip("upsampler")
        else:
            images = up_mod.render_bank("shapes", n_up, image_size=64, seed=seed, num_workers=workers)
            if dev.type == "cuda":
                models["upsampler"] = models["upsampler"][0].to(memory_format=torch.channels_last), models["upsampler"][1]
            trained, info = run("upsampler", up_mod.image_batches(images, up_recipe.batch_size, seed=seed),
                                lr=up_recipe.lr, warmup=up_recipe.warmup_steps, ema_decay=up_recipe.ema_decay,
                                extra={"bank": n_up})
            del images
            stage_final("upsampler", trained, info)

    # 10. Every stage finished: move them into OUT together, the manifest last.
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    to_move = [s for s in order if decisions[s] != "done"]
    if main and to_move:
        _commit(out, to_move, report)
        log(f"moved {', '.join('shapes_' + s for s in to_move)} into {out} (MANIFEST.json rewritten last)")
    return report


# Shipped weights must stay under 40 MB together (float16): the gpu upsampler is narrowed to
# 32 base channels (shapes are flat colours; 64×64 detail is edges, not texture).
UPSAMPLER_OVERRIDES: dict[str, dict[str, Any]] = {"gpu": {"base_channels": 32}}

# Prior recipes by run mode (sizes for a 64-d shapes CLIP).
PRIOR_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {"width": 32, "depth": 1, "heads": 2, "steps": 3, "batch_size": 16, "lr": 3e-4, "use_tokens": False},
    "cpu": {"width": 128, "depth": 4, "heads": 4, "steps": 4000, "batch_size": 256, "lr": 3e-4, "use_tokens": False},
    # gpu: no caption tokens either: their 49,408 × 256 embedding table alone would be 25 MB in
    # float16 and break the shipped pipeline's 40 MB budget (the captions reach the prior as z_t)
    "gpu": {"width": 256, "depth": 6, "heads": 8, "steps": 20000, "batch_size": 1024, "lr": 3e-4, "use_tokens": False},
}


def _render_bank(n: int, *, image_size: int, seed: int, workers: int) -> dict[str, Any]:
    """Render `n` train scenes (1–2 objects) once: images (N,3,S,S), captions, tokens."""
    from .data.shapes import ShapesDataset
    from .data.tokens import tokenize

    ds = ShapesDataset("train", length=n, image_size=image_size, seed=seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=512, num_workers=workers,
                                         collate_fn=lambda items: (torch.stack([x for x, _ in items]),
                                                                   [c for _, c in items]))
    images, captions = [], []
    for x, caps in loader:
        images.append(x)
        captions += caps
    return {"image": torch.cat(images), "caption": captions, "tokens": tokenize(captions)}


def _rows(bank: dict[str, Any], keys: tuple[str, ...], batch_size: int, seed: int) -> Callable[[int], dict]:
    """``batch_fn(step)``: `batch_size` rows of `bank` drawn with replacement, seeded by (seed, step)."""
    n = bank[keys[0]].shape[0]

    def batch_fn(step: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, n, (batch_size,), generator=g)
        return {k: bank[k][idx] for k in keys}

    return batch_fn


def _clip_batches(bank: dict[str, Any], batch_size: int, seed: int) -> Callable[[int], dict]:
    """CLIP batches from the bank: distinct rows per step (a contrastive batch needs negatives)."""
    n = bank["image"].shape[0]

    def batch_fn(step: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randperm(n, generator=g)[:batch_size]
        return {"image": bank["image"][idx], "tokens": bank["tokens"][idx]}

    return batch_fn


def _shapes_test():
    from .data.shapes import ShapesDataset

    return ShapesDataset("test", length=1000 if run_mode() != "smoke" else 100, image_size=32, seed=0)


def _decoder_model(dec_mod, recipe, embed_dim, seed):
    from .unet import UNetConfig

    torch.manual_seed(seed)
    unet = UNetConfig(image_size=32, base_channels=recipe.base_channels, channel_mult=(1, 2, 2),
                      num_res_blocks=recipe.num_res_blocks, attention_resolutions=recipe.attention_resolutions,
                      num_heads=4, num_groups=min(32, recipe.base_channels))
    config = dec_mod.DecoderConfig(unet=unet, embed_dim=embed_dim, spatial="attention",
                                   use_text=False, context_width=2 * recipe.base_channels)
    return dec_mod.Decoder(config), config
