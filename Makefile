# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test install index browser bench eval clean

run: install
	$(VENV)/bin/qa build
	$(PY) app.py

test: install browser
	$(PY) -m pytest -q

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch lies on disk; installing it first keeps pip from pulling CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(INSTALLED)

# Debian's chromium for the browser tests (a test tool cannot download its own browser here).
browser:
	@test -x /usr/bin/chromium || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

index: install
	$(VENV)/bin/qa build

bench: install
	$(PY) -m benchmarks.bench

eval: install
	$(VENV)/bin/qa eval ../shared/eval/seed_questions.jsonl

clean:
	rm -rf vectorstore/v-* vectorstore/manifest.json vectorstore/.tmp-* .pytest_cache
