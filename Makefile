# Conveyor — build, test and run the operator.
#
# Everything this Makefile needs it installs itself into bin/ (ignored by git):
# controller-gen from its Go module, and the Kubernetes binaries the tests run
# (kube-apiserver, etcd) built from source by hack/build-k8s.sh.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
K8S_VERSION ?= $(shell awk '$$1=="k8s.io/kubernetes" && $$2 ~ /^v/ {sub("v","",$$2); print $$2; exit}' hack/tools/k8s/go.mod)
K8S_BIN ?= $(LOCALBIN)/k8s/$(K8S_VERSION)
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
IMG ?= conveyor:dev
OVERLAY ?= default
GO_TEST_FLAGS ?= -count=1
# A count, not a duration: a duration -fuzztime can fail with "context deadline
# exceeded" at its end on a busy machine (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 20000x
CHART ?= charts/conveyor
CHART_RBAC = role.yaml job_runner_role.yaml receiver_role.yaml cert_rotation_role.yaml conveyor_system_role.yaml personas.yaml metrics_reader_role.yaml

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and the manager's RBAC from the API markers.
	$(CONTROLLER_GEN) rbac:roleName=conveyor-manager crd paths="./..." webhook output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook
	@# The chart carries the same CRDs, roles and webhooks as config/ (copies, checked by make verify and TestChartMatchesConfig).
	@mkdir -p $(CHART)/crds $(CHART)/files/rbac $(CHART)/files/webhook $(CHART)/files/grafana
	cp config/crd/bases/*.yaml $(CHART)/crds/
	cp $(addprefix config/rbac/,$(CHART_RBAC)) $(CHART)/files/rbac/
	cp config/webhook/manifests.yaml $(CHART)/files/webhook/
	cp config/grafana/conveyor-delivery.json $(CHART)/files/grafana/

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: verify
verify: manifests generate ## Fail when generated code or CRDs are stale, or code is not formatted.
	@if [ -n "$$(gofmt -l api controllers hack test main.go 2>/dev/null)" ]; then echo "Not gofmt'ed:"; gofmt -l api controllers hack test main.go; exit 1; fi
	@if ! git diff --quiet -- api config $(CHART); then echo "Generated files are stale; run 'make manifests generate' and commit:"; git diff --stat -- api config $(CHART); exit 1; fi
	@if [ -n "$$(git status --porcelain -- api config $(CHART))" ]; then echo "Untracked generated files:"; git status --porcelain -- api config $(CHART); exit 1; fi
	@echo "Generated files are up to date."

.PHONY: test-assets
test-assets: ## Build kube-apiserver and etcd from source into bin/k8s/<version> (once).
	hack/build-k8s.sh kube-apiserver etcd

.PHONY: test
test: manifests generate vet cluster-assets browser fuzz ## Run every test: envtest (kube-apiserver + etcd), the dashboard in headless Chromium, and end-to-end (a local control plane), after a short fuzz run.
	KUBEBUILDER_ASSETS="$(K8S_BIN)" E2E_BIN_DIR="$(K8S_BIN)" go test $(GO_TEST_FLAGS) -timeout 30m -v ./... 2>&1 | hack/test-summary.sh

.PHONY: e2e
e2e: cluster-assets ## Run the end-to-end suite alone against a local control plane.
	E2E_BIN_DIR="$(K8S_BIN)" go test $(GO_TEST_FLAGS) -timeout 30m -v ./test/e2e/ 2>&1 | hack/test-summary.sh

.PHONY: browser
browser: ## Install Debian's headless Chromium for the dashboard's browser test (once).
	hack/install-browser.sh

.PHONY: fuzz
fuzz: ## Fuzz the admission rules and the release ledger briefly (FUZZTIME executions each; corpora in controllers/*/testdata/fuzz).
	go test -run '^$$' -fuzz '^FuzzCheckApproval$$' -fuzztime $(FUZZTIME) ./controllers/admission/
	go test -run '^$$' -fuzz '^FuzzCheckRun$$' -fuzztime $(FUZZTIME) ./controllers/admission/
	go test -run '^$$' -fuzz '^FuzzReleaseLedger$$' -fuzztime $(FUZZTIME) ./controllers/engine/

##@ Demo

.PHONY: cluster-assets
cluster-assets: ## Build the local cluster's binaries (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok) and helm once.
	hack/build-k8s.sh kube-apiserver etcd kube-controller-manager kube-scheduler kwok helm

.PHONY: demo-assets
demo-assets: ## Build what the local cluster of make demo needs (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok) once.
	hack/build-k8s.sh kube-apiserver etcd kube-controller-manager kube-scheduler kwok

.PHONY: demo
demo: build plugin demo-assets ## Start a local cluster, install Conveyor and play the seed's story (KEEP=1 keeps it up).
	go run ./hack/demo --bin-dir "$(K8S_BIN)" --manager "$(LOCALBIN)/manager" $(if $(KEEP),--keep)

##@ Benchmark

.PHONY: bench
bench: build test-assets ## Measure reaction, throughput, API writes and memory against kube-apiserver (BENCH_FLAGS to scale).
	KUBEBUILDER_ASSETS="$(K8S_BIN)" go run ./hack/bench --manager "$(LOCALBIN)/manager" $(BENCH_FLAGS)

.PHONY: patch-cost
patch-cost: manifests test-assets ## Measure the API server's CPU for one write of each kind a tag run makes (objects of a bench run).
	KUBEBUILDER_ASSETS="$(K8S_BIN)" go run ./hack/patchcost

##@ Build

.PHONY: build
build: manifests generate ## Build the manager binary.
	go build -o $(LOCALBIN)/manager .

.PHONY: plugin
plugin: ## Build the kubectl plugin into bin/kubectl-conveyor (put bin/ on PATH: kubectl conveyor --help).
	go build -o $(LOCALBIN)/kubectl-conveyor ./cmd/kubectl-conveyor

.PHONY: plugin-release
plugin-release: ## Build the plugin's archives and krew manifest into bin/dist (VERSION, RELEASE_URL).
	hack/krew-release.sh $(VERSION) $(RELEASE_URL)

.PHONY: run
run: manifests generate ## Run the manager against the cluster of the current kubeconfig.
	kubectl apply --server-side -k config/crd
	go run . --leader-elect=false --webhooks=false --insecure-trust-unrecorded-approvers --metrics-bind-address=0

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	kubectl apply --server-side -k config/crd

.PHONY: uninstall
uninstall: manifests ## Remove the CRDs (and with them every Pipeline, run and Approval) from the cluster of the current kubeconfig.
	kubectl delete --ignore-not-found -k config/crd

.PHONY: deploy
deploy: manifests ## Install Conveyor into the cluster of the current kubeconfig: config/$(OVERLAY) (default) with the manager image $(IMG), and config/environments.
	kubectl kustomize config/$(OVERLAY) | sed 's|image: conveyor:dev$$|image: $(IMG)|' | kubectl apply --server-side -f -
	kubectl apply --server-side -k config/environments

.PHONY: undeploy
undeploy: ## Remove what config/$(OVERLAY) installed, CRDs included (so every Pipeline, run and Approval); config/environments stays.
	kubectl kustomize config/$(OVERLAY) | kubectl delete --ignore-not-found -f -

.PHONY: helm-lint
helm-lint: cluster-assets ## Lint the chart with Helm built from its module.
	$(K8S_BIN)/helm lint --strict $(CHART)

.PHONY: docker-build
docker-build: ## Build the manager image (needs a container engine).
	docker build -t $(IMG) .

##@ Tools

$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)
