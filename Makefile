# The Clock-and-Pizza pipeline as a make DAG: every stage is a target whose prerequisites are real
# files, so `make -j` is safe, a second `make all` does nothing, and touching one run's output
# reruns only what follows it. `make help` lists the targets and variables.

PIPELINE ?= pipelines/default.yaml
P        ?=
STEPS    ?=
LAUNCH   ?=
DATA     ?= data
CARGO    ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/clock-pizza/target
BIN      := $(CARGO_TARGET_DIR)/release

# Threads per process (every stage reads RAYON_NUM_THREADS; no number depends on it). Through
# srun: the CPUs each job gets, i.e. srun's -c/--cpus-per-task in LAUNCH, or 1 (Slurm's default)
# when LAUNCH names none. Otherwise: the cores shared among make's parallel jobs (`make -j2` on
# 2 cores runs two recipes with one thread each), so parallel recipes do not oversubscribe.
NPROC   := $(shell nproc 2>/dev/null || echo 1)
JOBS     = $(if $(filter -j,$(MAKEFLAGS)),$(NPROC),$(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1))
# srun's CPUs per task in LAUNCH: -c N, -cN, --cpus-per-task=N or --cpus-per-task N.
LAUNCH_CPUS := $(firstword \
    $(foreach i,$(shell seq 2 $(words x $(LAUNCH))),$(if $(filter -c --cpus-per-task,$(word $(i),x $(LAUNCH))),$(word $(i),$(LAUNCH)))) \
    $(patsubst -c%,%,$(filter -c%,$(filter-out -c,$(LAUNCH)))) $(patsubst --cpus-per-task=%,%,$(filter --cpus-per-task=%,$(LAUNCH))))
THREADS ?= $(or $(LAUNCH_CPUS),$(if $(filter srun,$(notdir $(firstword $(LAUNCH)))),1),$(shell echo $$(( $(NPROC) / $(JOBS) > 0 ? $(NPROC) / $(JOBS) : 1 ))))
export RAYON_NUM_THREADS = $(THREADS)

# A heavy recipe's prefix: LAUNCH, with the job named after the make target, so that squeue, sacct
# and the job records say which run and stage a job is: srun's --job-name when LAUNCH starts with
# srun (a job step inside an allocation takes its name only from there), SLURM_JOB_NAME for other
# prefixes (sbatch and srun read it).
launch = $(if $(LAUNCH),env SLURM_JOB_NAME=$(EXP)/$(1) $(LAUNCH)$(if $(filter srun,$(notdir $(firstword $(LAUNCH)))), --job-name=$(EXP)/$(1)))

SETS := $(if $(P),--set data.p=$(P)) $(if $(STEPS),--set train.steps=$(STEPS))
CONFIG := --config $(PIPELINE) $(SETS)

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.SECONDARY:

# --- build ----------------------------------------------------------------------------------
# One stamp for all binaries (one cargo invocation, safe under -j). Stages depend on it
# order-only: rebuilding the code does not by itself rerun finished stages.
SOURCES := $(shell find crates -name '*.rs' -o -name Cargo.toml 2>/dev/null) Cargo.toml Cargo.lock
STAMP := $(DATA)/.build-stamp
$(STAMP): $(SOURCES)
	$(CARGO) build --release --workspace --bins
	@mkdir -p $(@D) && touch $@

.PHONY: build
build: $(STAMP)

# --- plan -----------------------------------------------------------------------------------
# The experiment's name and runs come from the YAML (through gen-data --plan), so the per-run
# targets below exist for whatever grid the pipeline file describes. The plan also reruns after a
# rebuild: the fragments hold the settings resolved with the code's defaults, so a changed
# default (e.g. the LLC's burn-in) reruns the stages that read it, and only those.
PLAN_MK := $(DATA)/.plan/$(notdir $(basename $(PIPELINE)))-p$(or $(P),default)-s$(or $(STEPS),default).mk
$(PLAN_MK): $(PIPELINE) $(STAMP)
	@mkdir -p $(@D)
	$(BIN)/gen-data $(CONFIG) --plan $(DATA) > $@.tmp$$$$ && mv $@.tmp$$$$ $@

ifeq ($(filter help clean test slurm-test bench build fuzz,$(MAKECMDGOALS))$(if $(MAKECMDGOALS),,help),)
include $(PLAN_MK)
endif

EXP_DIR  := $(DATA)/$(EXP)
RUN_DIRS := $(addprefix $(EXP_DIR)/runs/,$(RUNS))
DATASET  := $(EXP_DIR)/dataset.parquet
METRICS  := $(addsuffix /metrics.parquet,$(RUN_DIRS))
SCANS    := $(addsuffix /scan.parquet,$(RUN_DIRS))
SYMS     := $(addsuffix /symmetry.parquet,$(RUN_DIRS))
LLCS     := $(addsuffix /llc.parquet,$(RUN_DIRS))
REPORT   := $(EXP_DIR)/report/index.html
# Config fragments (written by the plan step, rewritten only when their section changes): each
# stage depends on the sections it reads, so editing `llc:` does not retrain.
CFG      := $(EXP_DIR)/.config
# The paper's released checkpoints, when present, give the report its reference points.
RELEASED_DIR ?= ../shared/fixtures/pizza
RELEASED := $(if $(wildcard $(RELEASED_DIR)/*.safetensors),$(EXP_DIR)/released/symmetry.parquet)

# --- stages ---------------------------------------------------------------------------------
.PHONY: all data train scan symmetry llc report
all: $(REPORT)
data: $(DATASET)
train: $(METRICS)
scan: $(SCANS)
symmetry: $(SYMS)
llc: $(LLCS)
report: $(REPORT)

$(CFG)/%.json: | $(STAMP)
	$(BIN)/gen-data $(CONFIG) --plan $(DATA) > /dev/null

$(DATASET): $(CFG)/data.json | $(STAMP)
	$(call launch,gen-data) $(BIN)/gen-data $(CONFIG) --out $@

$(EXP_DIR)/runs/%/metrics.parquet: $(DATASET) $(CFG)/train-%.json | $(STAMP)
	$(call launch,train/$*) $(BIN)/train $(CONFIG) --run $* --data $(DATASET) --out $(@D)

$(EXP_DIR)/runs/%/scan.parquet: $(EXP_DIR)/runs/%/metrics.parquet | $(STAMP)
	$(call launch,scan/$*) $(BIN)/checkpoint-scan --out $@ $(@D)

$(EXP_DIR)/runs/%/symmetry.parquet: $(EXP_DIR)/runs/%/metrics.parquet $(CFG)/analysis.json | $(STAMP)
	$(call launch,symmetry/$*) $(BIN)/symmetry $(CONFIG) --out $@ $(@D)

$(EXP_DIR)/runs/%/llc.parquet: $(EXP_DIR)/runs/%/metrics.parquet $(CFG)/llc.json | $(STAMP)
	$(call launch,llc/$*) $(BIN)/llc estimate $(CONFIG) --out $@ $(@D)

$(EXP_DIR)/released/symmetry.parquet: | $(STAMP)
	$(call launch,released-symmetry) $(BIN)/symmetry --out $@ $(sort $(wildcard $(RELEASED_DIR)/*.safetensors))

$(REPORT): $(METRICS) $(SCANS) $(SYMS) $(LLCS) $(RELEASED) | $(STAMP)
	$(BIN)/report --dir $(EXP_DIR) --out $(@D)

# --- housekeeping ---------------------------------------------------------------------------
.PHONY: help clean test slurm-test bench fuzz
help:
	@echo "Clock-and-Pizza pipeline. Targets:"
	@echo "  all        the whole DAG: data -> train -> scan, symmetry, llc -> report"
	@echo "  data       gen-data: the dataset table"
	@echo "  train      one training run per grid point (checkpoints + metrics.parquet)"
	@echo "  scan       checkpoint-scan per run (losses, norms, Fourier spectrum)"
	@echo "  symmetry   Pizza/Clock metrics per run"
	@echo "  llc        LLC estimates per run"
	@echo "  report     index.html + figures"
	@echo "  test       all tests (cargo test + end-to-end DAG test)"
	@echo "  slurm-test the tiny pipeline through a real single-node Slurm (starts one; root, apt)"
	@echo "  bench      speed table (data/bench/bench.parquet)"
	@echo "  fuzz       a longer fuzz pass over the YAML, safetensors and parquet readers (FUZZ_ITERS=20000)"
	@echo "  clean      delete outputs under $(DATA)/ (never the code or the build cache)"
	@echo "Variables: P=<modulus> PIPELINE=$(PIPELINE) STEPS=<train steps> LAUNCH='<prefix, e.g. srun -N1 -c2>' DATA=$(DATA)"
	@echo "           RELEASED_DIR=$(RELEASED_DIR) (the paper's checkpoints, drawn as reference points; empty to skip)"
	@echo "           THREADS=<threads per recipe> (default: srun's -c in LAUNCH, else cores / make -j jobs)"
	@echo "           REF_PY=<python with torch + devinterp 1.3.2> (make bench: measure the yardsticks alongside)"

clean:
	rm -rf $(DATA)

# The end-to-end test (crates/report/tests/e2e.rs) runs this Makefile on pipelines/tiny.yaml.
test:
	$(CARGO) test --release --workspace

# The pipeline through a real Slurm on this machine (scripts/slurm-local.sh; installs Slurm when
# missing, as root): job records, same bytes as without Slurm, scancel and resume, a failing job.
slurm-test:
	bash tests/slurm-test.sh

fuzz:
	PIZZA_FUZZ_ITERS=$(or $(FUZZ_ITERS),20000) $(CARGO) test --release -p pizza-core --test fuzz -- --nocapture

# REF_PY: a Python with torch, numpy and devinterp==1.3.2 (a throwaway virtualenv, see the
# README); when set, the PyTorch and devinterp yardsticks are measured in the same run.
REF_PY ?=
bench: $(STAMP)
	$(BIN)/bench --out $(DATA)/bench/bench.parquet --llc-config $(PIPELINE) $(if $(REF_PY),--reference-python $(REF_PY) --reference-dir $(abspath ../shared/bench))
