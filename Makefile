# The two commands a fresh clone needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all fuzz bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The CPU backend's prebuilt attention kernels (backends/cpu/attention_lib.py), compiled once per install.
LIBSTAMP := $(VENV)/.cpu-lib
$(LIBSTAMP): $(STAMP) backends/cpu/attention.py backends/cpu/attention_lib.py backends/cpu/jit.py backends/cpu/mathapprox.py \
		backends/cpu/mlir_builder.py \
		backends/cpu/threads.py
	$(BIN)/python -m solder.backends.cpu.attention_lib build
	touch $(LIBSTAMP)

demo: $(LIBSTAMP)
	$(BIN)/python examples/demo.py

test: $(LIBSTAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

test-all: $(LIBSTAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider

# 1000 random programs for the CPU target and 1000 for Triton under its interpreter (a fresh hypothesis
# seed each run; SOLDER_FUZZ_SEED=N replays one), then which importer entries the programs reached.
fuzz: $(STAMP)
	SOLDER_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest -q tests/test_fuzz.py -p no:cacheprovider -s
	-$(BIN)/python -m tests.fuzz_coverage 1000

bench: $(LIBSTAMP)
	$(BIN)/python -m benchmarks.run --target cpu

clean:
	rm -rf $(VENV) build *.egg-info
