"""Train every stage of a dataset's unCLIP pipeline in order, and write shipped weights.

    dalle-mini train all --dataset shapes --mode gpu --out data/weights   (one command, every stage)

A thin loop over the stages; each is trained by its recipe module's `train` (dalle_mini_core/
recipes/), the same function the notebooks call, with recipe ``RECIPES[dataset][mode]``:

1. ``clip``      — a tiny CLIP on the dataset's captioned images (recipes/clip.py);
2. ``prior``     — the diffusion prior on that CLIP's (text, image) embedding pairs (recipes/prior.py);
3. ``decoder``   — the CLIP-image-embedding-conditioned U-Net at 32×32 (recipes/decoder.py);
4. ``upsampler`` — the 32→64 diffusion upsampler (recipes/upsampler.py).

The files are ``<dataset>_<stage>.safetensors`` and ``.json``. Scenes are rendered once into a
bank (banks.py, in parallel worker processes on a GPU machine) and every stage samples batches
from it, so the GPU is not left waiting for the CPU to draw shapes. Each stage may
be given a wall-clock budget: a short calibration measures seconds per step, and the stage
then runs ``min(recipe steps, budget / seconds per step)`` steps — the number it ran is
recorded in the weights' JSON and in ``MANIFEST.json`` beside the command, the machine and
the time, so every shipped file says how it was made.

Stopping and resuming. A run can be killed at any moment (Ctrl-C, kill -9, a lost
session) and the same command started again:

* each stage trains in its own run directory, ``OUT/train_runs/<dataset>/<stage>/``, with train.py's
  checkpoints (about ten per stage); a rerun resumes the interrupted stage from its latest
  checkpoint and ends with the same weights, bit for bit, as a run that was never stopped;
* a finished stage is written whole to ``train_runs/<dataset>/<stage>/final/`` (a temporary folder,
  then a rename) and its checkpoints are dropped; a rerun skips it;
* nothing in OUT itself changes until every stage of the command has finished. Then the new
  files are moved in (first ``MANIFEST.json`` is rewritten without the files being replaced,
  and it is written in full last), so OUT never holds a half-new pipeline that its manifest
  vouches for: a kill during the moves leaves files the manifest does not list (loaders
  refuse them), and the rerun completes the moves;
* ``train_runs/<dataset>/<stage>/stage.json`` records the settings a stage was started with. A rerun
  with other settings does not touch unfinished work: it stops with a message naming the
  differences. A stage already trained into OUT with the same settings is skipped.

The run directories live inside OUT, so OUT may be given as a relative path, with a trailing
slash, through a symlink, or moved elsewhere: it is the same run.

Under ``torchrun`` only rank 0 prints and writes files; the other ranks train beside it. The
run-directory machinery (plans, resume decisions, the moves into OUT) is in runs.py.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .device import get_device, run_mode
from .options import DATASETS, RUN_MODES, STAGES, check_choice
from .runs import (MANIFEST, MAX_SEED, Progress, bf16_peak_tflops, check_memory, check_out, check_space, commit,
                   decide, duration, finish_commit, fit_steps, machine_description, process_rank, read_json,
                   round_to_float16, save_weights, sha256, speed, stage_dir, train_flops_per_item, weights_name,
                   write_json)

__all__ = ["STAGES", "train_all"]

_NAMES = {"stages": "stages", "budgets": "budgets", "max_steps": "max_steps", "bank_size": "bank_size",
          "seed": "seed", "out_dir": "out_dir", "mode": "mode", "dataset": "dataset"}


def _check_arguments(mode: str, dataset: str, stages: Sequence[str], budgets: dict, caps: dict, bank_size: Any,
                     seed: Any, names: dict[str, str]) -> None:
    """Every argument checked before any work, with messages that name it as the caller knows it."""
    check_choice(names["mode"], mode, RUN_MODES)
    check_choice(names["dataset"], dataset, DATASETS)
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
        raise ValueError(f"{names['bank_size']} must be a whole number of scenes, at least 1 (leave it out for "
                         f"each stage's {mode} recipe), got {bank_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{names['seed']} must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    if budgets and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ValueError(f"{names['budgets']} is not available under torchrun (each process would fit its own step "
                         f"count); give {names['max_steps']} instead")


def _load_out_clip(out: Path, dataset: str, dev: torch.device, names: dict[str, str]) -> tuple[torch.nn.Module, dict]:
    """The CLIP in OUT (for a command that trains the prior or the decoder but not the CLIP)."""
    from .checkpoints import load_checkpoint, verify_manifest
    from .clip import CLIPConfig, CLIPModel

    stem = weights_name(dataset, "clip")
    st, js = out / f"{stem}.safetensors", out / f"{stem}.json"
    again = f"dalle-mini train clip{'' if dataset == 'shapes' else ' --dataset ' + dataset} --out {out}"
    if not (st.is_file() and js.is_file()):
        raise ValueError(f"{names['out_dir']} {out} has no trained CLIP ({st.name} and .json), which the prior and the "
                         f"decoder are trained on; train it first with `{again}`, or every stage with "
                         f"`dalle-mini train all`")
    if (out / MANIFEST).is_file():
        try:
            verify_manifest(out / MANIFEST, files=[st.name, js.name])
        except (FileNotFoundError, ValueError):
            raise ValueError(f"{st} does not match {out / MANIFEST} (not listed, or changed since it was written); "
                             f"train it again with `{again}`") from None
    try:
        clip = load_checkpoint(out / stem, CLIPModel, config_cls=CLIPConfig, device=dev)
    except Exception as exc:  # a damaged file: SafetensorError, a JSON error, a mismatch... one clear line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{st} cannot be loaded ({type(exc).__name__}: {reason}); train it again with `{again}`"
                         ) from None
    return clip.float().eval(), {"sha256": sha256(st)}


def _clip_retrieval(clip: torch.nn.Module, dataset: str, mode: str, seed: int) -> dict[str, Any] | None:
    """The trained shapes CLIP's test retrieval among 100 scenes (None for other datasets)."""
    if dataset != "shapes":
        return None
    from .evaluation.clip import evaluate_retrieval
    from .data.shapes import ShapesDataset

    test = ShapesDataset("test", length=1000 if mode != "smoke" else 100, image_size=clip.image_size, seed=0)
    return evaluate_retrieval(clip, test, gallery_size=100, num_galleries=5 if mode != "smoke" else 1, seed=seed)


def _shown(path: Path | str) -> str:
    """`path` as the log shows it: relative to the current folder when inside it (``runs/emoji/...``), so a
    saved notebook or a pasted log does not carry the absolute paths of the machine that ran it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def train_all(
    *,
    mode: str | None = None,
    out_dir: str | Path,
    dataset: str = "shapes",
    stages: Sequence[str] = STAGES,
    budgets: dict[str, float] | None = None,
    max_steps: dict[str, int] | None = None,
    bank_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    progress_every: float = 10.0,
    option_names: dict[str, str] | None = None,
    measure_speed: bool | None = None,
) -> dict[str, Any]:
    """Train `stages` of `dataset`'s pipeline into `out_dir` as ``<dataset>_<stage>.safetensors/.json``.

    Each stage is trained by its recipe module's `train` (`recipes.STAGE_RECIPES`, recipe
    ``RECIPES[dataset][mode]``), the function the notebooks call. `budgets` maps a stage to a
    wall-clock budget in seconds (module docstring); `max_steps` overrides a stage's recipe step
    count (the cap a budget fits under); a stage that needs the CLIP loads ``<dataset>_clip`` from
    `out_dir` when the clip stage is not run. `bank_size` replaces every stage's recipe bank size,
    `seed` fixes every draw. Every argument, the folder, the disk space and the memory are checked
    before any work.

    Resumable (module docstring): run the same call again after an interruption and it skips
    finished stages and resumes the interrupted one from its checkpoint, with the same final
    weights. `progress` prints a line per stage step every `progress_every` seconds through
    `log`; under torchrun only rank 0 logs and writes. `option_names` names the arguments in
    error messages as the caller knows them (the CLI passes its options). `measure_speed` (None: on
    CUDA) measures the device's bf16 matmul peak once and adds to each stage's report its training
    FLOPs per image, TFLOP/s and fraction of that peak (it trains nothing differently). On CUDA the
    banks are moved to the GPU once (`banks.on_device`); ``DALLE_MINI_COMPILE=1`` compiles each
    stage's loss with ``torch.compile`` (CUDA only).

    Returns a report (per stage: steps, seconds, final loss, img/s) also written to
    ``out_dir/train_report.json``; ``MANIFEST.json`` (sha256 of every file) is rewritten.
    """
    from .banks import make, on_device
    from .checkpoints import load_checkpoint
    from .clip import CLIPConfig, CLIPModel
    from .recipes import STAGE_RECIPES

    # 1. Arguments, before anything else.
    names = {**_NAMES, **(option_names or {})}
    mode = mode or run_mode()
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    budgets, caps = dict(budgets or {}), dict(max_steps or {})
    _check_arguments(mode, dataset, stages, budgets, caps, bank_size, seed, names)
    order = [s for s in STAGES if s in stages]
    main = process_rank() == 0
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if not main:  # under torchrun: only rank 0 prints and writes
        log, progress = (lambda line: None), False
    out = Path(out_dir)
    dev = get_device()

    # 2. The folder: writable; moves an interrupted run left half done are completed first.
    if main:
        check_out(out, names["out_dir"])
        if finish_commit(out):
            log(f"completed the moves into {out} that an interrupted run had started")

    # 3. What each stage is: its recipe, its bank, its settings (the plan), what an earlier run left of it.
    modules = {s: STAGE_RECIPES[s] for s in order}
    recipes = {s: modules[s].RECIPES[dataset][mode] for s in order}
    specs = {s: modules[s].bank_spec(recipes[s], dataset, bank_size) for s in order}
    plans = {s: {"stage": s, "dataset": dataset, "mode": mode, "seed": seed, "bank": specs[s].n,
                 "steps_cap": caps.get(s, recipes[s].steps), "budget": budgets.get(s)} for s in order}
    clip = None
    needs_clip = [s for s in order if modules[s].NEEDS_CLIP]
    if "clip" in plans:
        clip_source: dict[str, Any] = {"trained_with": dict(plans["clip"])}
    elif needs_clip:
        clip, clip_source = _load_out_clip(out, dataset, dev, names)
    for s in needs_clip:
        plans[s]["clip"] = clip_source
    decisions = decide(out, dataset, plans, names)
    todo = [s for s in order if decisions[s] in ("fresh", "resume")]
    clip_recipe = STAGE_RECIPES["clip"].RECIPES[dataset][mode]
    embed_dim = clip.embed_dim if clip is not None else STAGE_RECIPES["clip"].build_config(clip_recipe, dataset).embed_dim

    # 4. The models to train (seeded, as `recipes.<stage>.train` builds them), then memory and disk.
    models = {s: modules[s].build(recipes[s], dataset, seed=seed, embed_dim=embed_dim) for s in todo}
    check_memory({s: (specs[s].n, specs[s].image_size, embed_dim if specs[s].embedded else 0) for s in todo},
                 names["bank_size"])
    if main:
        check_space(out, {s: (m, recipes[s].ema_decay is not None) for s, m in models.items()}, names["out_dir"])

    report: dict[str, Any] = {"dataset": dataset, "mode": mode, "machine": machine_description(), "device": str(dev),
                              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "stages": {}}
    measure_speed = dev.type == "cuda" if measure_speed is None else bool(measure_speed)
    peak = None
    if measure_speed and todo and main:
        peak = bf16_peak_tflops(dev)  # once per run
        report["bf16_peak_tflop_per_s"] = round(peak, 1)
        log(f"measured bf16 matmul peak of {dev}: {peak:.1f} TFLOP/s")
    t_all = time.perf_counter()
    if not todo and all(decisions[s] == "done" for s in order):
        log(f"every stage asked for is already in {_shown(out)}, trained with these settings: nothing to do")

    def skip(stage: str) -> dict[str, Any]:
        """A stage finished by an earlier run: its report entry, and a line saying so."""
        d = stage_dir(out, dataset, stage)
        if decisions[stage] == "staged":
            log(f"[{stage}] finished by an earlier run (in {d / 'final'}): skipped")
            return read_json(d / "final" / "info.json") or {}
        log(f"[{stage}] already in {_shown(out)}, trained with these settings: skipped")
        return (read_json(d / "stage.json") or {}).get("report") or {}

    def run(stage: str, bank: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train one stage in its run directory (resuming it) with its recipe's `train`; return the
        trained (EMA) model, rounded to the float16 it ships in, and its report entry."""
        mod, recipe, model = modules[stage], recipes[stage], models[stage]
        d, plan, budget = stage_dir(out, dataset, stage), plans[stage], budgets.get(stage)
        if decisions[stage] == "fresh":
            old = read_json(d / "stage.json") if d.is_dir() else None
            if main and old is not None and old.get("committed"):
                shutil.rmtree(d)  # the record of a finished run whose weights this one replaces
            # the cosine schedule is laid out over the fitted steps so that the learning rate has
            # decayed when the budget is spent; max_seconds (a quarter over the budget) only guards
            # against a machine that slows down after the calibration
            steps, per = fit_steps(model, mod.batches(recipe, bank, dataset, seed=seed), max_steps=plan["steps_cap"],
                                   budget_s=budget, lr=recipe.lr)
            record = {"plan": plan, "steps": steps, "ms_per_step": round(per * 1e3, 3) if budget else None,
                      "committed": None, "report": None}
            if main:
                d.mkdir(parents=True, exist_ok=True)
                write_json(d / "stage.json", record)
        else:  # resume with the step count the first attempt fitted
            record = read_json(d / "stage.json")
            steps = record["steps"]
        if budget is not None:
            log(f"[{stage}] budget {budget:g} s: {steps} steps fit ({record['ms_per_step']:.1f} ms per step measured; "
                f"cap {plan['steps_cap']})")
        run_dir = d / "run"
        from .train import latest_checkpoint

        ckpt = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        if ckpt is not None:
            log(f"[{stage}] resuming at step {int(ckpt.name[5:])} of {steps} from {_shown(ckpt)}")
        else:
            log(f"[{stage}] training {steps} steps (checkpoints in {_shown(run_dir)})")
        meter = Progress(stage, steps, run_dir / "metrics.csv" if main else None, log,
                         progress_every if progress else math.inf)
        flops = train_flops_per_item(model, mod.batches(recipe, bank, dataset, seed=seed)(0), dev) if peak else None
        trained, result = mod.train(dataset, mode, recipe=recipe, steps=steps, bank=bank, model=model, seed=seed,
                                    out_dir=run_dir if (main or world > 1) else None, progress=False, wrap=meter.wrap,
                                    max_seconds=None if budget is None else 1.25 * budget)
        trained = round_to_float16(trained)
        last = result.metrics[-1] if result.metrics else {}
        info = {"steps": result.step, "steps_planned": steps,
                "seconds": round(float(last.get("time_s", result.train_time_s)), 1),
                "final_loss": last.get("loss"), "img_per_s": round(last["img_per_s"], 1) if last else None,
                "ms_per_step_calibration": record["ms_per_step"], "resumed_from": result.resumed_from,
                "bank": specs[stage].n}
        loss = f"{info['final_loss']:.4f}" if info["final_loss"] is not None else "–"
        rate = ""
        if flops is not None:
            info.update(speed(info["img_per_s"], flops, peak))
            rate = (f", {info['train_tflop_per_s']:.2f} TFLOP/s = {100 * info['fraction_of_bf16_peak']:.2f}% of the "
                    f"measured bf16 matmul peak")
        log(f"[{stage}] done: {result.step} steps in {duration(info['seconds'])}, final loss {loss}, "
            f"{info['img_per_s'] or 0:.1f} images/s{rate}")
        return trained, info

    def stage_final(stage: str, model: torch.nn.Module, info: dict[str, Any]) -> None:
        """Write a finished stage whole (temporary folder, then a rename); drop its checkpoints."""
        report["stages"][stage] = info
        if not main:
            return
        d = stage_dir(out, dataset, stage)
        tmp = d / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        header = {"stage": stage, "dataset": dataset, "mode": mode, "machine": report["machine"], "seed": seed,
                  "plan": plans[stage], **info}
        save_weights(model, model.config, tmp / weights_name(dataset, stage), header)
        model.to(dev)
        write_json(tmp / "info.json", info)
        os.replace(tmp, d / "final")
        shutil.rmtree(d / "run" / "checkpoints", ignore_errors=True)  # the stage is finished: its weights are in final/

    # 5. The stages in order. A bank is rendered (and embedded) once and kept while a later stage
    #    to train draws from the same one (the prior's and the decoder's, when their sizes agree).
    banks: dict[Any, dict[str, Any]] = {}
    for stage in order:
        if decisions[stage] in ("staged", "done"):
            report["stages"][stage] = skip(stage)
            if stage == "clip" and any(s in todo for s in needs_clip):
                d = stage_dir(out, dataset, "clip")
                where = d / "final" if decisions["clip"] == "staged" else out
                clip = load_checkpoint(where / weights_name(dataset, "clip"), CLIPModel, config_cls=CLIPConfig,
                                       device=dev).float().eval()
            continue
        spec = specs[stage]
        if spec not in banks:
            t0 = time.perf_counter()
            banks[spec] = on_device(make(spec, seed=seed, clip=clip.to(dev) if spec.embedded else None,
                                         workers=recipes[stage].workers))  # on CUDA: moved to the GPU once
            log(f"[{stage}] bank: {spec.n} {dataset} items rendered{' and embedded' if spec.embedded else ''} "
                f"in {time.perf_counter() - t0:.1f} s")
        trained, info = run(stage, banks[spec])
        if not any(specs[s] == spec for s in todo[todo.index(stage) + 1:]):
            del banks[spec]
        if stage == "clip":
            clip = trained
            ev = _clip_retrieval(clip, dataset, mode, seed) if main else None
            if ev is not None:
                info["retrieval_test"] = ev
                log(f"[clip] test retrieval among 100 scenes: text→image top-1 {ev['text_to_image_top1']:.1%}, "
                    f"top-5 {ev['text_to_image_top5']:.1%}; image→text top-1 {ev['image_to_text_top1']:.1%}")
        stage_final(stage, trained, info)

    # 6. Every stage finished: move them into OUT together, the manifest last.
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    to_move = [s for s in order if decisions[s] != "done"]
    if main and to_move:
        commit(out, dataset, to_move, report)
        log(f"moved {', '.join(weights_name(dataset, s) for s in to_move)} into {_shown(out)} (MANIFEST.json rewritten last)")
    return report
