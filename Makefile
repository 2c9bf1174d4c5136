# Likeness developer entry points. `make demo` and `make test` are the README's two commands.
PY      ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
# The comfyui tier needs torchvision, which needs the torch it was built for.
COMFY_VENV  ?= .venv-comfy
COMFY_TORCH ?= torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-comfyui demo doctor bench bench-quick bench-gpu bench-comfy bench-batch lint

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

# Benchmarks (README "Performance"). OFFICIAL = a folder with the official checkouts encoder4editing,
# stylegan2-pytorch and w-plus-adapter (git clone them there): then every row is a ratio ours / official.
OFFICIAL ?=
BENCH_OUT ?= output/bench
BENCH_PY ?= $(VENV)/bin/python
OFFICIAL_ARG = $(if $(OFFICIAL),--official $(OFFICIAL))

bench: setup
	$(BENCH_PY) -m bench.side_by_side $(OFFICIAL_ARG) --json $(BENCH_OUT)/cpu.json --markdown $(BENCH_OUT)/cpu.md
	$(BENCH_PY) -m bench.bench_face

# Every benchmark on CUDA, fp32 and fp16/bf16, synchronised and warmed up; one JSON and one markdown table.
# BENCH_PY must have a CUDA build of torch (and diffusers), e.g. BENCH_PY=/path/to/venv/bin/python.
bench-gpu:
	$(BENCH_PY) -m bench.side_by_side --device cuda --precision all $(OFFICIAL_ARG) \
		--json $(BENCH_OUT)/gpu.json --markdown $(BENCH_OUT)/gpu.md

# Reduced sizes, one round, CPU: proves the benchmark code still runs (the unit tier runs it too:
# tests/unit/test_bench_side_by_side.py; about 35 s on 2 cores).
bench-quick: setup
	$(VENV)/bin/python -m bench.side_by_side --quick --json $(BENCH_OUT)/quick.json --markdown $(BENCH_OUT)/quick.md

# The W+ patch inside ComfyUI's own UNet (needs COMFYUI_PATH and the smoke models in SMOKE_DIR).
SMOKE_DIR ?= $(or $(LIKENESS_SMOKE_DIR),smoke_models)
bench-comfy: $(COMFY_VENV)/.installed
	$(COMFY_VENV)/bin/python -m bench.bench_comfy_patch --models-dir $(SMOKE_DIR) --json $(BENCH_OUT)/comfy_patch.json

# Batch client scaling on simulated servers (127.0.0.1 only, at most 8, ~3 min; BENCH_ARGS=--quick: ~15 s).
bench-batch: setup
	$(VENV)/bin/python -m bench.bench_batch_scaling $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
