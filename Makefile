# flowrun-operator developer entry points. `make demo` and `make test` work from a clean clone:
# they create the virtualenv and build the control-plane binaries (cached outside the clone) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLOWRUN_CACHE ?= $(HOME)/.cache/flowrun-operator
export FLOWRUN_CACHE
PYTEST_ARGS ?=

.PHONY: help venv tools cluster-up cluster-down demo test test-unit test-sim test-integration lint crds \
        check-crds chart-crds bench bench-lifecycle bench-limits bench-inspect bench-schedules bench-scale bench-chaos kind-up kind-down run clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 22

venv: $(VENV)/.installed ## Python virtualenv with the operator and dev tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

tools: ## Build kube-apiserver, controller-manager, scheduler, etcd, kwok, helm into $(FLOWRUN_CACHE)
	tools/build.sh

cluster-up: venv tools ## Start the embedded control plane (kubeconfig in .devcluster/kubeconfig)
	$(BIN)/flowrun-devcluster up

cluster-down: venv ## Stop the embedded control plane
	$(BIN)/flowrun-devcluster down

demo: venv tools ## Control plane + CRDs + operator + example FlowRuns, shown with kubectl
	$(BIN)/python -m flowrun_operator.demo

run: venv ## Run the operator against $$KUBECONFIG
	$(BIN)/flowrun-operator

test: venv tools ## Lint, unit, integration and end-to-end tests on the embedded control plane
	$(MAKE) lint
	$(BIN)/pytest tests $(PYTEST_ARGS)

test-unit: venv ## Unit tests only (no cluster)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-sim: venv ## Simulation of the admission engine (no cluster; SIM_PROFILE=long for 20,000 scenarios per test)
	$(BIN)/pytest tests/sim $(PYTEST_ARGS)

test-integration: venv tools ## Integration and e2e tests only
	$(BIN)/pytest tests/integration tests/e2e $(PYTEST_ARGS)

lint: venv ## ruff + mypy
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy

crds: venv ## Regenerate crds/ (and the chart's copy) from the pydantic models
	$(BIN)/python -m flowrun_operator.api.crdgen crds
	$(BIN)/python -m flowrun_operator.api.crdgen charts/flowrun-operator/crds

bench: bench-lifecycle bench-limits ## All benchmarks

bench-lifecycle: venv tools ## FlowRun create->Job and create->Succeeded vs bare Jobs
	$(BIN)/python bench/lifecycle.py

bench-inspect: venv tools ## Dashboard first render (1,000 runs) and memory; client wait latency
	$(BIN)/python bench/inspection.py

bench-limits: venv tools ## 1,000 runs through one limit of 10 vs a minimal feeder loop
	$(BIN)/python bench/limits.py

bench-schedules: venv tools ## 50 interval schedules for 3 minutes: lateness of each run after its scheduled time
	$(BIN)/python bench/schedules.py

bench-scale: venv tools ## 10,000 runs queued behind one limit, drained; then 50,000 finished kept (SCALE_RUNS=...)
	$(BIN)/python bench/scale.py

bench-chaos: venv tools ## 50 operator SIGKILLs during 1,000 runs through a limit; no over-admission, no loss
	$(BIN)/python bench/chaos.py

# For users with Docker: a kind cluster with the operator image loaded and the chart installed.
# (Not runnable on machines without a Docker engine.)
IMAGE ?= flowrun-operator:dev
kind-up: ## kind cluster + image + helm install (needs Docker and kind)
	kind create cluster --name flowrun
	docker build -t $(IMAGE) .
	kind load docker-image $(IMAGE) --name flowrun
	helm upgrade --install flowrun charts/flowrun-operator --namespace flowrun-system --create-namespace \
	  --set image.repository=$(firstword $(subst :, ,$(IMAGE))) --set image.tag=$(lastword $(subst :, ,$(IMAGE))) \
	  --set image.pullPolicy=Never --wait

kind-down: ## Delete the kind cluster
	kind delete cluster --name flowrun

clean: ## Remove the virtualenv and local cluster state (not the binary cache)
	-$(BIN)/flowrun-devcluster down
	rm -rf $(VENV) .devcluster .pytest_cache .mypy_cache .ruff_cache
