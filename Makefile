# The two commands of the README, and the checks behind them.
.PHONY: setup demo test lint check clean

BIN := .venv/bin

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/liaison demo --dir demo-federation

# The whole test suite: generated-code check, proto lint, ruff, mypy, then pytest.
test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/python scripts/gen_protos.py --check
	cd proto && ../.venv/tools/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy node federation benchmarks scripts

check: test

clean:
	rm -rf .venv demo-federation .pytest_cache .mypy_cache .ruff_cache
