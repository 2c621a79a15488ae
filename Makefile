# The README's commands. `make demo` and `make test` both set up .venv first (once).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO := .cache/demo-collection

.PHONY: install install-peers demo test test-all lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,dev,lite,plots,serve,ray,onnx]'
	touch $@

# The libraries the benchmarks compare with (not needed by the tests, which skip without them). autofaiss pins
# numpy<2 and pandas<3 that it does not need: it goes in without its dependencies, which the extra lists.
install-peers: install
	$(PY) -m pip install --quiet -e '.[peers]'
	$(PY) -m pip install --quiet --no-deps 'autofaiss==2.18.0' 'embedding-reader>=1.8,<2'

demo: install
	$(VENV)/bin/simsearch index samples/caltech101 -c $(DEMO)
	$(VENV)/bin/simsearch query samples/queries/sunflower_0042.jpg -c $(DEMO) -k 5 --html $(DEMO)/results.html

test: install
	$(PY) -m pytest -q -m "not slow and not gpu"

test-all: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check simsearch indexes cli server tests benchmarks
	$(VENV)/bin/ruff format --check simsearch indexes cli server tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .mypy_cache
