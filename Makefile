# One command each: `make run` (the daemon on config.example.yaml), `make test`, `make demo`.
# The venv is installed from the hashed locks (requirements.lock, requirements-test.lock), so a
# release on PyPI never changes what runs or is tested; `make lock` refreshes them on purpose.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

LATEST := .venv-latest
LATEST_STAMP := $(LATEST)/.installed

.PHONY: venv run test test-long test-latest check demo bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(PIP) --require-hashes -r requirements.lock
	$(PIP) --no-deps -e .
	touch $@

$(TEST_STAMP): requirements-test.lock pyproject.toml | $(BIN)/python
	$(PIP) --require-hashes -r requirements-test.lock
	$(PIP) --no-deps -e .
	touch $@ $(RUN_STAMP)

venv: $(TEST_STAMP)

run: $(RUN_STAMP)
	mkdir -p inbox
	$(BIN)/smolvlm-watch run -c config.example.yaml

check: $(TEST_STAMP)
	$(BIN)/ruff check smolvlm_watch plugins tests bench
	$(BIN)/mypy

test: check
	$(BIN)/python -m pytest -q

# The long variants of the reliability harness (a dozen kills, the whole fuzz budget); .ci/run runs
# them after `make test`.
test-long: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m long

# What `pip install .` gives a user: the newest releases pyproject.toml's ranges allow (torch held
# to the build on this disk by constraints.txt), then the smoke tests: live pickup after ready and
# in a new folder, a `process` run, a search, the web page. The lock alone once hid a dead watcher.
$(LATEST_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --disable-pip-version-check --upgrade --upgrade-strategy eager \
	  -c constraints.txt -e '.[test]'
	touch $@

test-latest: $(LATEST_STAMP)
	@echo "newest versions the ranges allow:"
	@$(LATEST)/bin/python -m pip list --format=freeze --disable-pip-version-check | grep -iE \
	  '^(torch|torchvision|transformers|tokenizers|pillow|pillow.heif|pyyaml|pluggy|structlog|av|watchdog|inotify.simple|pypdfium2|httpx|rawpy|prometheus.client|num2words|reverse.geocode|scipy)=='
	$(LATEST)/bin/python -m pytest -q -m smoke

demo: $(RUN_STAMP)
	$(BIN)/python -m smolvlm_watch.testing demo demo

bench: $(TEST_STAMP)
	$(BIN)/python bench/throughput.py --quick

# Resolve pyproject.toml's ranges (with constraints.txt) to exact, hashed pins. Needs the network.
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install -q pip-tools
	$(VENV)-lock/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links -c constraints.txt -o requirements.lock pyproject.toml
	$(VENV)-lock/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links -c constraints.txt --extra test -o requirements-test.lock pyproject.toml
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) $(VENV)-lock $(LATEST) demo build *.egg-info
