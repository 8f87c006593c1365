# The book's two commands: `make book` and `make test` (plus `make chapter`, `make bench`).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_OUT := _build/test-chapters
REF_DIR := tests/reference
# chapter runs in tests: no progress bars (their timings would differ between runs)
TEST_ENV := TQDM_DISABLE=1 PYTHONHASHSEED=0

.PHONY: install book test reference chapter bench clean

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

## make test: every reference notebook re-executed and compared by nbval (a changed
## printed number fails), then the unit tests and the checks on what those runs wrote
test: install
	rm -rf $(TEST_OUT)
	$(TEST_ENV) $(PY) -m pytest $(REF_DIR) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout 600 -p no:cacheprovider -q
	$(TEST_ENV) $(PY) -m pytest tests --ignore=$(REF_DIR) -p no:cacheprovider -q

## make reference: regenerate tests/reference/*.ipynb (fast preset) on purpose; the diff
## of the notebooks is the review of what changed
reference: install
	$(TEST_ENV) $(PY) -m helpers.chapter --reference

## make chapter NAME=cell_typing ARGS='-p dataset pbmc68k_reduced -p label_key bulk_labels'
chapter: install
	$(PY) -m helpers.chapter $(NAME) $(ARGS)

## make bench: speed ratios measured in one run (not timed tests)
bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build
