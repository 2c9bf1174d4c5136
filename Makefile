# Likeness developer entry points. `make demo` and `make test` are the README's two commands.
PY      ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
# The comfyui tier needs torchvision, which needs the torch it was built for.
COMFY_VENV  ?= .venv-comfy
COMFY_TORCH ?= torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-comfyui demo doctor bench bench-batch lint

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q $(TORCH)
	$(VENV)/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

# Lint and formatting first (CI fails on them), then every tier: unit + reference here;
# the comfyui tier too when COMFYUI_PATH names a ComfyUI checkout.
test: setup lint
	$(VENV)/bin/python -m pytest -m "unit or reference" $(PYTEST_ARGS)
	@if [ -n "$$COMFYUI_PATH" ]; then $(MAKE) --no-print-directory test-comfyui; \
	else echo "comfyui tier skipped: COMFYUI_PATH is not set (point it at a ComfyUI checkout to run it)"; fi

test-fast: setup lint
	$(VENV)/bin/python -m pytest -m unit -q $(PYTEST_ARGS)

$(COMFY_VENV)/.installed: requirements.txt requirements-dev.txt requirements-browser.txt
	@test -n "$$COMFYUI_PATH" || { echo "set COMFYUI_PATH to a ComfyUI checkout"; exit 2; }
	$(PY) -m venv $(COMFY_VENV)
	$(COMFY_VENV)/bin/python -m pip install -q $(COMFY_TORCH)
	grep -viE '^(torch|torchvision|torchaudio)([<>=~! ]|$$)' "$$COMFYUI_PATH/requirements.txt" > $(COMFY_VENV)/comfy-requirements.txt
	$(COMFY_VENV)/bin/python -m pip install -q -r $(COMFY_VENV)/comfy-requirements.txt -r requirements.txt -r requirements-dev.txt -r requirements-browser.txt
	touch $@

test-comfyui: $(COMFY_VENV)/.installed
	$(COMFY_VENV)/bin/python -m pytest -m comfyui $(PYTEST_ARGS)

# The main job on the embedded default: detect, align, invert, edit, preview (smoke models when real ones are absent).
demo: setup
	$(VENV)/bin/python -m models.cli demo --out output/demo

doctor: setup
	$(VENV)/bin/python -m models.cli doctor

bench: setup
	$(VENV)/bin/python -m bench.bench_inversion
	$(VENV)/bin/python -m bench.bench_face
	$(VENV)/bin/python -m bench.bench_wplus_adapter

# Batch client scaling on simulated servers (127.0.0.1 only, at most 8, ~3 min; BENCH_ARGS=--quick: ~15 s).
bench-batch: setup
	$(VENV)/bin/python -m bench.bench_batch_scaling $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
