# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= work/data/doodles
RUN ?= work/runs/default
HOST ?= 127.0.0.1
PORT ?= 8000
# The first `make run` trains under this budget (data prepared, trained, exported and
# evaluated within it), so that the page is up a few minutes after typing it.
TIME_LIMIT ?= 60s

.PHONY: setup run test lint typecheck clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,transfer,postgres]'
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	@test -f $(DATA)/manifest.json || $(BIN)/imgclass data prepare --builtin doodles --out $(DATA) --overwrite
	@test -f $(RUN)/bundle/model.onnx || $(BIN)/imgclass train --data $(DATA) --out $(RUN) --time-limit $(TIME_LIMIT)
	@# int8 serves 2-3x faster; it is kept only when it is as accurate (else: the float one)
	@test $(RUN)/bundle-int8/model.onnx -nt $(RUN)/bundle/model.onnx \
		|| $(BIN)/imgclass quantize $(RUN)/bundle --data $(DATA) --out $(RUN)/bundle-int8 \
		|| { rm -rf $(RUN)/bundle-int8; echo "serving the float model"; }
	@served=$(RUN)/bundle; test -f $(RUN)/bundle-int8/model.onnx && served=$(RUN)/bundle-int8; \
	set -x; $(BIN)/imgclass evaluate $$served --data $(DATA) --report $(RUN)/report \
		&& $(BIN)/imgclass serve --model $$served --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

clean:
	rm -rf work .pytest_cache .mypy_cache .ruff_cache
