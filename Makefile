# diffscm — make demo | make test | make data | make install
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install data demo test bench clean browser

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

# The explorer's browser test drives Debian's chromium through chromium-driver; install them where missing (as root,
# or with sudo). Where no package manager can, the test skips and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  command -v apt-get >/dev/null && $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null || \
	  echo "note: could not install chromium and chromium-driver; the browser test will skip"; }

test: data browser
	$(BIN)/python -m pytest

bench: data
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf outputs .pytest_cache
