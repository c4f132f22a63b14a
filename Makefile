# zh-workbench. Two commands on a fresh machine: `make demo` and `make test`.
# Each stage target is that stage's manifest file, so make knows what is stale; each
# recipe is one line calling the CLI. Override on the command line:
#   make prepare CONFIG=configs/my_corpus.yaml ARGS="clean.pii.enabled=true"
#   make setup TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"   (GPU machines)
# After editing corpus files (make cannot see them) force a stage with `make -B prepare`.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CONFIG ?= configs/demo.yaml
RUN ?= runs/$(basename $(notdir $(CONFIG)))
ARGS ?=
PYTEST_ARGS ?=
# Extra prerequisites of the prepare target (the demo adds its generated corpus).
PREPARE_DEPS ?=

WB := $(VENV)/bin/workbench
STAMP := $(VENV)/.installed
DEMO_DATA := corpora/demo/README.md

.PHONY: gpu-check base experiment setup demo demo-data prepare vocab init-model extend-vocab segment pretrain finetune export desensitise remap report test docs clean clean-demo

setup: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	@touch $@

demo-data: $(DEMO_DATA)
# Rebuilt when the builder changes (its split rule decides which reviews are test data).
$(DEMO_DATA): workbench/corpus/demo_data.py workbench/corpus/split.py | $(STAMP)
	$(WB) demo-data output=corpora/demo

prepare: $(RUN)/prepared/manifest.json
$(RUN)/prepared/manifest.json: $(CONFIG) $(PREPARE_DEPS) | $(STAMP)
	$(WB) prepare --config $(CONFIG) run=$(RUN) $(ARGS)

vocab: $(RUN)/vocab/manifest.json
$(RUN)/vocab/manifest.json: $(RUN)/prepared/manifest.json $(CONFIG) | $(STAMP)
	$(WB) vocab --config $(CONFIG) run=$(RUN) $(ARGS)

init-model: $(RUN)/base-model/manifest.json
$(RUN)/base-model/manifest.json: $(CONFIG) $(INIT_MODEL_DEPS) | $(STAMP)
	$(WB) init-model --config $(CONFIG) run=$(RUN) $(ARGS)

# Domain tokens into a pretrained model's [unusedN] rows (and/or appended rows); its output
# dir is then the model= of segment and pretrain.
extend-vocab: $(RUN)/extended-model/manifest.json
$(RUN)/extended-model/manifest.json: $(RUN)/prepared/manifest.json $(CONFIG) $(EXTEND_VOCAB_DEPS) | $(STAMP)
	$(WB) extend-vocab --config $(CONFIG) run=$(RUN) $(ARGS)

# SEGMENT_DEPS / INIT_MODEL_DEPS: the demo's own vocab and base model (no hub here).
INIT_MODEL_DEPS ?=
EXTEND_VOCAB_DEPS ?=
SEGMENT_DEPS ?=
segment: $(RUN)/segmented/manifest.json
$(RUN)/segmented/manifest.json: $(RUN)/prepared/manifest.json $(CONFIG) $(SEGMENT_DEPS) | $(STAMP)
	$(WB) segment --config $(CONFIG) run=$(RUN) $(ARGS)

# Multi-GPU / multi-node: `make pretrain GPUS=8` or `make pretrain HOSTFILE=hosts` runs the
# deepspeed launcher with DEEPSPEED (a ZeRO config); without them it is one process.
GPUS ?=
HOSTFILE ?=
DEEPSPEED ?= configs/deepspeed/zero2.json
LAUNCH = $(if $(GPUS)$(HOSTFILE),$(VENV)/bin/deepspeed $(if $(HOSTFILE),--hostfile $(HOSTFILE)) $(if $(GPUS),--num_gpus $(GPUS)) --module workbench,$(WB))
LAUNCH_ARGS = $(if $(GPUS)$(HOSTFILE),deepspeed=$(DEEPSPEED))
pretrain: $(RUN)/pretrain/manifest.json
$(RUN)/pretrain/manifest.json: $(RUN)/segmented/manifest.json $(CONFIG) | $(STAMP)
	$(LAUNCH) pretrain --config $(CONFIG) run=$(RUN) $(LAUNCH_ARGS) $(ARGS)

# Fine-tuning: the task (and so the output dir) comes from the config's finetune.task;
# override with TASK=. FINETUNE_DEPS: the model's manifest when make should chain to it.
TASK ?= $(or $(shell sed -n '/^finetune:/,/^[^ #]/s/^  task: *\([a-z]*\).*/\1/p' $(CONFIG) 2>/dev/null | head -1),classification)
FINETUNE_DEPS ?=
finetune: $(RUN)/finetune-$(TASK)/manifest.json
$(RUN)/finetune-$(TASK)/manifest.json: $(CONFIG) $(FINETUNE_DEPS) | $(STAMP)
	$(WB) finetune --config $(CONFIG) run=$(RUN) task=$(TASK) $(ARGS)

export: $(RUN)/export/$(TASK)/manifest.json
$(RUN)/export/$(TASK)/manifest.json: $(RUN)/finetune-$(TASK)/manifest.json | $(STAMP)
	$(WB) export --config $(CONFIG) run=$(RUN) input=$(RUN)/finetune-$(TASK) $(ARGS)

# Finishing steps. average: the last checkpoints of AVERAGE_INPUT (a pretrain output, or a
# finetune output trained with keep_snapshots=K) averaged; distil: the run's fine-tuned model
# as teacher of a smaller student. Their settings come from the config's average: / distil:.
AVERAGE_INPUT ?= $(RUN)/pretrain
average: $(RUN)/average/manifest.json
$(RUN)/average/manifest.json: $(AVERAGE_INPUT)/manifest.json | $(STAMP)
	$(WB) average --config $(CONFIG) run=$(RUN) input=$(AVERAGE_INPUT) output=$(RUN)/average $(ARGS)

distil: $(RUN)/distil/manifest.json
$(RUN)/distil/manifest.json: $(RUN)/finetune-$(TASK)/manifest.json | $(STAMP)
	$(WB) distil --config $(CONFIG) run=$(RUN) teacher=$(RUN)/finetune-$(TASK) output=$(RUN)/distil $(ARGS)

# Attention views of ATTENTION_MODEL on sentences of your own, e.g.
#   make attention CONFIG=configs/base.yaml ARGS='sentences=[我在北京大学读书，今天天气很好。] screenshot=true'
.PHONY: attention
ATTENTION_MODEL ?= $(RUN)/pretrain
attention: $(RUN)/attention/manifest.json
$(RUN)/attention/manifest.json: $(ATTENTION_MODEL)/manifest.json | $(STAMP)
	$(WB) attention --config $(CONFIG) run=$(RUN) model=$(ATTENTION_MODEL) output=$(RUN)/attention $(ARGS)

# Desensitised corpora (outputs named in the config: vocab_maps/<name>/, <run>/desensitised/).
desensitise: | $(STAMP)
	$(WB) desensitise --config $(CONFIG) run=$(RUN) $(ARGS)

remap: | $(STAMP)
	$(WB) remap --config $(CONFIG) run=$(RUN) $(ARGS)

report: | $(STAMP)
	$(WB) report run=$(RUN)

# The general base model experiments start from (runs/base/pretrain): Google's vocab (21,128
# rows), a small BERT pretrained on general news text from ../shared/data; built once (each step
# is a manifest target, a killed pretrain resumes), ~60 min on 2 CPU cores. With an NVIDIA GPU
# the same target builds configs/base_gpu.yaml (12 x 768) into the same place.
BASE_CONFIG ?= $(if $(shell nvidia-smi -L 2>/dev/null),configs/base_gpu.yaml,configs/base.yaml)
base: | $(STAMP)
	@test -f ../shared/data/news_xwlb/stories.txt || { echo "make base: needs ../shared/data (news_xwlb, cluecorpus_small_sample, vocab); see README"; exit 2; }
	$(MAKE) --no-print-directory prepare CONFIG=$(BASE_CONFIG) RUN=runs/base
	$(MAKE) --no-print-directory init-model CONFIG=$(BASE_CONFIG) RUN=runs/base
	$(MAKE) --no-print-directory segment CONFIG=$(BASE_CONFIG) RUN=runs/base SEGMENT_DEPS=runs/base/base-model/manifest.json
	$(MAKE) --no-print-directory pretrain CONFIG=$(BASE_CONFIG) RUN=runs/base

# Does continued pretraining help? Arms x seeds through the stages, one table with intervals
# (<run>/experiment/results.md). Cells are cached: re-running continues where it stopped.
#   make experiment EXPERIMENT=configs/experiment/reviews.yaml      (after make base)
EXPERIMENT ?= configs/experiment/demo.yaml
experiment: | $(STAMP)
	$(WB) experiment --config $(EXPERIMENT) $(ARGS)

# The whole pipeline on the offline demo data (People's Daily 1998 + product reviews):
# first a small general model (configs/demo_general.yaml, the stand-in for bert-base-chinese),
# then the domain run (configs/demo.yaml) that extends its vocabulary and continues it.
DEMO_GENERAL := configs/demo_general.yaml
demo: $(STAMP)
	$(MAKE) --no-print-directory demo-data
	$(MAKE) --no-print-directory prepare CONFIG=$(DEMO_GENERAL) PREPARE_DEPS=$(DEMO_DATA)
	$(MAKE) --no-print-directory vocab CONFIG=$(DEMO_GENERAL)
	$(MAKE) --no-print-directory init-model CONFIG=$(DEMO_GENERAL) INIT_MODEL_DEPS=runs/demo_general/vocab/manifest.json
	$(MAKE) --no-print-directory segment CONFIG=$(DEMO_GENERAL) SEGMENT_DEPS=runs/demo_general/base-model/manifest.json
	$(MAKE) --no-print-directory pretrain CONFIG=$(DEMO_GENERAL)
	$(MAKE) --no-print-directory finetune CONFIG=$(DEMO_GENERAL) FINETUNE_DEPS=runs/demo_general/pretrain/manifest.json
	$(MAKE) --no-print-directory export CONFIG=$(DEMO_GENERAL)
	$(MAKE) --no-print-directory report CONFIG=$(DEMO_GENERAL) > /dev/null
	$(MAKE) --no-print-directory prepare CONFIG=configs/demo.yaml PREPARE_DEPS=$(DEMO_DATA)
	$(MAKE) --no-print-directory extend-vocab CONFIG=configs/demo.yaml EXTEND_VOCAB_DEPS=runs/demo_general/pretrain/manifest.json
	$(MAKE) --no-print-directory segment CONFIG=configs/demo.yaml SEGMENT_DEPS=runs/demo/extended-model/manifest.json
	$(MAKE) --no-print-directory pretrain CONFIG=configs/demo.yaml
	$(MAKE) --no-print-directory finetune CONFIG=configs/demo.yaml FINETUNE_DEPS=runs/demo/pretrain/manifest.json
	$(MAKE) --no-print-directory export CONFIG=configs/demo.yaml
	$(MAKE) --no-print-directory experiment EXPERIMENT=configs/experiment/demo.yaml ARGS="seeds=[0]"
	$(MAKE) --no-print-directory report CONFIG=configs/demo.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Regenerate the config reference in README.md from the config models.
# On a GPU: the GPU-marked tests + the bert-base pretrain throughput / MFU benchmark (<= 8 min),
# results in benchmarks/results/gpu_check_<device>.json. Without a GPU: says so, exits 0.
gpu-check: | $(STAMP)
	$(VENV)/bin/python benchmarks/gpu_check.py

docs: | $(STAMP)
	$(VENV)/bin/python -m workbench.config README.md

# Leftovers of interrupted runs (.<output>.tmp-* / .old-*) under runs/; outputs a live run
# holds are skipped. `make clean ARGS=dry_run=true` only lists them.
clean: | $(STAMP)
	$(WB) clean path=runs $(ARGS)

clean-demo:
	rm -rf runs/demo runs/demo_general corpora/demo
