# Recommendation serving suite. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# checkov, for the manifests' and Dockerfile's security scan, in a virtual environment of its
# own: its pins (packaging, boto3, ...) would fight the suite's.
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help setup up demo test test-fast bench eval eval-continual protos lint check images clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel; an unpinned torch would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CHECKOV_STAMP): tools/checkov-requirements.txt $(STAMP)
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r tools/checkov-requirements.txt
	touch $(CHECKOV_STAMP)

setup: $(STAMP) $(CHECKOV_STAMP) ## Create the virtual environment and install everything (idempotent)

up: setup ## Start every service on loopback in the foreground (Ctrl-C stops them)
	$(VENV)/bin/recsys up

demo: setup ## Start the suite if needed, load the MovieLens catalogue, print similar movies
	$(VENV)/bin/recsys demo

test: setup ## Run the whole test suite (unit, integration, end-to-end)
	$(PY) -m pytest

test-fast: setup ## Run the unit tests only
	$(PY) -m pytest tests/unit

bench: setup ## Benchmark ingest, SimilarItems, Recommend, the model and the continual trainer on MovieLens
	$(VENV)/bin/recsys bench

# The suite with its defaults, as a user's data would meet it: nothing set for MovieLens.
eval: setup ## Replay MovieLens through the API against baselines; writes docs/eval (README figures)
	$(VENV)/bin/recsys eval --out docs/eval

# In-process, with the trainer's code: continual learning vs full retrain vs a frozen model.
eval-continual: setup ## Replay MovieLens: continual learning vs full retrain vs frozen; writes docs/eval/continual.*
	$(PY) -m evaluation.offline_continual --trending-half-life-s 31536000 --out docs/eval

protos: setup ## Regenerate Python code and stubs from protos/ (commit the result)
	$(VENV)/bin/buf lint
	rm -rf gen/python
	$(PY) tools/gen_protos.py gen/python

lint: setup ## Lint protos and Python
	$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: lint ## Lint and type-check
	$(VENV)/bin/mypy shared services suite bench evaluation

# The images of k8s/: one Dockerfile target each, tagged $(IMAGE_PREFIX)<target>:$(IMAGE_TAG).
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman)
IMAGE_PREFIX ?= recsys-
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_TARGETS := gateway features retrieval embedding trainer trainer-gpu

images: ## Build every service's image with docker or podman (IMAGE_PREFIX, IMAGE_TAG)
	@test -n "$(CONTAINER_ENGINE)" || { echo "make images: no docker or podman on this machine"; exit 1; }
	for target in $(IMAGE_TARGETS); do \
	  DOCKER_BUILDKIT=1 $(CONTAINER_ENGINE) build --target $$target \
	    --tag $(IMAGE_PREFIX)$$target:$(IMAGE_TAG) . || exit 1; \
	done

clean: ## Remove the virtual environment and local service data
	rm -rf $(VENV) var
