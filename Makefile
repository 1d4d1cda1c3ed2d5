# The quick start: `make demo` runs the built-in demo, `make test` runs the tests.
# Both create .venv and install prtcore with every extra on first use, with the newest versions the resolver
# picks that day. `make test-oldest` runs the tests with the oldest supported versions (constraints/oldest.txt).
VENV ?= .venv
OLDEST ?= .venv-oldest
UNAME := $(shell uname -s)
# The CPU build of torch on Linux; an unpinned torch would pull a CUDA build of several GB.
TORCH_CPU := $(if $(filter Linux,$(UNAME)),"torch==2.13.0",)

define install
	python3 -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(if $(TORCH_CPU),$(1)/bin/python -m pip install -q $(TORCH_CPU))
	$(1)/bin/python -m pip install -q $(2) -e ".[all,dev]"
	$(1)/bin/python -m pip install -q $(2) -e examples/numpy_backend
	$(1)/bin/prt env
	touch $@
endef

$(VENV)/.installed: pyproject.toml
	$(call install,$(VENV),)

$(OLDEST)/.installed: pyproject.toml constraints/oldest.txt
	$(call install,$(OLDEST),-c constraints/oldest.txt)

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/prt demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -q

.PHONY: install demo test test-oldest
