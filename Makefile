# Two entry points: `make repro` (the pipeline on the embedded default) and `make test`.
SHELL := /bin/bash
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test install lock clean

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	$(PY) -m pytest

install: $(STAMP)

# Reinstall whenever the lock file or the package metadata changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the pins from pyproject.toml in a scratch venv (needs the package registries).
lock:
	rm -rf /tmp/harness-lock && python3 -m venv /tmp/harness-lock
	/tmp/harness-lock/bin/pip install --quiet torch==2.13.0
	/tmp/harness-lock/bin/pip install --quiet -c <(echo torch==2.13.0) .
	( head -2 requirements.lock; /tmp/harness-lock/bin/pip freeze --exclude minionerec-audit \
	  | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' ) > requirements.lock.new && mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .dvc/cache .dvc/tmp data models reports/predictions
