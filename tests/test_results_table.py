"""The README's measured-results rows are generated from the `dalle-mini eval` reports.

`scripts/results_table.py` writes them between ``<!-- results:begin -->`` and
``<!-- results:end -->``; these tests fail when the README disagrees with the reports in
data/weights/reports/ (run ``python scripts/results_table.py`` to fix), and check the generator
on scratch copies: a changed report changes the table, an emoji report (written by
``dalle-mini eval emoji --json`` on the smoke emoji weights) renders its rows, and a missing or
garbled report stops it with one line.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results_table = _load()
REPORTS = results_table.REPORTS


def test_readme_agrees_with_the_eval_reports():
    old, new = results_table.render(ROOT)
    assert old == new, ("README results table out of date: run python scripts/results_table.py\n"
                        + "\n".join(results_table.differences(old, new)))


def test_readme_says_which_command_regenerates_the_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Results (measured)"):]
    assert section.index("`python scripts/results_table.py`") < section.index(results_table.BEGIN)
    assert readme.count(results_table.BEGIN) == readme.count(results_table.END) == 1


def _scratch(tmp_path: Path, extra: dict[str, dict] | None = None) -> Path:
    """A repository copy: a README with the markers between two typed paragraphs, the shipped eval reports."""
    root = tmp_path / "repo"
    (root / REPORTS).mkdir(parents=True)
    for path in (ROOT / REPORTS).glob(results_table.PATTERN):
        shutil.copy(path, root / REPORTS / path.name)
    for name, report in (extra or {}).items():
        (root / REPORTS / name).write_text(json.dumps(report), encoding="utf-8")
    (root / "README.md").write_text(f"# x\n\ntyped before\n\n{results_table.BEGIN}\n| stale |\n{results_table.END}\n\n"
                                    "typed after\n", encoding="utf-8")
    return root


def _block(root: Path) -> str:
    text = (root / "README.md").read_text(encoding="utf-8")
    assert text.startswith("# x\n\ntyped before\n\n") and text.endswith("\n\ntyped after\n")
    return text[text.index(results_table.BEGIN):text.index(results_table.END)]


def test_a_changed_report_changes_the_table(tmp_path, capsys):
    root = _scratch(tmp_path)
    assert results_table.main(["--root", str(root), "--check"]) == 1  # "| stale |" is not what the reports say
    assert results_table.main(["--root", str(root)]) == 0
    assert results_table.main(["--root", str(root), "--check"]) == 0
    before = _block(root)
    assert "| stale |" not in before and "held-out pairs 94.9%" in before  # eval_shapes_h100.json: 0.949…

    path = root / REPORTS / "eval_shapes_h100.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    report["caption_accuracy"]["heldout"] = 0.5
    path.write_text(json.dumps(report), encoding="utf-8")
    capsys.readouterr()
    assert results_table.main(["--root", str(root), "--check"]) == 1
    err = capsys.readouterr().err
    changed = [line.strip() for line in err.splitlines() if line.strip()[:1] in "+-"]
    assert len(changed) == 2, err  # one row out, the same row with the new number in
    assert "held-out pairs 94.9%" in changed[0] and "held-out pairs 50.0%" in changed[1]
    assert "run: python scripts/results_table.py" in err

    assert results_table.main(["--root", str(root)]) == 0
    after = _block(root)
    assert "held-out pairs 50.0%" in after and "held-out pairs 94.9%" not in after

    # a report taken away takes its rows with it; rows it shared with others keep the others
    (root / REPORTS / "eval_shapes_cpu_prior.json").unlink()
    assert results_table.main(["--root", str(root)]) == 0
    after = _block(root)
    assert "a perfect prior's sample" in before and "a perfect prior's sample" not in after
    clip_row = next(line for line in after.splitlines() if line.startswith("| shapes CLIP"))
    assert clip_row.endswith("| `eval_shapes_cpu.json` (cpu mode), `eval_shapes_h100.json` (gpu mode) |")


@pytest.fixture(scope="module")
def emoji_report(emoji_smoke_weights, tmp_path_factory):
    """What ``dalle-mini eval emoji --json`` writes for the smoke emoji pipeline (2 names per split)."""
    from dalle_mini_core.cli import main

    path = tmp_path_factory.mktemp("eval") / "eval_emoji_smoke.json"
    assert main(["eval", "emoji", "--weights", str(emoji_smoke_weights), "--json", str(path), "--names", "2",
                 "--n", "8"]) == 0
    return json.loads(path.read_text(encoding="utf-8"))


def test_an_emoji_report_renders_identity_fid_kid_floor_ceiling_and_no_prior(emoji_report, tmp_path):
    e = emoji_report["emoji"]
    rows = results_table.report_rows("eval_emoji_smoke.json", emoji_report)
    identity = {what: result for what, result in rows if what.startswith("emoji identity")}
    assert len(identity) == 2
    for split, label in (("train", "2 train names"), ("test", "2 unseen test names")):
        what, result = next((w, r) for w, r in identity.items() if label in w)
        assert f"chance top-1 {results_table.pct(e['identity'][split]['full']['chance_top1'])}" in what
        for path, name in (("full", "full path"), ("no_prior", "without the prior"),
                           ("reconstruction", "decoder ceiling (true image embedding)")):
            scores = e["identity"][split][path]
            assert (f"{name} {results_table.pct(scores['top1'])} / {results_table.pct(scores['top5'])} "
                    f"(median rank {scores['median_rank']:g})") in result, (split, path, result)
    fid = {what: result for what, result in rows if what.startswith("emoji FID / KID")}
    assert len(fid) == 2  # the decoder's 32×32 pictures and the final 64×64 ones
    small = next(r for w, r in fid.items() if "32×32" in w)
    sets = e["fid_kid"]["decoder_32"]
    for key, name in (("real_train_vs_real_test", "real train vs real test (floor)"),
                      ("train_no_prior", "without the prior"),
                      ("test_reconstruction", "decoder ceiling (true image embedding)")):
        assert f"{name} {results_table.num(sets[key]['fid'])} / {results_table.num(sets[key]['kid'])}" in small, key
    assert any(what.startswith("emoji CLIP") for what, _ in rows) and any(what.startswith("emoji prior") for what, _ in rows)

    # in the README table the emoji rows follow the shapes rows, labelled with their report
    root = _scratch(tmp_path, {"eval_emoji_smoke.json": emoji_report})
    assert results_table.main(["--root", str(root)]) == 0
    lines = [line for line in _block(root).splitlines() if line.startswith("| ") and "---" not in line][1:]
    datasets = [line.split()[1] for line in lines]
    assert datasets == sorted(datasets, key=("shapes", "emoji").index) and "emoji" in datasets
    assert all(line.endswith("`eval_emoji_smoke.json` (smoke mode) |") for line in lines if line.startswith("| emoji"))


def test_an_emoji_report_without_its_pipeline_says_why(emoji_report):
    skipped = {**emoji_report, "emoji": {"skipped": "no emoji_prior weights in data/weights; train them"}}
    rows = results_table.report_rows("eval_emoji_cpu.json", skipped)
    assert rows[-1] == ("emoji pipeline: identity, FID / KID",
                        "not measured: no emoji_prior weights in data/weights; train them")


def _h100() -> dict:
    return json.loads((ROOT / REPORTS / "eval_shapes_h100.json").read_text(encoding="utf-8"))


def _without(report: dict, section: str, key: str) -> str:
    del report[section][key]
    return json.dumps(report)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
    ("[1, 2]", "not a `dalle-mini eval` report"),
    ('{"dataset": "shapes"}', "no 'clip.num_galleries'"),
    ('{"dataset": "cats", "clip": {}}', "dataset 'cats' is neither"),
    (_without(_h100(), "prior", "steps"), "no 'prior.steps'"),  # a section that is there must hold its numbers
    (json.dumps({**_h100(), "caption_accuracy": {**_h100()["caption_accuracy"], "seen": "high"}}),
     "'caption_accuracy.seen' is 'high', not a number"),
])
def test_a_garbled_report_stops_it_with_one_line_naming_the_file(tmp_path, capsys, content, message):
    root = _scratch(tmp_path)
    (root / REPORTS / "eval_shapes_bad.json").write_text(content, encoding="utf-8")
    assert results_table.main(["--root", str(root), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("results_table: error: eval_shapes_bad.json: "), err
    assert message in err, err
    assert "| stale |" in (root / "README.md").read_text(encoding="utf-8")  # nothing written


def test_missing_reports_stop_it_with_one_line(tmp_path, capsys):
    root = _scratch(tmp_path)
    for path in (root / REPORTS).iterdir():
        path.unlink()
    assert results_table.main(["--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no `dalle-mini eval` reports (eval_*.json) in" in err
    assert results_table.main(["--root", str(root), "--reports", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no reports folder" in err
    (root / "README.md").write_text("# no markers\n", encoding="utf-8")
    shutil.copy(ROOT / REPORTS / "eval_shapes_h100.json", root / REPORTS)
    assert results_table.main(["--root", str(root)]) == 2
    assert "no <!-- results:begin --> … <!-- results:end --> markers" in capsys.readouterr().err
