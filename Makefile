# The two commands of the README, and the checks behind them.
.PHONY: setup demo test lint check clean wire-baseline

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
	@# The wire contract must not break what deployed peers speak: checked against the
	@# committed image of the last deployed contract (proto/wire-baseline.binpb, whatever the
	@# clone's depth; refresh it with `make wire-baseline` when a version ships), and against
	@# the previous commit when the clone has one.
	cd proto && ../.venv/tools/buf breaking --against wire-baseline.binpb
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then \
	  echo "cd proto && buf breaking --against HEAD~1"; \
	  cd proto && ../.venv/tools/buf breaking --against '../.git#ref=HEAD~1,subdir=proto'; \
	fi
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
	@# The Dockerfile (hadolint) and the Helm chart (helm lint, helm template for its three
	@# value sets, kubernetes-validate, checkov; about 10 s): scripts/check_deploy.sh.
	scripts/check_deploy.sh

check: test

# The image of the wire contract that `buf breaking` holds every later change to: run when
# a version of the contract is deployed, and commit proto/wire-baseline.binpb.
wire-baseline: setup
	cd proto && ../.venv/tools/buf build -o wire-baseline.binpb

clean:
	rm -rf .venv demo-federation .pytest_cache .mypy_cache .ruff_cache
