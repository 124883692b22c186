# medft — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOGS   ?= $(or $(MEDFT_LOG_DIR),logs)
NOW    := $(shell date +%Y-%m-%d_%H-%M-%S)
MODES  ?= layernorm,ffn,attention,lora,full
PAPER_CELLS := blip_vqa_rad blip_slake blip_path_vqa llava_vqa_rad llava_slake llava_path_vqa llava_mimic_cxr
comma  := ,
cells   = $(subst $(eval) ,$(comma),$(addprefix $(1)/,$(PAPER_CELLS)))

.DEFAULT_GOAL := help
.PHONY: help install train test sweep paper paper-tiny bench clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv: torch==2.13.0 (CPU) first, then medft (editable) and its pinned deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

train: install ## Train the embedded default: tiny BLIP on the demo set, norm layers only
	$(BIN)/medft train +tune=layernorm $(ARGS)

test: install ## Run the test suite
	$(BIN)/python -m pytest -q $(ARGS)

sweep: install ## Every tune mode on the demo set with the tiny model, then the report table and plot
	@# the report is written even when jobs failed; then the target fails with the sweep's status
	status=0; $(BIN)/medft train -m tune=frozen,layernorm,bitfit,lora,attention,ffn,full hydra.sweep.dir=$(LOGS)/sweeps/$(NOW) $(ARGS) || status=$$?; \
	$(BIN)/medft report $(LOGS)/sweeps/$(NOW); exit $$status

paper: install ## The study's grid (configs/experiment/paper/): GPUs, data roots and checkpoints in configs/local/default.yaml
	@# the report is written even when jobs failed; then the target fails with the sweep's status
	status=0; $(BIN)/medft train -m experiment=$(call cells,paper) tune=$(MODES) hydra.sweep.dir=$(LOGS)/paper/$(NOW) $(ARGS) || status=$$?; \
	$(BIN)/medft report $(LOGS)/paper/$(NOW); exit $$status

paper-tiny: install ## The same grid on tiny models and generated fixtures: proves the wiring on CPU
	$(BIN)/python scripts/paper_fixtures.py
	@# the report is written even when jobs failed; then the target fails with the sweep's status
	status=0; $(BIN)/medft train -m experiment=$(call cells,paper_tiny) tune=$(MODES) hydra.sweep.dir=$(LOGS)/paper-tiny/$(NOW) $(ARGS) || status=$$?; \
	$(BIN)/medft report $(LOGS)/paper-tiny/$(NOW); exit $$status

bench: install ## Two demo runs side by side vs one alone, then every tune mode on a ~70M-param BLIP on CPU: step time, memory, checkpoint bytes (~10 min; ARGS="--parts concurrency" for the first part)
	$(BIN)/python scripts/bench.py $(ARGS)

clean: ## Remove run outputs (keeps .venv)
	rm -rf logs outputs multirun .pytest_cache
