# medft — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOGS   ?= $(or $(MEDFT_LOG_DIR),logs)
NOW    := $(shell date +%Y-%m-%d_%H-%M-%S)
MODES  ?= layernorm,ffn,attention,lora,full
# make sweep: every tune mode but prefix (BLIP has none), in medft.tuning.MODE_ORDER (read when the sweep runs)
SWEEP_MODES = $(shell $(BIN)/python -c "from medft.tuning import MODE_ORDER; print(','.join(m for m in MODE_ORDER if m != 'prefix'))")
# make study: STUDY_JOBS jobs at a time, one thread each (2 on a 2-core machine)
STUDY_JOBS ?= 2
STUDY_LAUNCH = hydra/launcher=joblib hydra.launcher.n_jobs=$(STUDY_JOBS)
# make test: TEST_JOBS pytest-xdist workers, one torch thread each, a test file per worker at a time
TEST_JOBS ?= 2
PAPER_CELLS := blip_vqa_rad blip_slake blip_path_vqa llava_vqa_rad llava_slake llava_path_vqa llava_mimic_cxr
# make paper only (no tiny twins in configs/experiment/paper_tiny/ yet): the image-text-to-text models at full size
IMAGE_TEXT_CELLS := medgemma_vqa_rad medgemma_slake medgemma_path_vqa lingshu_vqa_rad lingshu_slake lingshu_path_vqa medvlm_r1_vqa_rad medvlm_r1_slake medvlm_r1_path_vqa
comma  := ,
cells   = $(subst $(eval) ,$(comma),$(addprefix $(1)/,$(or $(2),$(PAPER_CELLS))))

.DEFAULT_GOAL := help
.PHONY: help install train test sweep study study-report paper paper-tiny bench clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv: torch==2.13.0 (CPU) first, then medft (editable) and its pinned deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

train: install ## Fine-tune the embedded pretrained Med-VLM (blip_med, built on first use) on a shifted target domain, norm layers only
	$(BIN)/medft train +tune=layernorm model=blip_med dataset=demo_ct $(ARGS)

test: install ## Run the test suite (TEST_JOBS=2 workers; TEST_JOBS=0 runs it in one process)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

sweep: install ## Every tune mode on the demo set with the tiny BLIP (prefix: tiny LLaVA, beside its layernorm and lora), then the report
	@# the report is written even when jobs failed; then the target fails with the sweeps' status
	status=0; $(BIN)/medft train -m tune=$(SWEEP_MODES) hydra.sweep.dir=$(LOGS)/sweeps/$(NOW) $(ARGS) || status=$$?; \
	$(BIN)/medft train -m model=llava_tiny tune=layernorm,prefix,lora hydra.sweep.dir=$(LOGS)/sweeps/$(NOW) $(ARGS) || status=$$?; \
	$(BIN)/medft report $(LOGS)/sweeps/$(NOW); exit $$status

study: install ## The study in miniature (docs/study.md): every tune mode but prefix x 3 seeds (each its own pretrained draw, built on first use) x 2 data fractions on demo_ct (+ random-init control), then the report and findings.csv
	@# the report is written even when jobs failed; then the target fails with the sweeps' status
	status=0; OMP_NUM_THREADS=1 $(BIN)/medft train -m experiment=study $(STUDY_LAUNCH) hydra.sweep.dir=$(LOGS)/study/$(NOW) $(ARGS) || status=$$?; \
	OMP_NUM_THREADS=1 $(BIN)/medft train -m experiment=study_random $(STUDY_LAUNCH) hydra.sweep.dir=$(LOGS)/study/$(NOW) $(ARGS) || status=$$?; \
	$(BIN)/medft report $(LOGS)/study/$(NOW) || status=$$?; \
	echo "study: $(LOGS)/study/$(NOW)"; exit $$status

study-report: install ## The study in miniature, report half (docs/study_report.md): every tune mode but prefix x 3 seeds (each its own pretrained report writer, built on first use) x 2 data fractions on demo_report_ct (+ random-init control), then the report and findings.csv
	@# the report is written even when jobs failed; then the target fails with the sweeps' status
	status=0; OMP_NUM_THREADS=1 $(BIN)/medft train -m experiment=study_report $(STUDY_LAUNCH) hydra.sweep.dir=$(LOGS)/study-report/$(NOW) $(ARGS) || status=$$?; \
	OMP_NUM_THREADS=1 $(BIN)/medft train -m experiment=study_report_random $(STUDY_LAUNCH) hydra.sweep.dir=$(LOGS)/study-report/$(NOW) $(ARGS) || status=$$?; \
	$(BIN)/medft report $(LOGS)/study-report/$(NOW) || status=$$?; \
	echo "study-report: $(LOGS)/study-report/$(NOW)"; exit $$status

paper: install ## The study's grid (medft/configs/experiment/paper/): GPUs, data roots and checkpoints in medft/configs/local/default.yaml
	@# the report is written even when jobs failed; then the target fails with the sweep's status
	status=0; $(BIN)/medft train -m experiment=$(call cells,paper,$(PAPER_CELLS) $(IMAGE_TEXT_CELLS)) tune=$(MODES) hydra.sweep.dir=$(LOGS)/paper/$(NOW) $(ARGS) || status=$$?; \
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
