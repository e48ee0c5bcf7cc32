"""Test-suite set-up shared by the unit tests and the nbval notebook runs.

* Smoke mode: every notebook and CLI call run by the tests takes a handful of steps.
* IPYTHONDIR points at tests/ipython, whose startup file replaces `ipywidgets.interact`
  with a single call at default values (widgets still draw once, headless).
* Matplotlib draws off-screen; one math thread per process.
"""
from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent / "tests"
os.environ["DALLE_MINI_SMOKE"] = "1"
os.environ.pop("DALLE_MINI_MODE", None)
os.environ["IPYTHONDIR"] = str(HERE / "ipython")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONHASHSEED", "0")
# One math thread per process: the notebooks' kernels and the tests share two cores, and
# oversubscribed threads were measured 5-10x slower here (OMP_NUM_THREADS=2 vs 1 under load).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collectstart(collector):
    """nbval: never compare stderr (warnings carry temporary paths) nor rich HTML/JS outputs."""
    if getattr(collector, "skip_compare", None) is not None:
        collector.skip_compare += ("stderr", "text/html", "application/javascript", "application/vnd.jupyter.widget-view+json")


try:  # pytest imports this file; the notebooks' kernels do not need the fixture
    import pytest

    @pytest.fixture
    def one_thread():
        """One torch thread for a test module of tiny models (faster than two, far faster on a busy machine).

        Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
        """
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(before)
except ImportError:  # pragma: no cover
    pass
