# The two commands of the README, and the checks behind them.
.PHONY: setup demo test lint check clean

BIN := .venv/bin

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/liaison demo --dir demo-federation

# The whole test suite: generated-code check, proto and Rego lint, Rego tests with
# coverage, ruff, mypy, then pytest (unit, conformance on both engines, federation).
test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/python scripts/gen_protos.py --check
	cd proto && ../.venv/tools/buf lint
	.venv/tools/opa fmt --list --fail policies
	.venv/tools/opa check --strict policies
	.venv/tools/opa test --coverage --threshold 90 policies > /dev/null
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy node federation benchmarks scripts

check: test

clean:
	rm -rf .venv demo-federation .pytest_cache .mypy_cache .ruff_cache
