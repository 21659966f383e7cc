# The README's two commands: `make demo` runs the system, `make test` runs the tests.
# Both set themselves up on a fresh Debian machine with only python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1


.PHONY: demo agent-demo test lint typecheck unit bench bench-quick lock clean

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is needed ($(PYTHON) is older)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ echo "'$(PYTHON) -m venv' failed; on Debian: apt-get install -y python3-venv"; exit 1; }
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[server,test]'
	@touch $(STAMP)

## demo: the whole system on this machine — server on SQLite (data/demo), a demo account and
## node, a real agent streaming this machine's health; prints the URLs and the demo API key
# (PYTHONDONTWRITEBYTECODE: the agent writes no files, not even Python's bytecode cache.)
demo: $(STAMP)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/oneconnect-server demo

## agent-demo: only the agent, standalone, printing its alert events as JSON lines
agent-demo: $(STAMP)
	PYTHONDONTWRITEBYTECODE=1 ONECONNECT_AGENT_INTERVAL=$${ONECONNECT_AGENT_INTERVAL:-2} \
		$(BIN)/oneconnect-agent run --config deploy/config/demo.toml

## test: lint, type-check and run the whole test suite
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	# Two workers (most tests wait on sockets and disks); the browser tests after, on their own.
	$(BIN)/pytest -n 2 --dist loadfile --ignore=tests/dashboard
	$(BIN)/pytest tests/dashboard

## bench: full benchmarks (figures and ratios against a baseline measured in the same run)
bench: $(STAMP)
	$(BIN)/python -m bench.agent_overhead
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.alert_latency
	$(BIN)/python -m bench.storage
	$(BIN)/python -m bench.dashboard

bench-quick: $(STAMP)
	$(BIN)/python -m bench.agent_overhead --quick
	$(BIN)/python -m bench.ingest --quick
	$(BIN)/python -m bench.fanout --quick
	$(BIN)/python -m bench.alert_latency --quick
	$(BIN)/python -m bench.storage --quick
	$(BIN)/python -m bench.dashboard --quick

## lock: re-pin requirements/constraints.txt from a fresh resolution
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install -q -e '.[server,test]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^oneconnect-alert' \
		> requirements/constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
