# Two commands for a fresh machine with Python 3.11+: `make demo` and `make test`.
# Both create the project virtualenv from pyproject.toml on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all lint clean bench-gpu

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "jaxcnn needs Python >= 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python train.py --config configs/digits_lenet.py --workdir runs/digits_lenet

# The default suite: fast (CI, every change). `make test-all` adds the slow end-to-end runs.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check jaxcnn tests configs bench train.py

# The GPU evidence (issue 16): `make bench-gpu` on the GPU machine (bench/RESULTS.md has the
# exact device commands), `make bench-gpu ARGS=--smoke` here (tiny sizes, same script).
bench-gpu:
	bash bench/gpu_suite.sh $(ARGS)

clean:
	rm -rf $(VENV) runs
