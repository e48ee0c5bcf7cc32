"""The package's shape: no module over 600 lines, and the four stage files hold models only.

A stage file (clip.py, prior.py, decoder.py, upsampler.py) holds a model: its config, network,
denoiser wrapper, `sample()`, save/load. It must not import the training loop, the datasets (the tokenizer is allowed),
the recipes, the banks, the evaluation code, or another stage, so that a student reading a model
reads only the model, and a recipe change cannot reach into it. This test walks each file's
imports (module level and inside functions) with `ast` and fails on any forbidden one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dalle_mini_core"
MAX_LINES = 600
STAGE_FILES = ("clip", "prior", "decoder", "upsampler")
# package modules a stage file may not import (prefix match on the dotted name inside the package);
# the tokenizer (data.tokens) is allowed: it is part of a text model, not a dataset
FORBIDDEN = ("train", "runlog", "train_state", "stages", "runs", "recipes", "banks", "evaluation", "data",
             "pipeline", "promptbox", "cli") + STAGE_FILES
ALLOWED = ("data.tokens",)


def _package_imports(path: Path) -> list[str]:
    """Every package-internal module a file imports, as a dotted name relative to the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y   /   from . import x
                base = node.module or ""
                if base:
                    names.append(base)
                else:
                    names += [alias.name for alias in node.names]
            elif node.level == 0 and node.module and node.module.startswith("dalle_mini_core"):
                rest = node.module[len("dalle_mini_core"):].lstrip(".")
                names += [rest] if rest else [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dalle_mini_core."):
                    names.append(alias.name[len("dalle_mini_core."):])
    return names


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_600_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (limit {MAX_LINES}): split it by job"


@pytest.mark.parametrize("stage", STAGE_FILES)
def test_stage_files_import_no_training_dataset_or_other_stage(stage):
    path = PACKAGE / f"{stage}.py"
    bad = [name for name in _package_imports(path) if name not in ALLOWED
           and any(name == f or name.startswith(f + ".") for f in FORBIDDEN if f != stage)]
    assert not bad, f"{stage}.py imports {sorted(set(bad))}: a stage file holds the model only"


def test_the_import_walk_sees_imports_inside_functions(tmp_path):
    """The walk is not fooled by an import hidden in a function body (the common way round a cycle)."""
    source = "from .unet import UNet\n\ndef f():\n    from .train import train\n    from . import prior\n"
    path = tmp_path / "fake.py"
    path.write_text(source)
    assert _package_imports(path) == ["unet", "train", "prior"]
