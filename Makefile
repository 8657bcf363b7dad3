# polyfuse: two commands from a fresh clone.
#   make train  -> create .venv, install polyfuse[dev], train the default AV-digits experiment
#   make test   -> create .venv, install polyfuse[dev], run the CPU test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: setup train test test-fast data clean

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changed (editable install: code edits need nothing).
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/polyfuse-train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

# Rebuild the embedded AV-digits dataset (needs espeak-ng and asterisk-core-sounds-en-wav).
data: $(STAMP)
	$(PY) scripts/build_avdigits.py --out data/avdigits

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
