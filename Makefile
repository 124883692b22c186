# medft — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install train test sweep clean

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

sweep: install ## Every tune mode on the demo set (multirun)
	$(BIN)/medft train -m tune=layernorm,ffn,attention,lora,bitfit,full $(ARGS)

clean: ## Remove run outputs (keeps .venv)
	rm -rf logs outputs multirun .pytest_cache
