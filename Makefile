# Quick start: `make demo` and `make test` set everything up on a fresh machine (Debian/Ubuntu, Python >= 3.10).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARM_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup toolchain demo test lint clean

setup: $(STAMP) toolchain

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	touch $@

# The Cortex-M cross compiler and emulator, from the distribution, only when missing.
toolchain:
	@command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null || \
	  ($(SUDO) apt-get update -q && \
	   $(SUDO) apt-get install -y -q --no-install-recommends $(ARM_PKGS))

demo: setup
	$(BIN)/python -m tte.demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf build out .pytest_cache
