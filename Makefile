# The two commands of the README, and the checks behind them.
.PHONY: setup demo test lint check clean

BIN := .venv/bin

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/liaison demo --dir demo-federation

# The whole test suite: generated-code check, proto and Rego lint, Rego tests with
# coverage, ruff, mypy, import contracts, then pytest (unit, conformance on both engines,
# federation) with a throwaway PostgreSQL (scripts/postgres.sh) that is stopped and deleted
# afterwards, even when a test fails or the run is interrupted (one you started yourself is
# left running).
# Without PostgreSQL the session fails, never skips.
test: setup lint
	@scripts/postgres.sh url >/dev/null 2>&1 && mine=0 || mine=1; \
	url=$$(scripts/postgres.sh start) || exit $$?; \
	[ $$mine = 0 ] || trap 'scripts/postgres.sh stop' EXIT; trap 'exit 130' INT TERM; \
	echo "make test: PostgreSQL test cluster up ($${url##*@})"; \
	LIAISON_TEST_POSTGRES_URL="$$url" LIAISON_REQUIRE_POSTGRES=1 $(BIN)/pytest

lint: setup
	$(BIN)/python scripts/gen_protos.py --check
	cd proto && ../.venv/tools/buf lint
	@# The wire contract against the previous commit: what peers already speak must still
	@# parse (needs that commit: a clone with history, not --depth 1).
	cd proto && ../.venv/tools/buf breaking --against '../.git#ref=HEAD~1,subdir=proto'
	.venv/tools/opa fmt --list --fail policies
	.venv/tools/opa check --strict policies
	.venv/tools/opa test policies
	@# The coverage report goes to stdout, which would bury failures; they showed above.
	.venv/tools/opa test --coverage --threshold 90 policies > /dev/null
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy node federation benchmarks scripts tests
	@# Who may import whom: the contracts in pyproject.toml's [tool.importlinter].
	$(BIN)/lint-imports --no-logo

check: test

clean:
	rm -rf .venv demo-federation .pytest_cache .mypy_cache .ruff_cache
