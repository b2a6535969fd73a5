# Two commands do everything: `make demo` and `make test`. Both create .venv and install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LAKE   ?= lakehouse/demo

.PHONY: install demo test test-unit bench clean

$(STAMP): setup.py
	@echo "==> creating $(VENV) and installing lakerag (first time takes a few minutes)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> torch CPU wheel first, so sentence-transformers does not pull a CUDA build"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[local,ml,test,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	@echo "==> 1/2 ingesting the bundled corpus (data/corpus) into bronze on the embedded Sail engine"
	$(VENV)/bin/lakerag ingest-bronze --landing data/corpus --lake-root $(LAKE)
	@echo "==> 2/2 parsing bronze PDFs into silver sections and chunks"
	$(VENV)/bin/lakerag build-silver --lake-root $(LAKE)

test: install
	@echo "==> running the whole suite (unit + slow end-to-end tests)"
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) bench/engine_start.py
	$(PY) bench/silver.py

clean:
	rm -rf lakehouse .pytest_cache
