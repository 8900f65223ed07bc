# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test install index browser bench eval train clean

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
	$(PY) -m pip install -q -e '.[test,milvus]'
	touch $(INSTALLED)

# Debian's chromium for the browser tests (a test tool cannot download its own browser here),
# without its recommended packages; fonts-liberation gives the screenshots readable text.
browser:
	@test -x /usr/bin/chromium || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing Debian's chromium and fonts-liberation for the browser tests"; \
		$$SUDO apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium fonts-liberation >/dev/null; }

index: install
	$(VENV)/bin/qa build

bench: install
	$(PY) -m benchmarks.bench

# Rebuild the shipped reader from ../shared/training (about 4 hours on 2 cores; each stage
# resumes from its last checkpoint): the span stage and its continuation, the no-answer
# stage, the hard-negative stage, export to int8 ONNX, calibration on the validation split.
train: install
	$(PY) -m pip install -q -e '.[train]'
	$(PY) -m training.train --steps 2687
	$(PY) -m training.train --work training/work-stage1b --init training/work/final \
		--seed 1 --lr 5e-5 --steps 2000
	$(PY) -m training.train --work training/work-stage2b --init training/work-stage1b/final \
		--mixture no-answer --lr 3e-5 --steps 598
	$(PY) -m training.train --work training/work-stage3 --init training/work-stage2b/final \
		--mixture hard-negatives --lr 3e-5 --steps 800
	$(PY) -m training.train --work training/work-stage5 --init training/work-stage3/final \
		--mixture perturbations --seed 3 --lr 3e-5 --steps 1000
	$(PY) -m training.export --work training/work-stage5
	$(PY) -m training.calibrate

eval: install
	$(VENV)/bin/qa eval ../shared/eval/seed_questions.jsonl

clean:
	rm -rf vectorstore/v-* vectorstore/manifest.json vectorstore/.tmp-* .pytest_cache
