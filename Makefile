# Developer commands. `.ci/run` runs `make test` (the README's test command).
PYTHON ?= python
# The oldest pandas the drop-ins support (pyproject's floor); its tests run in their own venv.
PANDAS_OLDEST ?= 3.0.0
OLDEST_VENV := .venv-pandas-oldest
PANDAS_TESTS := tests/test_pandas_dropins.py tests/test_pandas_groupby.py tests/test_pandas_merge.py
# The suites run a second time with FERROBATCH_FORCE_SPILL=1: the kernels' and the pipeline's.
SPILL_TESTS := tests/test_sort.py tests/test_dedup.py tests/test_join.py tests/test_group_by.py \
	tests/test_group_by_stream.py tests/test_pipeline.py tests/test_executor_expressions.py \
	tests/test_executor_readers.py tests/test_tpch.py tests/test_spill.py tests/test_hardening.py

.PHONY: install build-dev lint test test-force-spill test-pandas-oldest bench

## install: the package (release build) with its test dependencies
install:
	$(PYTHON) -m pip install --quiet '.[test]'

## build-dev: a fast optimized build of the extension, in place (PYTHONPATH=python to use it)
build-dev:
	cargo build --profile quick --features python
	cp target/quick/libferrobatch.so python/ferrobatch/_core.abi3.so.tmp
	mv python/ferrobatch/_core.abi3.so.tmp python/ferrobatch/_core.abi3.so

## lint: rustfmt, clippy (with and without the bindings), ruff
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	$(PYTHON) -m pip install --quiet 'ruff>=0.5'
	$(PYTHON) -m ruff check python tests benches examples
	$(PYTHON) -m ruff format --check python tests

## test: everything CI checks: lint, Rust unit tests, install, pytest, oldest pandas
test: lint install
	cargo test
	$(PYTHON) -m pytest tests benches --benchmark-disable
	$(MAKE) test-force-spill
	$(MAKE) test-pandas-oldest

## test-force-spill: the kernel and pipeline suites again, every spillable operator spilling
test-force-spill:
	FERROBATCH_FORCE_SPILL=1 $(PYTHON) -m pytest -p no:cacheprovider $(SPILL_TESTS)

## test-pandas-oldest: the pandas drop-in tests against the oldest supported pandas
test-pandas-oldest:
	$(PYTHON) -m venv --clear $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet "pandas==$(PANDAS_OLDEST)" pytest hypothesis .
	$(OLDEST_VENV)/bin/python -m pytest -p no:cacheprovider $(PANDAS_TESTS)

## bench: install with the benchmark peers and run the benchmark on generated data
bench:
	$(PYTHON) -m pip install --quiet '.[bench]'
	ferrobatch-bench
