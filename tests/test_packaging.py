"""environment.yml (conda) and pyproject.toml (pip) must list the same dependencies."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from the PyPI names
CONDA_TO_PYPI = {"pytorch": "torch", "open-clip-torch": "open_clip_torch"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec.strip(), maxsplit=1)[0].lower().replace("-", "_")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_deps() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"], "environment.yml must use conda-forge only"
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            n = dep.split("=")[0].split(">")[0].split("<")[0].strip()
            names.add(_name(CONDA_TO_PYPI.get(n, n)))
    return names - {"python", "pip"}


def test_environment_yml_parses_and_is_named():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "dalle-mini-core"
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_sections == [["-e ."]], "the pip section should only install the course itself"


def test_conda_and_pip_list_the_same_dependencies():
    project = _pyproject()["project"]
    pip_deps = {_name(d) for d in project["dependencies"]}
    # a dependency with an environment marker (e.g. tomli on Python 3.10) is pip-only
    pip_deps |= {_name(d) for d in project["optional-dependencies"]["dev"] if ";" not in d}
    conda = _conda_deps()
    assert conda == pip_deps, (
        f"only in environment.yml: {sorted(conda - pip_deps)}; only in pyproject.toml: {sorted(pip_deps - conda)}"
    )


def test_dependencies_are_ranges_not_pins():
    project = _pyproject()["project"]
    for dep in project["dependencies"]:
        assert "==" not in dep, f"{dep}: use a range, not an exact pin"


def test_console_script_points_at_cli_main():
    assert _pyproject()["project"]["scripts"]["dalle-mini"] == "dalle_mini_core.cli:main"
