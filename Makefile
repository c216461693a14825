# Two entry points for a fresh clone: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB := extensions/nb2prod-lab
LABEXT := nb2prod/jupyter/labextension
LAB_SOURCES := $(LAB)/package.json $(LAB)/yarn.lock $(LAB)/tsconfig.json $(LAB)/.yarnrc.yml \
	$(wildcard $(LAB)/src/*.ts) $(wildcard $(LAB)/style/*)
LAB_STAMP := $(LABEXT)/.built

.PHONY: setup demo test lint bench clean

setup: $(STAMP) $(LAB_STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The JupyterLab panel: built when its sources or lock file changed (node from the machine,
# jlpm from JupyterLab in the venv, packages from the npm registry at the locked versions),
# into nb2prod/jupyter/labextension, which the wheel ships; the venv links to it.
$(LAB_STAMP): $(LAB_SOURCES) | $(STAMP)
	cd $(LAB) && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm install --immutable
	cd $(LAB) && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm build:prod
	rm -rf $(VENV)/share/jupyter/labextensions/nb2prod-lab
	mkdir -p $(VENV)/share/jupyter/labextensions
	ln -s $(CURDIR)/$(LABEXT) $(VENV)/share/jupyter/labextensions/nb2prod-lab
	touch $(LAB_STAMP)

demo: setup
	$(BIN)/nb2prod demo

lint: setup
	$(BIN)/ruff check nb2prod tests bench
	$(BIN)/ruff format --check nb2prod tests bench
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .nb2prod .pytest_cache $(LABEXT) $(LAB)/node_modules $(LAB)/lib
