"""Every repository file that the course names exists.

Scanned: the README, every notebook's Markdown and code cells (not their outputs), and the
docstrings of the package, the scripts and the benchmarks. A name counts when it is a path that
starts with one of the repository's top-level folders (``data/``, ``scripts/``, ``notebooks/``,
``dalle_mini_core/``, ``benchmarks/``, ``tests/``, ``docs/``); patterns (``*``, ``<name>``) are
checked as a prefix (``data/weights/shapes_{clip,decoder}``: some file in ``data/weights/`` starts
with ``shapes_``), and a checkpoint named without its extension (``data/weights/shapes_uncond`` for
``shapes_uncond.safetensors`` + ``.json``) counts when such files exist. Markdown files named without
a folder (``DESIGN.md``) must exist somewhere in the repository, and nothing may point outside it
(``../shared/``).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("data", "scripts", "notebooks", "dalle_mini_core", "benchmarks", "tests", "docs")

# A path: one of FOLDERS, a slash, then path characters; not preceded by a path or URL character.
_PATH = re.compile(r"(?<![\w/.\-~])((?:%s)/[\w./\-]*)" % "|".join(FOLDERS))


_PATTERN_CHARS = "*<{["
_BARE_MD = re.compile(r"(?<![\w/.\-])([A-Za-z][\w\-]*\.md)\b")
_OUTSIDE = re.compile(r"\.\./shared|shared/reviews")


def named_paths(text: str) -> set[str]:
    """The repository paths named in `text` (trailing punctuation removed). A path cut short by a
    pattern character (``*``, ``<``, ``{``, ``[``) ends in ``…`` and is checked as a prefix."""
    found = set()
    for match in _PATH.finditer(text):
        path = match.group(1)
        pattern = match.end() < len(text) and text[match.end()] in _PATTERN_CHARS
        if not pattern:
            path = path.rstrip(".-")
        while "//" in path:
            path = path.replace("//", "/")
        found.add(path + "…" if pattern and not path.endswith("/") else path)
    return found


def _exists(path: str, root: Path) -> bool:
    if path.endswith("…"):  # a prefix: some entry of its folder starts with it
        folder, _, start = path[:-1].rpartition("/")
        return (root / folder).is_dir() and any(p.name.startswith(start) for p in (root / folder).iterdir())
    target = root / path
    if target.exists():
        return True
    # a checkpoint named without its extension: name.safetensors + name.json
    return target.parent.is_dir() and any(target.parent.glob(target.name + ".*"))


def missing(paths: set[str], root: Path = ROOT) -> list[str]:
    """The paths of `paths` that are not a file or folder under `root`."""
    return sorted(p for p in paths if not _exists(p, root))


def bare_markdown_names(text: str) -> set[str]:
    """Markdown files named without a folder, e.g. ``DESIGN.md``."""
    return set(_BARE_MD.findall(text))


def _notebook_sources(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in nb["cells"])


def _docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = [ast.get_docstring(node, clean=False) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return "\n".join(d for d in docs if d)


def sources() -> dict[str, str]:
    """Every text the check reads, by its repository path."""
    texts = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        texts[str(nb.relative_to(ROOT))] = _notebook_sources(nb)
    for folder in ("dalle_mini_core", "scripts", "benchmarks"):
        for py in sorted((ROOT / folder).rglob("*.py")):
            texts[str(py.relative_to(ROOT))] = _docstrings(py)
    return texts


def test_the_extractor_finds_paths_and_reports_a_missing_one(tmp_path):
    (tmp_path / "data" / "weights").mkdir(parents=True)
    (tmp_path / "data" / "weights" / "README.md").write_text("x")
    sample = ("See `data/weights/README.md`, the design in dalle_mini_core/DESIGN_NOTES.md. "
              "Not a repo path: https://example.org/data/x.png, runs/demo/, ../shared/data/y. "
              "A pattern: data/weights/<name>.safetensors and notebooks/*.ipynb; a test id: "
              "tests/test_train.py::test_ddp.")
    found = named_paths(sample)
    assert found == {"data/weights/README.md", "dalle_mini_core/DESIGN_NOTES.md", "data/weights/",
                     "notebooks/", "tests/test_train.py"}
    assert missing(found, tmp_path) == ["dalle_mini_core/DESIGN_NOTES.md", "notebooks/", "tests/test_train.py"]
    (tmp_path / "data" / "weights" / "shapes_uncond.json").write_text("{}")
    pattern_text = "data/weights/shapes_{clip,prior} data/weights/shapes_uncond data/weights/shapes_gone data/weights/other_*"
    found = named_paths(pattern_text)
    assert found == {"data/weights/shapes_…", "data/weights/shapes_uncond", "data/weights/shapes_gone", "data/weights/other_…"}
    assert missing(found, tmp_path) == ["data/weights/other_…", "data/weights/shapes_gone"]
    assert bare_markdown_names("as DESIGN.md says; see data/weights/README.md and STYLE.md.") == {"DESIGN.md", "STYLE.md"}


def test_markdown_files_named_without_a_folder_exist_and_nothing_points_outside():
    everywhere = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts}
    problems = {}
    for name, text in sources().items():
        gone = sorted(bare_markdown_names(text) - everywhere)
        gone += sorted(set(_OUTSIDE.findall(text)))
        if gone:
            problems[name] = gone
    assert not problems, "named but not in the repository: " + "; ".join(
        f"{name}: {', '.join(gone)}" for name, gone in problems.items())


def test_every_named_file_exists():
    problems = {name: gone for name, text in sources().items() if (gone := missing(named_paths(text)))}
    assert not problems, "files named but not in the repository: " + "; ".join(
        f"{name}: {', '.join(gone)}" for name, gone in problems.items())
