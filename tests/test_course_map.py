"""The course map in README.md and notebook 00 is generated from the notebooks' run records.

`scripts/course_map.py` writes it; these tests fail when a file disagrees with the records
(run ``python scripts/course_map.py`` to fix), and check the generator on a scratch copy.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("course_map", ROOT / "scripts" / "course_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course_map = _load()


def test_readme_and_notebook_00_agree_with_the_run_records():
    out_of_date = course_map.stale(ROOT)
    assert not out_of_date, f"course map out of date in {out_of_date}: run python scripts/course_map.py"


def test_readme_lists_every_caption_template_of_the_package():
    from dalle_mini_core.data.attributes import ONE_OBJECT_TEMPLATES, TWO_OBJECT_TEMPLATES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(course_map.TEMPLATES_BEGIN), readme.index(course_map.TEMPLATES_END)
    block = readme[start:end]
    assert block.count("\n- `") == len(ONE_OBJECT_TEMPLATES) + len(TWO_OBJECT_TEMPLATES)
    assert "`a <size> <colour> <shape> at the <position>`" in block


def test_every_notebook_has_a_course_entry_and_no_entry_is_invented():
    stems = [p.stem for p in course_map.notebooks(ROOT)]
    assert stems, "no notebooks found"
    assert set(stems) <= set(course_map.COURSE), "a notebook has no 'what you build' entry"
    table = course_map.table(ROOT)
    for stem in course_map.COURSE:
        assert (f"[{stem}]" in table) == (stem in stems), stem


def test_learned_parts_are_counted_the_same_everywhere():
    word = course_map.NUMBER_WORDS[len(course_map.PIPELINE)]
    texts = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    nb = json.loads((ROOT / "notebooks" / "00_introduction.ipynb").read_text(encoding="utf-8"))
    texts["00_introduction"] = "\n".join("".join(c["source"]) for c in nb["cells"])
    for name, text in texts.items():
        counts = re.findall(r"\b(two|three|four|five|six)\s+learned\s+(?:parts|steps|stages)", text, flags=re.I)
        assert counts, f"{name} does not say how many learned parts the pipeline has"
        assert {c.lower() for c in counts} == {word}, f"{name}: {counts} (the pipeline has {word})"


def _scratch(tmp_path: Path, records: dict[str, dict | None]) -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    for stem, rec in records.items():
        meta = {"dalle_mini": rec} if rec is not None else {}
        cells = [{"cell_type": "markdown", "metadata": {}, "source": f"# {stem}\n{course_map.TIME_BEGIN}old{course_map.TIME_END}"}]
        if stem.startswith("00_"):
            cells.append({"cell_type": "markdown", "metadata": {}, "source": f"map\n{course_map.BEGIN}\nold\n{course_map.END}"})
        nb = {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}
        (root / "notebooks" / f"{stem}.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    (root / "README.md").write_text(f"# x\n\n{course_map.BEGIN}\n| stale |\n{course_map.END}\n\nrest\n", encoding="utf-8")
    return root


def test_generator_writes_measured_times_and_never_invents_one(tmp_path):
    root = _scratch(tmp_path, {
        "00_introduction": {"mode": "cpu", "seconds": 15.1, "threads": 1, "load_average": 0.45, "cpus": 2, "machine": "x86_64"},
        "01_datasets": None,
        "04_training": {"mode": "cpu", "seconds": 840.0, "threads": 1, "load_average": 6.2, "cpus": 2, "machine": "x86_64"},
    })
    assert course_map.stale(root) == ["README.md", "notebooks/00_introduction.ipynb", "notebooks/01_datasets.ipynb",
                                      "notebooks/04_training.ipynb"]
    course_map.write(root)
    assert course_map.stale(root) == []
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "| stale |" not in readme and readme.endswith("rest\n")
    row = {line.split("]")[0].lstrip("| ["): line for line in readme.splitlines() if line.startswith("| [")}
    assert set(row) == {"00_introduction", "01_datasets", "04_training"}
    assert "| 15 s (load 0.5, 1 thread) | not timed |" in row["00_introduction"]
    assert "| not recorded | not timed |" in row["01_datasets"]
    assert "| 14 min (load 6.2, 1 thread) |" in row["04_training"]
    header = json.loads((root / "notebooks" / "04_training.ipynb").read_text(encoding="utf-8"))["cells"][0]["source"]
    assert "14 min" in "".join(header)
    # a new record makes the saved map stale again: the check fails until the map is regenerated
    nb_path = root / "notebooks" / "01_datasets.ipynb"
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    nb["metadata"]["dalle_mini"] = {"mode": "cpu", "seconds": 70.0, "threads": 1, "load_average": 1.0}
    nb_path.write_text(json.dumps(nb), encoding="utf-8")
    assert course_map.stale(root) == ["README.md", "notebooks/00_introduction.ipynb", "notebooks/01_datasets.ipynb"]


def test_gpu_record_goes_to_the_gpu_column():
    cpu, gpu = course_map.times({"mode": "gpu", "seconds": 30.0, "threads": None, "load_average": 0.1})
    assert (cpu, gpu) == ("not recorded", "30 s (load 0.1)")


def test_a_notebook_without_an_entry_is_an_error(tmp_path):
    root = _scratch(tmp_path, {"00_introduction": None, "99_unknown": None})
    with pytest.raises(SystemExit, match="99_unknown"):
        course_map.table(root)
