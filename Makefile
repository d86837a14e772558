# One command each: `make run` (the daemon on config.example.yaml), `make test`, `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	mkdir -p inbox
	$(BIN)/smolvlm-watch run -c config.example.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m smolvlm_watch.testing demo demo

bench: $(STAMP)
	$(BIN)/python bench/throughput.py --quick

clean:
	rm -rf $(VENV) demo build *.egg-info
