# Every target creates .venv and installs what it needs by itself.
# torch is pinned here (a local CPU build exists; a looser range pulls several GB of CUDA
# packages); pyproject.toml keeps a range.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-core test-triton-full lint docs package bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_PIN)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/crossentropy demo

# The torch layer's suite a second time with the GPU kernels forced, in Triton's interpreter on CPU
# tensors (docs/kernels.md). Left out here (`make test-triton-full` has them): test_torch_linear.py
# (6 minutes of interpreted kernels; test_torch_linear_pytorch.py runs every option of the linear
# loss on Triton's fused kernels), and the second-order, batched and vmap checks of PyTorch's linear
# cross-entropy samples in test_torch_opinfo.py (7 minutes: gradcheck's many interpreted forward
# calls; their first-order checks stay, and the default run has them all).
# Both runs spread their tests over the machine's cores (pytest-xdist, -n auto).
TRITON_FORCED := CROSSENTROPY_KERNELS=triton TRITON_INTERPRET=1 $(PY) -m pytest -q -p no:cacheprovider -n auto
TORCH_SUITE := $(addprefix tests/torch/,test_torch_layer.py test_torch_semantics.py test_torch_autograd.py \
	test_torch_opinfo.py test_torch_compile.py test_torch_distributed.py test_torch_devices.py test_losses_torch.py \
	test_out_parameter.py test_torch_linear_pytorch.py)
LINEAR_SECOND_ORDER := linear and (gradgradcheck or fwgrad_bwgrad or test_op_batched or test_op_vmap)

test: $(STAMP) test-core
	$(PY) -m pytest -n auto
	$(TRITON_FORCED) $(TORCH_SUITE) -k "not ($(LINEAR_SECOND_ORDER))"

# The core without PyTorch (docs/design.md, "Tests"): a second environment with the core's dependencies
# and the test tools only (the `test-core` extra), where `import torch` must fail; tests/core and the
# core modules' doctests run there (their PyTorch cases skip, saying so).
CORE_VENV := .venv-core
CORE_PY := $(CORE_VENV)/bin/python
CORE_STAMP := $(CORE_VENV)/.installed
CORE_DOCTESTS := $(addprefix --ignore=src/crossentropy/,torch cli gallery dask.py)

$(CORE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_PY) -m pip install --quiet --upgrade pip
	$(CORE_PY) -m pip install --quiet -e ".[test-core]"
	touch $(CORE_STAMP)

test-core: $(CORE_STAMP)
	@! $(CORE_PY) -c "import torch" 2>/dev/null || { echo "PyTorch is installed in $(CORE_VENV)"; exit 1; }
	$(CORE_PY) -m pytest -q -p no:cacheprovider -n auto tests/core src/crossentropy $(CORE_DOCTESTS)

test-triton-full: $(STAMP)
	$(TRITON_FORCED) $(TORCH_SUITE) tests/torch/test_torch_linear.py

# The speed benchmark against PyTorch (several minutes); results in benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/softmax_cross_entropy.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # [tool.mypy] in pyproject.toml: strict on the core modules
	$(VENV)/bin/lint-imports  # [tool.importlinter] in pyproject.toml: the layers of docs/design.md

# The documentation site (docs/conf.py: Sphinx, numpydoc, MyST), HTML in docs/_build/html. Built afresh
# with warnings as errors (numpydoc's docstring checks among them), then checked: every public name in
# the built reference, and the site's pages in a headless browser (the tests skip these without a build).
docs: $(STAMP)
	rm -rf docs/_build docs/api/generated
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html
	CROSSENTROPY_DOCS_BUILT=1 $(PY) -m pytest -q -p no:cacheprovider tests/docs/test_docs.py tests/docs/test_html_pages.py -k built_docs

# The sdist and the wheel built and checked (twine), the wheel installed into a fresh virtual environment
# and run away from the source tree: `crossentropy demo` and an import of every public module.
package: $(STAMP)
	$(PY) .ci/check_package.py

clean:
	rm -rf $(VENV) $(CORE_VENV) .pytest_cache .ruff_cache .hypothesis docs/_build docs/api/generated
