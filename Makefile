# `make demo` and `make test` are the two entry points; both install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-lmms install-deepspeed test test-slow test-deepspeed test-browser test-realsize lint demo realistic bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[train,dev]"
	touch $(STAMP)

install: $(STAMP)

# lmms-eval for the MEGC tasks (megc_vqa/lmms_tasks): without its declared dependencies, which would
# downgrade protobuf and python-dateutil; the `lmms` extra lists what it really imports.
install-lmms: install
	$(PY) -m pip install -e ".[lmms]"
	$(PY) -m pip install --no-deps lmms-eval==0.7.3 qwen-vl-utils==0.0.14 pytablewriter==1.2.1 \
		DataProperty==1.1.1 mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 \
		typepy==1.3.5 chardet==6.0.0.post1

# DeepSpeed for recipes/accelerate/deepspeed_zero{2,3}.yaml (the `deepspeed` extra).
install-deepspeed: install
	$(PY) -m pip install -e ".[deepspeed]"

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow --timeout 1800

# ZeRO-2 and ZeRO-3 through the shipped accelerate configs with 2 CPU processes (gloo), adapters
# compared with a single-process run (a few minutes).
test-deepspeed: install-deepspeed
	$(PY) -m pytest -q -m slow tests/test_deepspeed.py --timeout 3600

# report.html in headless Chromium (Debian's package; installed when missing, which needs root).
test-browser: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) -m pytest -q -m slow tests/test_html_report.py -k chromium --timeout 600

# Every shipped GPU recipe at real model size (random weights) on the CPU, one recipe at a time.
test-realsize: install
	$(PY) -m pytest -q -m realsize --timeout 7200 -s

lint: install
	$(VENV)/bin/ruff check megc_vqa data_prep recipes eval tests benchmarks
	$(VENV)/bin/ruff format --check megc_vqa data_prep recipes eval tests benchmarks

# `make demo SEED=n`: another seed of the synthetic data and training, in its own folder (runs/demo-seedN).
# `make demo MODEL=tiny-internvl`: another family's tiny model (runs/demo-tiny-internvl).
SEED ?= 0
MODEL ?=
DEMO_OUT ?= runs/demo$(if $(MODEL),-$(MODEL))$(if $(filter-out 0,$(SEED)),-seed$(SEED))
demo: install
	$(PY) -m megc_vqa.demo --out $(DEMO_OUT) --seed $(SEED) $(if $(MODEL),--model $(MODEL))

# Issue 22's bars on release-like synthetic data, with the recipes' chosen visual defaults (docs/ablation.md),
# on seeds that chose nothing: coarse/fine UF1 over blanked pixels, the spotter over the model-free baseline.
realistic: install
	$(PY) -m megc_vqa.realistic --out runs/realistic

clean:
	rm -rf runs .pytest_cache .ruff_cache
