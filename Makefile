# Every target creates .venv and installs what it needs by itself.
# torch is pinned here (a local CPU build exists; a looser range pulls several GB of CUDA
# packages); pyproject.toml keeps a range.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_PIN)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/crossentropy demo

test: $(STAMP)
	$(PY) -m pytest

# The speed benchmark against PyTorch (several minutes); results in benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/softmax_cross_entropy.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
