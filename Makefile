# The two set-up commands of the README: `make demo` and `make test`. Both start from nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test chromium

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev,ray]'
	touch $@

# Browser tests drive Debian's Chromium (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

demo: $(VENV)/.installed
	$(VENV)/bin/datasetgan demo

# Lint and format check first (ruff, configured in pyproject.toml), then the default suite.
test: $(VENV)/.installed chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest
