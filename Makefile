# metarec — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-faust demo venv clean

# Create .venv and (re)install the project when pyproject.toml changes.
# torch is installed first, pinned, so that nothing pulls another (CUDA) build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Everything but the worker tests on the faust runtime (--runtime faust, not the default): under 15 minutes.
test: $(STAMP)
	-@bash deploy/install-promtool.sh
	$(PY) -m pytest -q -m "not faust"

# The worker tests again on the faust runtime (CI runs both targets).
test-faust: $(STAMP)
	$(PY) -m pytest -q -m faust

demo: $(STAMP)
	$(VENV)/bin/metarec demo

clean:
	rm -rf $(VENV) .pytest_cache reports
