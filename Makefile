# The two set-up commands of README.md: `make run` and `make test`.
# Both create or reuse .venv, install torch==2.13.0 first (the CPU wheel pip finds on this
# machine kind; any other torch pulls a multi-GB CUDA build), then the project, and are
# idempotent: a second call only re-installs when pyproject.toml or this file changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
SAT_VERSION := 0.0.20
# Debian packages the runtime and the tests need: PortAudio for sounddevice, JACK (dummy
# driver) for the real-time audio tests, fluidsynth with a GM soundfont and the CC0
# sonic-pi-samples for the data pipeline (lmdm-bridge data, tests/test_data.py).
DEBIAN_PACKAGES := libportaudio2 jackd2 fluidsynth fluid-soundfont-gm sonic-pi-samples
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# The default corpus also renders with these soundfonts (configs/data/default.toml).
DATA_PACKAGES := timgm6mb-soundfont musescore-general-soundfont-small

.PHONY: run test test-fast setup debian clean default-model

run: setup
	$(BIN)/lmdm-bridge run

test: setup
	$(BIN)/ruff check lmdm_bridge export tests
	$(BIN)/python -m pytest

# From nothing to the embedded default bundle: data, codec, base, LMDM, ARC, export, eval.
# Hours on 2 CPU cores; re-running resumes where it stopped (scripts/default-model.sh).
default-model: setup
	@$(MAKE) --no-print-directory debian DEBIAN_PACKAGES="$(DATA_PACKAGES)"
	LMDM=$(BIN)/lmdm-bridge sh scripts/default-model.sh

# Everything but the slow (sao-small geometry) tests.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

setup: debian $(STAMP)

# Installs missing Debian packages when running as root; otherwise only says what is missing.
debian:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "note: missing Debian packages:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[export,train,dev]"
	# stable-audio-tools is the parity reference of the tests only. It pins torch 2.7.1 and
	# declares Python <3.11, so it goes in without its dependencies; torchaudio's native
	# libraries need CUDA here and are removed (nothing we call uses them).
	$(BIN)/pip install -q --no-deps --ignore-requires-python stable-audio-tools==$(SAT_VERSION) torchaudio==2.11.0
	rm -f $(VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	$(BIN)/pip install -q einops einops-exts alias-free-torch==0.0.6 PyWavelets torchsde scipy \
		pytorch_lightning huggingface_hub
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$(TORCH_VERSION)') else 'torch ' + v + ' was installed instead of $(TORCH_VERSION)')"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
