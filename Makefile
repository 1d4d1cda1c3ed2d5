# The quick start: `make demo` runs the built-in demo, `make test` runs the tests.
# Both create .venv and install prtcore with every extra on first use, with the newest versions the resolver
# picks that day. `make test-oldest` runs the tests with the oldest supported versions (constraints/oldest.txt).
# `make test-extras` installs each backend's extra alone (mlx, torch; each with serve) into a fresh venv under
# build/extras/ and runs the quick demo and tests/extras there: neither extra may need the other's framework.
VENV ?= .venv
OLDEST ?= .venv-oldest
EXTRAS ?= build/extras
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

# One extra alone, in a venv made afresh on every run: make test-extra-mlx, make test-extra-torch.
test-extra-%:
	rm -rf $(EXTRAS)/$*
	python3 -m venv $(EXTRAS)/$*
	$(EXTRAS)/$*/bin/python -m pip install -q --upgrade pip
	$(if $(and $(TORCH_CPU),$(filter torch,$*)),$(EXTRAS)/$*/bin/python -m pip install -q $(TORCH_CPU))
	$(EXTRAS)/$*/bin/python -m pip install -q -e ".[$*,serve]" pytest
	OMP_NUM_THREADS=1 $(EXTRAS)/$*/bin/prt demo --quick --backend $* --out $(EXTRAS)/$*/prt-demo
	test -s $(EXTRAS)/$*/prt-demo/quick/$*/demo.png
	PRT_TEST_EXTRA_ALONE=$* OMP_NUM_THREADS=1 $(EXTRAS)/$*/bin/python -m pytest -q tests/extras

test-extras: test-extra-mlx test-extra-torch

.PHONY: install demo test test-oldest test-extras
