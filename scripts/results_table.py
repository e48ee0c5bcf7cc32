"""Generate the README's measured-results rows from the ``dalle-mini eval`` reports.

    python scripts/results_table.py           # rewrite the rows in README.md
    python scripts/results_table.py --check   # exit 1, saying what differs, when README.md is out of date

The rows go between the marker comments ``<!-- results:begin -->`` and ``<!-- results:end -->``
of README.md's "Results (measured)" section. Every number there is read from a JSON report that
``dalle-mini eval shapes|emoji --json FILE`` wrote into ``data/weights/reports/`` (the files
``eval_<dataset>_<label>.json``; the label says where it ran, e.g. ``eval_shapes_h100.json``):

* ``clip`` — retrieval among held-out test items (and, for shapes, zero-shot attributes);
* ``prior`` — the prior against its baselines (retrieval top-1, cosine to the true embedding);
* ``caption_accuracy`` (shapes) — the whole pipeline's seen / held-out caption accuracy;
* ``emoji`` (emoji) — identity among the 1,870 emoji for train and unseen test names on every
  path (full, after the upsampler, without the prior, the decoder's ceiling), and FID / KID on
  CLIP features beside the real-vs-real floor.

A section a report lacks gives no row; a section that is present must hold its numbers, else the
script stops with one line naming the file and the missing key. Rows that say the same thing in
several reports are written once, naming every report. Rows no eval report backs (benchmarks,
dataset facts) stay typed in the README, outside the markers.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORTS = Path("data") / "weights" / "reports"  # under the repository root
PATTERN = "eval_*.json"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
COMMAND = "python scripts/results_table.py"
DATASETS = ("shapes", "emoji")  # the order of the rows


class ReportError(ValueError):
    """A report that cannot be read or lacks a number its section needs (one line)."""


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def load_reports(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, report) for every ``eval_*.json`` in `folder`, sorted by name."""
    if not folder.is_dir():
        raise ReportError(f"no reports folder {folder}")
    paths = sorted(folder.glob(PATTERN))
    if not paths:
        raise ReportError(f"no `dalle-mini eval` reports ({PATTERN}) in {folder}")
    out = []
    for path in paths:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ReportError(f"{path.name}: cannot be read ({exc})") from None
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(report, dict):
            raise ReportError(f"{path.name}: not a `dalle-mini eval` report (a JSON object)")
        out.append((path.name, report))
    return out


class _Report:
    """Typed access to one report: ``r.num("clip.text_to_image_top1")`` or a one-line ReportError."""

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name, self.data = name, data

    def get(self, key: str, default: Any = ...) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not ...:
                    return default
                raise ReportError(f"{self.name}: no {key!r} (is it a `dalle-mini eval` report?)")
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        return self.get(key, None) is not None

    def num(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReportError(f"{self.name}: {key!r} is {value!r}, not a number")
        return float(value)


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    """A share as a percentage: one decimal, or two significant digits below 1%."""
    v = 100 * x
    if 0 < abs(v) < 1:
        return f"{v:.2g}%"
    return f"{v:.1f}%"


def num(x: float) -> str:
    """A distance (FID, KID, cosine, rank) with three significant digits."""
    return f"{x:.3g}"


def _count(n: float) -> str:
    return f"{int(n):,}"


# --------------------------------------------------------------------------------------------
# rows, one function per report section
# --------------------------------------------------------------------------------------------


def _clip_row(r: _Report, dataset: str) -> tuple[str, str]:
    items = "test scenes" if dataset == "shapes" else "test emoji (names never trained on)"
    galleries = int(r.num("clip.num_galleries"))
    what = (f"{dataset} CLIP: retrieval among {_count(r.num('clip.gallery_size'))} held-out {items}, "
            f"{galleries} galler{'y' if galleries == 1 else 'ies'}")
    result = (f"text→image top-1 {pct(r.num('clip.text_to_image_top1'))}, top-5 {pct(r.num('clip.text_to_image_top5'))}; "
              f"image→text top-1 {pct(r.num('clip.image_to_text_top1'))}")
    if r.has("clip.zero_shot_attribute_accuracy"):
        z = "clip.zero_shot_attribute_accuracy"
        result += (f"; zero-shot attributes of {_count(r.num(z + '.n'))} one-object scenes: "
                   + ", ".join(f"{a} {pct(r.num(f'{z}.{a}'))}" for a in ("shape", "colour", "size", "position")))
    return what, result


_BASELINES = (("prior", "prior sample"), ("text_embedding", "text embedding"),
              ("nearest_neighbour", "nearest training image"), ("oracle_sample", "a perfect prior's sample"))


def _prior_row(r: _Report, dataset: str) -> tuple[str, str]:
    what = (f"{dataset} prior vs its baselines: {_count(r.num('prior.n'))} held-out captions, "
            f"{_count(r.num('prior.steps'))} sampler steps")
    if r.has("prior.guidance_scale"):
        what += f", guidance {num(r.num('prior.guidance_scale'))}"

    def listing(key: str, fmt: Any, extra: tuple[tuple[str, str], ...] = ()) -> str:
        parts = [f"{label} {fmt(r.num(f'{key}.{k}'))}" for k, label in _BASELINES
                 if k != "oracle_sample" or r.has(f"{key}.{k}")]  # the perfect prior: only where measured
        parts += [f"{label} {fmt(r.num(k))}" for k, label in extra if r.has(k)]
        return ", ".join(parts)

    result = (f"retrieval top-1: {listing('prior.retrieval_top1', pct, (('prior.prior_mean.retrieval_top1', 'prior mean'),))}"
              f" (chance {pct(r.num('prior.chance_top1'))})")
    if r.has("prior.retrieval_top1_relevant"):
        key = "prior.retrieval_top1_relevant"
        result += (f"; relevance-aware (any scene the caption fits counts): "
                   f"{listing(key, pct, ((key + '.prior_mean', 'prior mean'),))}")
    result += f"; cosine to the true image embedding: {listing('prior.cosine_to_true', num)}"
    return what, result


def _caption_row(r: _Report) -> tuple[str, str]:
    c = "caption_accuracy"
    s = f"{c}.settings"
    what = (f"shapes pipeline, caption accuracy: {_count(r.num(c + '.n'))} seen + {_count(r.num(c + '.n'))} held-out "
            f"prompts × {_count(r.num(c + '.n_per_prompt'))}, prior / decoder / upsampler "
            f"{_count(r.num(s + '.prior_steps'))} / {_count(r.num(s + '.decoder_steps'))} / "
            f"{_count(r.num(s + '.upsampler_steps'))} steps, on {r.get(c + '.device')}")
    result = (f"seen colour–shape pairs {pct(r.num(c + '.seen'))}, held-out pairs {pct(r.num(c + '.heldout'))}; "
              f"{num(r.num(c + '.seconds_per_image'))} s per image")
    if r.has(f"{c}.clean_share"):
        parts = [f"{stage} {_count(r.num(f'{c}.clean_share.{stage}.image_size'))}×"
                 f"{_count(r.num(f'{c}.clean_share.{stage}.image_size'))} {pct(r.num(f'{c}.clean_share.{stage}.all'))}"
                 for stage in ("decoder", "upsampler") if r.has(f"{c}.clean_share.{stage}")]
        result += "; clean background: " + ", ".join(parts)
    return what, result


_PATHS = (("full", "full path"), ("full_upsampled", "full path after the upsampler"),
          ("no_prior", "without the prior"), ("reconstruction", "decoder ceiling (true image embedding)"))
_SPLITS = (("train", "train names"), ("test", "unseen test names"))


def _emoji_rows(r: _Report) -> list[tuple[str, str]]:
    e = "emoji"
    if r.has(f"{e}.skipped"):
        return [("emoji pipeline: identity, FID / KID", f"not measured: {r.get(e + '.skipped')}")]
    where = f"{r.get(e + '.mode')} mode, {r.get(e + '.device')}"
    rows = []
    for split, label in _SPLITS:
        i = f"{e}.identity.{split}"
        what = (f"emoji identity, {_count(r.num(f'{i}.full.n'))} {label} ({r.get(e + '.identity_features')}; "
                f"chance top-1 {pct(r.num(f'{i}.full.chance_top1'))}, top-5 {pct(r.num(f'{i}.full.chance_top5'))}; "
                f"{where})")
        parts = []
        for path, name in _PATHS:
            if path == "full_upsampled" and not r.has(f"{i}.{path}"):
                continue
            p = f"{i}.{path}"
            parts.append(f"{name} {pct(r.num(p + '.top1'))} / {pct(r.num(p + '.top5'))} "
                         f"(median rank {r.num(p + '.median_rank'):g})")
        rows.append((what, "top-1 / top-5: " + "; ".join(parts)))
    f = f"{e}.fid_kid"
    for space, label in (("decoder_32", "the decoder's 32×32 pictures"), ("upsampler_64", "the final 64×64 pictures")):
        if not r.has(f"{f}.{space}"):
            continue
        sets = r.get(f"{f}.{space}")
        what = (f"emoji FID / KID on CLIP image features, {label}: {_count(r.num(f + '.rows'))} pictures per set "
                f"against {r.get(f + '.reference')} ({where})")
        parts = [f"real train vs real test (floor) {_fid(r, f'{f}.{space}.real_train_vs_real_test')}"]
        for split, split_label in _SPLITS:
            names = [(path, name) for path, name in _PATHS if f"{split}_{path}" in sets]
            if names:
                parts.append(f"{split_label}: " + ", ".join(f"{name} {_fid(r, f'{f}.{space}.{split}_{path}')}"
                                                            for path, name in names))
        rows.append((what, "FID / KID: " + "; ".join(parts)))
    return rows


def _fid(r: _Report, key: str) -> str:
    return f"{num(r.num(key + '.fid'))} / {num(r.num(key + '.kid'))}"


def report_rows(name: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    """The (what, result) rows one report backs, in the README's order."""
    r = _Report(name, data)
    dataset = r.get("dataset")
    if dataset not in DATASETS:
        raise ReportError(f"{name}: dataset {dataset!r} is neither 'shapes' nor 'emoji'")
    rows = [_clip_row(r, dataset)]
    if r.has("prior"):
        rows.append(_prior_row(r, dataset))
    if r.has("caption_accuracy"):
        rows.append(_caption_row(r))
    if r.has("emoji"):
        rows.extend(_emoji_rows(r))
    return rows


def table(folder: Path) -> str:
    """The Markdown between the markers: one row per measurement, the reports that back it beside it."""
    merged: dict[tuple[str, str], list[str]] = {}
    order: dict[tuple[str, str], tuple[int, int]] = {}  # shapes first, then emoji; like rows together
    for name, data in load_reports(folder):
        mode = data.get("run_mode")
        label = f"`{name}`" + (f" ({mode} mode)" if isinstance(mode, str) else "")
        for k, row in enumerate(report_rows(name, data)):
            merged.setdefault(row, []).append(label)
            order.setdefault(row, (DATASETS.index(data["dataset"]), k))
    lines = ["", "| what | result | report |", "| --- | --- | --- |"]
    lines += [f"| {_cell(what)} | {_cell(result)} | {', '.join(merged[(what, result)])} |"
              for what, result in sorted(merged, key=order.__getitem__)]
    lines += ["", f"(Generated from the `dalle-mini eval` reports in `{REPORTS.as_posix()}/` by `{COMMAND}`; "
                  f"`{COMMAND} --check` says whether this table is up to date.)", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------


def render(root: Path = ROOT, reports: Path | None = None) -> tuple[str, str]:
    """(current README text, README text with the generated rows)."""
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ReportError(f"{readme}: no {BEGIN} … {END} markers")
    block = f"{BEGIN}{table(root / REPORTS if reports is None else reports)}{END}"
    return text, pattern.sub(lambda _: block, text, count=1)


def differences(old: str, new: str, limit: int = 12) -> list[str]:
    """The changed lines of the results block (`limit` at most), as a unified diff."""
    diff = [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return diff[:limit] + ([f"… and {len(diff) - limit} more changed lines"] if len(diff) > limit else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether README.md is up to date (exit 1 if not)")
    parser.add_argument("--root", default=str(ROOT), help="the repository whose README.md and reports to use")
    parser.add_argument("--reports", help=f"the reports folder (default: ROOT/{REPORTS.as_posix()})")
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        old, new = render(root, None if args.reports is None else Path(args.reports))
    except ReportError as exc:
        print(f"results_table: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if old != new:
            print("results table in README.md is out of date; changed lines:\n  "
                  + "\n  ".join(differences(old, new)) + f"\nrun: {COMMAND}", file=sys.stderr)
            return 1
        print("results table up to date")
        return 0
    if old == new:
        print("results table already up to date")
        return 0
    (root / "README.md").write_text(new, encoding="utf-8")
    print(f"updated: {root / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
