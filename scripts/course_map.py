"""Generate the course map of README.md and notebook 00 from the notebooks' own run records.

    python scripts/course_map.py           # rewrite the map in README.md and notebooks/00_introduction.ipynb
    python scripts/course_map.py --check   # exit 1, saying what differs, when either is out of date

One source for each fact:

* *what you build* in each notebook: the ``COURSE`` table below (a notebook in ``notebooks/``
  without an entry is an error);
* *how long it took*: the record ``scripts/execute_notebook.py`` (``make notebooks``) writes into
  each notebook's metadata, ``metadata.dalle_mini`` (mode, seconds, threads, load average, CPUs).
  A notebook without a record says "not recorded"; a GPU time is shown only where a gpu-mode
  record exists, else "not timed". Nothing is estimated.
* the pipeline's learned parts: ``PIPELINE``;
* the caption templates a student may type: ``dalle_mini_core.data.attributes`` (written into the
  README between ``<!-- caption-templates:begin -->`` and ``<!-- caption-templates:end -->``).

The map goes between the marker comments ``<!-- course-map:begin -->`` and
``<!-- course-map:end -->`` in README.md and in notebook 00's course-map Markdown cell. Every
notebook whose Markdown holds ``<!-- course-map:time -->…<!-- /course-map:time -->`` gets its own
measured time there too, so a notebook's header and the map cannot disagree.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BEGIN, END = "<!-- course-map:begin -->", "<!-- course-map:end -->"
TEMPLATES_BEGIN, TEMPLATES_END = "<!-- caption-templates:begin -->", "<!-- caption-templates:end -->"
TIME_BEGIN, TIME_END = "<!-- course-map:time -->", "<!-- /course-map:time -->"

#: What a student builds in each notebook (the only copy of this text).
COURSE: dict[str, str] = {
    "00_introduction": "what unCLIP is, the course map, environment check",
    "01_datasets": "captioned shapes, emoji, your own folders; tokens; the attribute reader",
    "02_noise_schedule": "the forward process; linear vs cosine; posterior; respacing",
    "03_unet": "the U-Net piece by piece (time embedding, FiLM ResBlocks, attention, skips), checked against the package",
    "04_training": "the DDPM loss; one training loop; EMA; checkpoints and exact resume; guards",
    "05_sampling": "DDPM and DDIM loops, respacing, η, Euler/Heun/DPM-Solver++ on Karras levels, quality vs model calls, inversion, guidance",
    "06_clip": "contrastive loss, a tiny CLIP with open_clip, the similarity matrix, retrieval, zero-shot, a relation test",
    "07_prior": "the diffusion prior, what its samples decode to, its baselines; optional: a perfect prior",
    "08_decoder": "the CLIP-embedding decoder, classifier-free guidance, what survives the embedding; the position experiment (measured offline)",
    "09_upsampler": "the 32→64 cascade and its corruption trick, judged on real decoder pictures (background roughness, edge crispness), not RMSE",
    "10_unclip": "text → prior → decoder → upsampler; variations, interpolations, text diffs; binding failures",
    "11_emoji_unclip": "the emoji pipeline on real pictures: prompts from names, identity and FID/KID with and without the prior, variations, unseen names, text failures, colour and shape recovery",
    "12_training_on_one_gpu": "the whole emoji run stage by stage (progress, images/s, curves, samples), Ctrl-C and exact resume, what makes a GPU fast, DDP under torchrun on two processes",
}

#: The learned parts a caption passes through, in order (DALL·E 2's unCLIP at this course's scale).
PIPELINE = ("CLIP text encoder", "prior", "decoder", "upsampler")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def notebooks(root: Path = ROOT) -> list[Path]:
    """The course's notebooks (``NN_name.ipynb`` in the notebooks folder), in order."""
    return sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def record(path: Path) -> dict | None:
    """The run record ``metadata.dalle_mini`` of one notebook, or None."""
    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    rec = meta.get("dalle_mini")
    return rec if isinstance(rec, dict) and isinstance(rec.get("seconds"), (int, float)) else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"


def _conditions(rec: dict) -> str:
    parts = []
    if rec.get("load_average") is not None:
        parts.append(f"load {rec['load_average']:.1f}")
    if rec.get("threads"):
        parts.append(f"{rec['threads']} thread{'s' if rec['threads'] != 1 else ''}")
    return ", ".join(parts)


def times(rec: dict | None) -> tuple[str, str]:
    """(CPU column, GPU column) for one notebook's record."""
    if rec is None:
        return "not recorded", "not timed"
    text = _duration(float(rec["seconds"]))
    cond = _conditions(rec)
    text = f"{text} ({cond})" if cond else text
    if rec.get("mode") == "gpu":
        return "not recorded", text
    if rec.get("mode") == "cpu":
        return text, "not timed"
    return f"not recorded ({rec.get('mode')} mode only)", "not timed"


def _check_entries(paths: list[Path]) -> None:
    missing = [p.stem for p in paths if p.stem not in COURSE]
    if missing:
        raise SystemExit(f"error: no 'what you build' entry in scripts/course_map.py COURSE for {', '.join(missing)}")


def table(root: Path = ROOT, *, link_prefix: str = "notebooks/") -> str:
    """The course map as a Markdown table (with its notes), between the markers."""
    paths = notebooks(root)
    _check_entries(paths)
    rows = ["| notebook | what you build | CPU time (cpu mode, measured) | GPU time |", "| --- | --- | --- | --- |"]
    machines = set()
    for path in paths:
        rec = record(path)
        cpu, gpu = times(rec)
        if rec is not None:
            machines.add(f"{rec.get('cpus', '?')}-core {rec.get('machine', '?')}")
        rows.append(f"| [{path.stem}]({link_prefix}{path.name}) | {COURSE[path.stem]} | {cpu} | {gpu} |")
    parts = " → ".join(PIPELINE)
    notes = [
        "",
        f"The pipeline has {NUMBER_WORDS[len(PIPELINE)]} learned parts: {parts}.",
        "",
        "Times are the saved run of each notebook, recorded by `scripts/execute_notebook.py` (`make notebooks`) "
        + (f"on this project's development machine ({', '.join(sorted(machines))} CPU)" if machines else "")
        + "; the load average says how busy the machine was (1 per busy core), so a quiet laptop is usually "
        "faster. \"not recorded\": the notebook has not been re-executed since times were recorded. "
        "This table is generated by `python scripts/course_map.py`.",
    ]
    return "\n".join([BEGIN, *rows, *notes, END])


def caption_templates() -> str:
    """The caption templates and words of the shapes world, from the package itself."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from dalle_mini_core.data.attributes import (COLOURS, ONE_OBJECT_TEMPLATES, POSITIONS, RELATIONS, SHAPES, SIZES,
                                                 TWO_OBJECT_TEMPLATES)
    from dalle_mini_core.data.shapes import HELDOUT_COMBINATIONS

    def slots(template: str) -> str:
        return "`" + re.sub(r"\{(size|colour|shape|position|relation)\d?\}", r"<\1>", template) + "`"

    words = [("shape", SHAPES), ("colour", tuple(COLOURS)), ("size", tuple(SIZES)), ("position", POSITIONS),
             ("relation", RELATIONS)]
    lines = [TEMPLATES_BEGIN,
             "One object (every one-object caption names a size, a colour, a shape *and* a position):",
             "", *(f"- {slots(t)}" for t in ONE_OBJECT_TEMPLATES), "",
             "Two objects (in different grid cells):", "", *(f"- {slots(t)}" for t in TWO_OBJECT_TEMPLATES), "",
             "where " + "; ".join(f"`<{name}>` is one of " + ", ".join(values) for name, values in words) + ".",
             f"{NUMBER_WORDS.get(len(HELDOUT_COMBINATIONS), len(HELDOUT_COMBINATIONS))} colour–shape pairs never appear in training (".capitalize() + ", ".join(f"{c} {s}" for c, s in HELDOUT_COMBINATIONS)
             + "): asking for them tests whether the model composes what it learned.",
             "(Generated from `dalle_mini_core/data/attributes.py` and `shapes.py` by `python scripts/course_map.py`.)",
             TEMPLATES_END]
    return "\n".join(lines)


def header_time(rec: dict | None) -> str:
    cpu, gpu = times(rec)
    if rec is None:
        return "Measured time: not recorded yet (see the course map in the README)."
    load, cpus = rec.get("load_average"), rec.get("cpus")
    busy = ""
    if load is not None and cpus:
        busy = (f" The machine had {cpus} cores and a load of {load:.1f} when the run started"
                + (" (busy: other jobs shared it, so a quiet laptop is faster)." if load > cpus else "."))
    return f"Measured time of the saved run (cpu mode): {cpu}; GPU: {gpu}.{busy}"


def _replace_between(text: str, begin: str, end: str, new_inner: str, *, keep_markers: bool) -> str:
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"markers {begin} … {end} not found")
    replacement = new_inner if keep_markers is False else f"{begin}{new_inner}{end}"
    return pattern.sub(lambda _: replacement, text, count=1)


def render(root: Path = ROOT) -> dict[Path, str]:
    """The new text of every file the map touches: README.md and the notebooks (as JSON text)."""
    out: dict[Path, str] = {}
    readme = root / "README.md"
    text = _replace_between(readme.read_text(encoding="utf-8"), BEGIN, END, table(root), keep_markers=False)
    if TEMPLATES_BEGIN in text:
        text = _replace_between(text, TEMPLATES_BEGIN, TEMPLATES_END, caption_templates(), keep_markers=False)
    out[readme] = text
    found_map = False
    for path in notebooks(root):
        raw = path.read_text(encoding="utf-8")
        nb = json.loads(raw)
        changed = False
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "markdown":
                continue
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            new = src
            if BEGIN in new and END in new:
                new = _replace_between(new, BEGIN, END, table(root, link_prefix=""), keep_markers=False)
                found_map = found_map or path.stem.startswith("00_")
            if TIME_BEGIN in new and TIME_END in new:
                new = _replace_between(new, TIME_BEGIN, TIME_END, header_time(record(path)), keep_markers=True)
            if new != src:
                cell["source"] = new.splitlines(keepends=True)
                changed = True
        if changed:
            out[path] = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if not found_map:
        raise ValueError("notebook 00 has no course-map cell with the markers")
    return out


def _normal(path: Path, text: str) -> str:
    """Compare notebooks by content, not by JSON layout."""
    if path.suffix == ".ipynb":
        nb = json.loads(text)
        return json.dumps([("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                           for c in nb.get("cells", [])])
    return text


def stale(root: Path = ROOT) -> list[str]:
    """The files whose course map or header time differs from what the records say."""
    return [str(path.relative_to(root)) for path, text in render(root).items()
            if _normal(path, path.read_text(encoding="utf-8")) != _normal(path, text)]


def write(root: Path = ROOT) -> list[str]:
    changed = []
    for path, text in render(root).items():
        if _normal(path, path.read_text(encoding="utf-8")) != _normal(path, text):
            path.write_text(text, encoding="utf-8")
            changed.append(str(path.relative_to(root)))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        if out_of_date:
            print("course map out of date in: " + ", ".join(out_of_date)
                  + "\nrun: python scripts/course_map.py", file=sys.stderr)
            return 1
        print("course map up to date")
        return 0
    changed = write()
    print("updated: " + ", ".join(changed) if changed else "course map already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
