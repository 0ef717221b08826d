# Baton — every target explains itself: `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export BATON_CACHE ?= $(HOME)/.cache/baton
export BATON_CLUSTER_DIR ?= /var/tmp/baton-cluster
KUBECONFIG_E2E := $(BATON_CLUSTER_DIR)/kubeconfig
CARGO ?= cargo
# Helm as hack/cluster/build.sh builds it (by cluster-up); the e2e chart test uses $HELM too.
HELM_VERSION ?= $(shell sed -n 's/^HELM_VERSION=.*:-\(v[^}]*\)}.*/\1/p' hack/cluster/versions.env)
export HELM ?= $(BATON_CACHE)/helm-$(HELM_VERSION)/bin/helm
# The kstatus library (what Flux reads health with) as a tool the e2e tests pipe
# objects to; version = the cli-utils release pinned in hack/kstatus/go.mod.
KSTATUS_VERSION := $(shell sed -n 's,^require sigs.k8s.io/cli-utils \(v[^ ]*\)$$,\1,p; s,^\tsigs.k8s.io/cli-utils \(v[^ ]*\)$$,\1,p' hack/kstatus/go.mod)
# Keyed by the sources' content, not their mtimes: a fresh clone reuses the build.
KSTATUS_HASH := $(shell cat hack/kstatus/main.go hack/kstatus/go.mod hack/kstatus/go.sum | sha256sum | cut -c1-12)
export BATON_KSTATUS ?= $(BATON_CACHE)/kstatus-$(KSTATUS_VERSION)-$(KSTATUS_HASH)/kstatus

.PHONY: help build release lint helm-lint fmt unit crd images cluster-up cluster-down kstatus browser e2e test bench bench-local bench-content bench-dashboard bench-on-demand clean-cache

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Debug build of the baton binary
	$(CARGO) build

# The step pods' entrypoint, linked statically: it runs in images with no libc.
ENTRYPOINT_TARGET := x86_64-unknown-linux-gnu
export BATON_ENTRYPOINT_BIN ?= $(CURDIR)/target/$(ENTRYPOINT_TARGET)/release/baton-entrypoint

release: ## Release build (what the image ships): baton and the static baton-entrypoint
	$(CARGO) build --release --bin baton
	$(CARGO) build --release -p baton-entrypoint --target $(ENTRYPOINT_TARGET) \
	  --config 'target.$(ENTRYPOINT_TARGET).rustflags=["-C", "target-feature=+crt-static"]'

lint: ## cargo fmt --check and clippy with warnings denied (the e2e suite too)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --test e2e -- -D warnings

helm-lint: ## helm lint --strict the chart (helm comes with cluster-up)
	@test -x $(HELM) || { echo "no helm at $(HELM): make cluster-up (or BUILD_ONLY=helm hack/cluster/build.sh)"; exit 1; }
	$(HELM) lint --strict charts/baton

fmt: ## Format the code
	$(CARGO) fmt --all

unit: ## Unit and integration tests that need no cluster
	$(CARGO) test --workspace

crd: ## Regenerate config/crd/ and the chart's crds/ from the Rust types (src/crd/)
	$(CARGO) run --quiet -- crd --dir config/crd --dir charts/baton/crds

images: release ## Build the baton, step and pause images and import them into the node
	hack/images/build.sh

cluster-up: ## Build (once, cached) and start the local Kubernetes cluster
	hack/cluster/up.sh

cluster-down: ## Stop the local cluster and remove its state
	hack/cluster/down.sh

kstatus: $(BATON_KSTATUS) ## Build (once, cached) the kstatus tool the e2e tests check health with

$(BATON_KSTATUS):
	mkdir -p $(@D)
	cd hack/kstatus && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o $(abspath $@) .
	@echo "kstatus tool: $@"

browser: ## Install (once) Debian's chromium and chromium-driver for the dashboard's browser tests
	hack/browser/install.sh

e2e: cluster-up images kstatus browser ## End-to-end tests against the real local cluster
	$(MAKE) --no-print-directory helm-lint
	KUBECONFIG=$(KUBECONFIG_E2E) $(CARGO) test --test e2e -- --test-threads=4

bench-content: cluster-up images kstatus ## 100 MB of content into step pods and its changes out, through workspace helper pods (not in CI)
	KUBECONFIG=$(KUBECONFIG_E2E) $(CARGO) test --release --test e2e content_bench -- --ignored --nocapture

test: lint unit e2e ## Everything CI runs: lint, unit tests, e2e on a real cluster

bench: ## Baton vs batch/v1 Jobs vs Tekton on a KWOK control plane (not in CI): bench/results/, hack/bench/README.md
	hack/bench/run.sh

bench-local: ## Executor (200 trivial steps in a wide DAG), Job cache footprint, and change-archive benchmarks (pack, extract, upload to a directory and to SeaweedFS's S3)
	$(CARGO) bench --bench executor
	$(CARGO) bench --bench cache_footprint
	@dir=$$(mktemp -d /tmp/baton-bench-s3.XXXXXX); \
	  env_=$$(hack/s3/weed.sh start $$dir) && eval "$$env_" && $(CARGO) bench --bench archive; \
	  rc=$$?; hack/s3/weed.sh stop $$dir; rm -rf $$dir; exit $$rc

bench-on-demand: cluster-up images kstatus ## 30 one-step Jobs at once on the real node: Baton on-demand runner pods vs batch/v1 Jobs, and copies of Baton's pods without Baton, 3 rounds each (not in CI)
	KUBECONFIG=$(KUBECONFIG_E2E) $(CARGO) test --release --test e2e -- --ignored --exact on_demand_bench::bench_on_demand_against_batch_jobs --nocapture

bench-dashboard: cluster-up release kstatus browser ## A 200-step Job's page and a 20,000-line log in headless Chromium (release build): bench/results/DATE-dashboard-render.md
	KUBECONFIG=$(KUBECONFIG_E2E) BATON_DASHBOARD_BIN=$${CARGO_TARGET_DIR:-$(CURDIR)/target}/release/baton \
	  $(CARGO) test --test e2e -- --ignored --exact dashboard_bench::bench_dashboard_render --nocapture

clean-cache: ## Remove built cluster binaries and images (next cluster-up is cold)
	rm -rf $(BATON_CACHE)
