# diffscm — make demo | make test | make data | make install
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install data demo test bench clean

$(STAMP): pyproject.toml requirements.lock requirements-test.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11), "diffscm needs Python 3.11"'
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-test.lock
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(BIN)/diffscm data mnist

demo: data
	$(BIN)/diffscm demo --out outputs/demo --overwrite

test: data
	$(BIN)/python -m pytest

bench: data
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf outputs .pytest_cache
