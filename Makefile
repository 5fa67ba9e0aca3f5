# Optimizers in PyTorch: `make lab` to study, `make test` to check everything.
# Both bootstrap .venv on first use; later runs install nothing unless pyproject.toml
# or constraints.txt changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: setup data bubblewrap chromium proxy lab test bench gpu-check lectures site release grade student-edition lint clean help

help:
	@echo "make lab       set up (first time only) and open the lectures in JupyterLab"
	@echo "make test      set up (first time only) and run the whole test suite"
	@echo "make bench     run the benchmarks, write benchmarks/RESULTS.md"
	@echo "make gpu-check on a GPU machine: every CUDA path checked, one table (build/gpu-check.md)"
	@echo "make lectures  execute every lecture at full size (one per core at a time), HTML with plots in build/lectures"
	@echo "make site      the course website: every lecture executed (full size; FAST=1 for fast mode), build/site/index.html"
	@echo "make release   (instructors) release the lab; make grade SUBMISSIONS=DIR grades a folder of uploads"
	@echo "make student-edition STUDENT_REPO=URL [SOLUTIONS=1]"
	@echo "               build/student-edition(.zip): what students get, without solutions or hidden tests"
	@echo "make lint      ruff check + format check"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.2"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) data bubblewrap

# The grader runs student code only inside a bubblewrap jail; install it when we can (CI runs as root).
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's bubblewrap for the grading jail ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "note: no bwrap; grading needs it (sudo apt-get install bubblewrap), or --unconfined"; fi; }

data: $(STAMP)
	@$(PY) -m course_utils.data fetch

# The browser test drives Debian's Chromium; install it when we can (CI runs as root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium + chromium-driver for the browser test ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: no chromium; the browser test will be skipped (apt-get install chromium chromium-driver)"; fi; }

# The JupyterHub test runs JupyterHub's proxy from npm; install it when we can (CI runs as root).
CHP_VERSION := 5.3.0
proxy:
	@command -v configurable-http-proxy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	      echo "Installing Debian's nodejs + npm for JupyterHub's proxy ..."; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; fi; \
	    echo "Installing configurable-http-proxy@$(CHP_VERSION) (npm) for the JupyterHub test ..."; \
	    npm install --global --silent configurable-http-proxy@$(CHP_VERSION) >/dev/null || \
	      echo "note: npm could not install configurable-http-proxy; the JupyterHub test will be skipped"; \
	  else echo "note: no configurable-http-proxy; the JupyterHub test will be skipped (npm install -g configurable-http-proxy)"; fi; }

lab: setup
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) notebooks/

test: setup chromium proxy
	@$(MAKE) --no-print-directory lint  # lint first: a style error fails in seconds, not after the suite
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py

# Every CUDA path (jail, hidden checks, parity, fast pipeline, GPU benchmark) in one table; needs a GPU.
gpu-check: setup
	$(PY) -m tools.gpu_check

lectures: setup
	$(PY) -m tools.notebooks execute --full --html build/lectures

site: setup
	$(PY) -m tools.site $(if $(FAST),--fast) --out build/site

# Instructors: release the lab, and grade a folder of downloaded submissions.
release: setup
	$(PY) -m autograder release

SUBMISSIONS ?= submissions
grade: setup
	$(PY) -m autograder run $(SUBMISSIONS) --csv grades.csv

# The public repository students open notebooks from (Colab badges, setup cells); a local git
# repository (a path or file:// URL) tries the edition end to end without GitHub.
STUDENT_REPO ?= https://github.com/optimizers-course/optimizers-in-pytorch-student
student-edition: setup
	$(PY) -m tools.student_edition --repo $(STUDENT_REPO) $(if $(SOLUTIONS),--solutions)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf build .pytest_cache
