# The quick start: `make demo` runs the built-in demo, `make test` runs the tests.
# Both create .venv and install prtcore with every extra on first use.
VENV ?= .venv
BIN := $(VENV)/bin
UNAME := $(shell uname -s)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(UNAME),Linux)
	# The CPU build of torch; an unpinned torch would pull a CUDA build of several GB.
	$(BIN)/python -m pip install -q "torch==2.13.0"
endif
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	$(BIN)/python -m pip install -q -e examples/numpy_backend
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/prt demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

.PHONY: install demo test
