# Two commands for a fresh machine with Python 3.11+: `make demo` and `make test`.
# Both create the project virtualenv from pyproject.toml on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all test-lowest lint clean bench-gpu

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "jaxcnn needs Python >= 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxcnn train --config digits_lenet --workdir runs/digits_lenet

# The default suite: fast (CI, every change). `make test-all` adds the slow end-to-end runs.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

# The lowest allowed versions of the core dependencies (pyproject's lower bounds, pinned) in
# their own virtualenv, on a quick subset of the suite.
LOWEST := .venv-lowest
LOWEST_TESTS := tests/test_train_steps.py tests/test_train_checkpoint.py \
	tests/test_similarity_search.py tests/test_pretrained_weights.py tests/test_data_sources.py \
	tests/test_data_transforms.py tests/test_data_stream.py
test-lowest:
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip
	$(LOWEST)/bin/python -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print("\n".join(re.split(r"[,;]", d)[0].replace(">=", "==") for d in deps))' > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/constraints.txt '.[test]'
	$(LOWEST)/bin/python -m pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|flax|optax|orbax-checkpoint|numpy) '
	$(LOWEST)/bin/python -m pytest -q -n 2 -m "not slow" $(LOWEST_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check jaxcnn tests configs bench train.py

# The GPU evidence (issue 16): `make bench-gpu` on the GPU machine (bench/RESULTS.md has the
# exact device commands), `make bench-gpu ARGS=--smoke` here (tiny sizes, same script).
bench-gpu:
	bash bench/gpu_suite.sh $(ARGS)

clean:
	rm -rf $(VENV) $(LOWEST) runs
