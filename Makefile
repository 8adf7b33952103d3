# The one place the project's commands live; CI calls `make test` through .ci/run.
SHELL := /bin/bash
UV := python3 -m uv
VENV := .venv
NODE_DIR := tests/node
# Node packages, each folder from its package-lock.json: the interop peers, bull-board and the
# Node order client
NODE_DIRS := $(NODE_DIR) tools/bull-board clients/node

.PHONY: install system-deps python-deps node-deps bull-board schemas run test test-unit test-money test-stress test-distributed lint format typecheck bench demo clean

install: system-deps python-deps node-deps

# Debian packages the embedded engine needs, PostgreSQL for the tests' throwaway clusters, and
# chromium for the dashboard's browser test (we are root on these machines).
system-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@systemctl disable --now postgresql >/dev/null 2>&1 || true
	@command -v redis-server >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@systemctl disable --now redis-server >/dev/null 2>&1 || true
	@command -v chromium >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

python-deps:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet --compile-bytecode
	@# bytecode for our packages: Temporal's sandbox re-imports workflow modules on every run
	@$(VENV)/bin/python -m compileall -q orderflow bridge payments mail activities workflows workers app

# npm ci again when the lock is newer than what was installed (node_modules/.package-lock.json)
node-deps:
	@for dir in $(NODE_DIRS); do \
	  if [ ! -f $$dir/node_modules/.package-lock.json ] || \
	     [ $$dir/package-lock.json -nt $$dir/node_modules/.package-lock.json ]; then \
	    npm ci --prefix $$dir --silent --no-audit --no-fund || exit 1; fi; \
	done

# bull-board, the Node dashboard of BullMQ queues, over the bridge queues (optional; needs Redis
# up, e.g. `make run` in another shell): http://127.0.0.1:3000/ (BULL_BOARD_PORT, BULL_BOARD_HOST;
# beyond loopback only with a real ORDERFLOW_ADMIN_PASSWORD)
bull-board: python-deps node-deps
	@config="$$($(VENV)/bin/python tools/bull-board/config.py)" && \
	  BULL_BOARD_CONFIG="$$config" node tools/bull-board/server.js

# the JSON Schemas of the wire types (orderflow/contracts/wire.py), committed; tests/test_wire.py
# fails when they differ from the code
schemas: python-deps
	$(VENV)/bin/python -m orderflow.contracts.wire contracts/schemas

run: install
	$(VENV)/bin/orderflow run

test: install lint
	tools/backtrace-on-crash $(VENV)/bin/pytest -q --durations=20

# the fast tier alone: workflows with stubbed activities on the time-skipping dev server (no Redis)
test-unit: python-deps
	$(VENV)/bin/pytest -q tests/unit

# the stateful money test (tests/money_machine.py) for about ten minutes: many more examples and
# steps on both tiers, shrinking a failure to its shortest sequence (`make test` runs a minute)
MONEY_EXAMPLES ?= 150
MONEY_STEPS ?= 25
test-money: python-deps
	ORDERFLOW_MONEY_EXAMPLES=$(MONEY_EXAMPLES) ORDERFLOW_MONEY_STEPS=$(MONEY_STEPS) \
	  ORDERFLOW_MONEY_SHRINK=1 ORDERFLOW_MONEY_RANDOM=1 \
	  $(VENV)/bin/pytest -q -p no:cacheprovider --runxfail \
	  tests/unit/test_money_stateful.py tests/test_money_stateful.py

# the whole suite N times in a row, stopping at the first failure; LOAD=1 keeps one core busy
N ?= 5
LOAD ?= 0
test-stress: install
	@load=""; \
	if [ "$(LOAD)" != 0 ]; then yes > /dev/null & load=$$!; echo "busy loop on one core (pid $$load)"; fi; \
	trap 'if [ -n "$$load" ]; then kill $$load; fi' EXIT; \
	for i in $$(seq 1 $(N)); do \
	  echo "== run $$i of $(N)"; \
	  $(VENV)/bin/pytest -q -p no:cacheprovider || exit 1; \
	done

# only the many-process tests (also part of `make test`), printing the multi-process run's figures
test-distributed: install
	$(VENV)/bin/pytest -q -s tests/test_distributed.py tests/test_migrations.py

# ruff, the layer contracts (import-linter, in pyproject.toml) and mypy; `make test` runs it first
lint: python-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

format: python-deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: python-deps
	$(VENV)/bin/mypy

demo: python-deps
	$(VENV)/bin/orderflow demo

bench: install
	$(VENV)/bin/python bench/summary.py

clean:
	rm -rf data .pytest_cache
