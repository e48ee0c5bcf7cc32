"""Execute notebooks in place and record how long each took, in the notebook's own metadata.

    python scripts/execute_notebook.py notebooks/05_sampling.ipynb [more.ipynb ...]

Run by ``make notebooks``. Each notebook is executed top to bottom (the run mode comes from
``DALLE_MINI_MODE``, ``cpu`` unless set), saved with its outputs, and its metadata gains::

    "dalle_mini": {"mode": "cpu", "seconds": 341.2, "threads": 1, "load_average": 1.9,
                   "cpus": 2, "machine": "x86_64", "executed": "2026-11-30"}

``load_average`` is the machine's one-minute load averaged over the run (sampled every 15 s): a time measured on a
busy machine is slower than a student's quiet laptop, and the course map says so. The course
map in the README and notebook 00 is generated from these records
(``python scripts/course_map.py``), so the times printed there are the measured ones.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path, timeout: int = 3600) -> float:
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    mode = os.environ.setdefault("DALLE_MINI_MODE", "cpu")
    os.environ.setdefault("IPYTHONDIR", str(ROOT / "tests" / "ipython"))
    nb = nbformat.read(path, as_version=4)
    loads: list[float] = []
    done = threading.Event()

    def sample_load() -> None:  # the one-minute load, every 15 s while the notebook runs
        while hasattr(os, "getloadavg"):
            loads.append(os.getloadavg()[0])
            if done.wait(15):
                break

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
            nb, {"metadata": {"path": str(path.parent)}}
        )
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    load = sum(loads) / len(loads) if loads else None
    nb.metadata["dalle_mini"] = {
        "mode": mode,
        "seconds": round(seconds, 1),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "load_average": None if load is None else round(load, 2),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "executed": _dt.date.today().isoformat(),
    }
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.is_file():
            print(f"error: {path} is not a file", file=sys.stderr)
            return 2
        print(f"executing {path} ...", flush=True)
        seconds = execute(path, args.timeout)
        print(f"  {path.name}: {seconds:.0f} s", flush=True)
    # the course map (README, notebook 00, notebook headers) follows the new records
    sys.path.insert(0, str(ROOT / "scripts"))
    import course_map

    changed = course_map.write()
    print("course map updated: " + ", ".join(changed) if changed else "course map already up to date", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
