# Nightly Lab. On a fresh machine two commands do everything:
#   make nightly   the whole suite on the GPUs this machine has
#   make test      the lab's own tests
# Both first run the set-up (docker/setup.sh: .venv, Docker engine, images), which is idempotent
# and takes about a second when there is nothing to do.

SHELL := /bin/bash
VENV := .venv
LAB := $(VENV)/bin/lab

CONFIG ?= configs/nightly.json
GPUS ?=
RUNTIME ?=
MODEL ?=
VRAM ?=
ARGS ?=
PYTEST_ARGS ?=

# Options passed only when given, so the lab's own defaults apply otherwise.
run_opts = $(if $(GPUS),--gpus $(GPUS)) $(if $(RUNTIME),--runtime $(RUNTIME))
# repro uses the lab's default suite unless CONFIG was given on the command line or environment.
repro_config = $(if $(filter command line environment,$(origin CONFIG)),--config $(CONFIG))

.DEFAULT_GOAL := help
.PHONY: help setup venv engine images parsers nightly nightly-real repro test lint clean distclean _need-model

help:
	@echo "make nightly [CONFIG=$(CONFIG)] [GPUS=0,1|none] [RUNTIME=docker|netns|local|slurm] [ARGS=...]"
	@echo "                        run the suite (set-up first)"
	@echo "make nightly-real [RUNTIME=..]   configs/transformers.json: a real server (transformers serve)"
	@echo "make repro MODEL=<model or case> [VRAM=<GiB>] [GPUS=..] [RUNTIME=..]"
	@echo "                        run one case exactly as the nightly does"
	@echo "make test [PYTEST_ARGS=...]   set-up, then all tests (slow and docker ones included)"
	@echo "make setup              .venv + Docker engine + images; fast when done already"
	@echo "make images             build the images that are missing or out of date"
	@echo "make parsers            sglang's and vLLM's parsers on CPU (build/parsers), for the test"
	@echo "                        that runs every generated command line through them"
	@echo "make lint               ruff check, ruff format --check, mypy (strict, all of lab/)"
	@echo "make clean              remove containers, processes and namespaces lab runs left"
	@echo "make distclean          clean, then remove .venv, build/ and the nightly-lab images"

setup:
	@docker/setup.sh

venv:
	@docker/setup.sh venv

engine:
	@docker/setup.sh engine

images: venv
	@docker/build-images.sh all

parsers: venv
	@docker/parsers/build.sh

nightly: setup
	$(LAB) nightly --config $(CONFIG) $(run_opts) $(ARGS)

nightly-real: setup
	$(LAB) nightly --config configs/transformers.json --gpus none $(if $(RUNTIME),--runtime $(RUNTIME)) $(ARGS)

_need-model:
	@if [[ -z "$(MODEL)" ]]; then \
	  echo "usage: make repro MODEL=<model or case id> [VRAM=<GiB>]   (list them: $(LAB) list)"; \
	  exit 2; \
	fi

repro: _need-model setup
	$(LAB) repro $(MODEL) $(repro_config) $(if $(VRAM),--vram-gib $(VRAM)) $(run_opts) $(ARGS)

test: setup
	$(VENV)/bin/pytest -q tests $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	@if [[ -x $(LAB) ]]; then $(LAB) clean; else echo "no $(LAB): nothing a lab run could have left"; fi

# Back to a fresh clone (the Docker engine stays).
distclean:
	-@if [[ -x $(LAB) ]]; then $(LAB) clean; fi
	rm -rf $(VENV) build
	-docker images --filter 'reference=nightly-lab/*' --format '{{.Repository}}:{{.Tag}}' \
	  | xargs -r docker rmi
