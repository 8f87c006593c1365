# The book's two commands: `make book` and `make test` (plus `make chapter`, `make bench`).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHAPTERS := cell_typing frequencies perturbation concepts stability probes
TEST_OUT := _build/test-chapters
# chapter runs in tests: no progress bars (their timings would differ between runs)
TEST_ENV := TQDM_DISABLE=1 PYTHONHASHSEED=0

.PHONY: install book test unit chapters-fast nbval chapter bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

## make book: execute every chapter with its default parameters and build HTML into _build/html
book: install
	$(VENV)/bin/jupyter-book build . --all
	@test -f _build/html/index.html && echo "book: _build/html/index.html"

## make test: unit tests, then every chapter executed with `fast` parameters and checked by nbval
test: install
	rm -rf $(TEST_OUT)
	$(TEST_ENV) $(PY) -m helpers.chapter --fast -o $(TEST_OUT) $(CHAPTERS)
	# the README's rerun on another labelled dataset, with parameters only
	$(TEST_ENV) $(PY) -m helpers.chapter cell_typing --fast -o $(TEST_OUT)/cell_typing_pbmc68k \
		-p dataset pbmc68k_reduced -p label_key bulk_labels -p layer null
	$(TEST_ENV) $(PY) -m pytest tests $(TEST_OUT)/*/*.ipynb --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout 600 -p no:cacheprovider -q

## make chapter NAME=cell_typing ARGS='-p dataset pbmc68k_reduced -p label_key bulk_labels'
chapter: install
	$(PY) -m helpers.chapter $(NAME) $(ARGS)

## make bench: speed ratios measured in one run (not timed tests)
bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build
