# One command for the main job, one for the tests; each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test notebooks lab bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the course (editable) with its dev tools

demo: $(STAMP)  ## the main job: generate pictures with the shipped weights
	$(BIN)/dalle-mini demo

test: $(STAMP)  ## unit tests + every notebook under nbval, in smoke mode
	$(BIN)/python -m pytest

NB ?= notebooks/*.ipynb
notebooks: $(STAMP)  ## re-execute notebooks in place, in cpu mode, recording each one's time (NB=notebooks/08_decoder.ipynb for one)
	DALLE_MINI_MODE=$${DALLE_MINI_MODE:-cpu} IPYTHONDIR=$(CURDIR)/tests/ipython \
	  $(BIN)/python scripts/execute_notebook.py $(NB)

lab: $(STAMP)  ## open the course in JupyterLab
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)  ## U-Net speed benchmark against peers (needs: pip install -e '.[bench]')
	$(BIN)/dalle-mini bench unet --json runs/bench_unet.json

clean:
	rm -rf $(VENV) runs
