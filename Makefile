# Two commands: `make demo` and `make test`. Each builds .venv from nothing if it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch must be installed before anything that depends on torch,
# otherwise pip resolves an open range to a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test install clean-venv

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[test,demo]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/voxsam demo --out demo_output

test: install
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
