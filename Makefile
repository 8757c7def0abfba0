# kubectl mesh — build, test and the local lab.
#
# `make demo` and `make test` work on a fresh Debian machine with Go: every
# tool they need is installed from Debian packages or the Go module proxy.

SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -buildvcs=false

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG     := github.com/kubectl-mesh/kubectl-mesh
LDFLAGS := -s -w -X $(PKG)/pkg/version.Version=$(VERSION) -X $(PKG)/pkg/version.Commit=$(COMMIT) -X $(PKG)/pkg/version.Date=$(DATE)

OUT     := $(CURDIR)/_output
BIN     := $(OUT)/bin
PREFIX  ?= /usr/local

# Versions of everything the lab runs. Binaries are cached under
# _output/lab-bin by name and version, so only the first build pays.
ETCD_VERSION     := v3.6.5
KUBE_VERSION     := v1.35.0
KWOK_VERSION     := v0.8.0
ISTIO_VERSION    := 1.31.0
ISTIO_MODULE     := istio.io/istio@v0.0.0-20260827124520-eed52ebb66ad
STATICCHECK      := honnef.co/go/tools/cmd/staticcheck@v0.8.2
LAB_BIN          := $(OUT)/lab-bin
TOOLS            := $(OUT)/tools
KUBE_LDFLAGS     := $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,-X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=35 -X $(p).gitTreeState=clean)
ISTIO_LDFLAGS    := -X istio.io/istio/pkg/version.buildVersion=$(ISTIO_VERSION) -X istio.io/istio/pkg/version.buildStatus=Clean -X istio.io/istio/pkg/version.buildTag=$(ISTIO_VERSION)

LAB_BINARIES := $(LAB_BIN)/etcd-$(ETCD_VERSION) \
	$(LAB_BIN)/kube-apiserver-$(KUBE_VERSION) \
	$(LAB_BIN)/kube-controller-manager-$(KUBE_VERSION) \
	$(LAB_BIN)/kube-scheduler-$(KUBE_VERSION) \
	$(LAB_BIN)/kubectl-$(KUBE_VERSION) \
	$(LAB_BIN)/kwok-$(KWOK_VERSION) \
	$(LAB_BIN)/pilot-discovery-$(ISTIO_VERSION)

.PHONY: all build install test unit e2e bench demo lab-up lab-down lab-bins lint deps clean

all: build

deps:
	hack/install-deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kubectl-mesh ./cmd/kubectl-mesh

lab-bins: $(LAB_BINARIES)

$(LAB_BIN)/etcd-$(ETCD_VERSION):
	cd hack/tools/etcd && $(GO) build -trimpath -o $@ go.etcd.io/etcd/server/v3

$(LAB_BIN)/kube%-$(KUBE_VERSION):
	cd hack/tools/kube && $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $@ k8s.io/kubernetes/cmd/kube$*

$(LAB_BIN)/kwok-$(KWOK_VERSION):
	cd hack/tools/kwok && $(GO) build -trimpath -o $@ sigs.k8s.io/kwok/cmd/kwok

$(LAB_BIN)/pilot-discovery-$(ISTIO_VERSION):
	cd hack/tools/istio && $(GO) build -trimpath -ldflags '$(ISTIO_LDFLAGS)' -o $@ istio.io/istio/pilot/cmd/pilot-discovery

LAB := cd test && $(GO) run ./lab/cmd/lab

lab-up: lab-bins
	$(LAB) up

lab-down:
	$(LAB) down

# The workshop on the local lab, narrated. Starts the lab afresh so the
# story begins before the mesh; leaves it running for exploring.
demo: deps lab-bins build
	$(LAB) down
	$(LAB) up
	@mkdir -p $(LAB_BIN)/shims && ln -sf ../kubectl-$(KUBE_VERSION) $(LAB_BIN)/shims/kubectl
	hack/demo.sh

install: build
	install -m 0755 $(BIN)/kubectl-mesh $(PREFIX)/bin/kubectl-mesh
	install -m 0755 plugins/kubectl_complete-mesh $(PREFIX)/bin/kubectl_complete-mesh

# Unit tests of the product, then the e2e suite against a real local lab,
# started afresh for the run: a lab left by `make demo` holds the demo's
# objects (a meshed default namespace, ztunnel), which the tests must not
# find. To rerun single e2e tests on a running lab:
#   cd test && go test -count=1 -p 1 -run TestName ./e2e/
test: deps lab-bins lint check-release
	$(GO) test -count=1 ./...
	$(LAB) down
	cd test && $(GO) test -count=1 -p 1 -timeout 30m -v ./...

bench: deps lab-bins bench-startup
	$(GO) test -run '^$$' -bench . -benchmem ./...
	cd test && $(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

lint: $(TOOLS)/staticcheck
	@out=$$(gofmt -l cmd pkg test hack); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test && $(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	cd test && $(TOOLS)/staticcheck ./...

clean:
	rm -rf $(BIN) dist

# Release, docs and start-up checks. Release tools are pinned and installed
# once into _output/tools/<tool>-<version>/.
GORELEASER_VER    := v2.15.1
GORELEASER        := $(TOOLS)/goreleaser-$(GORELEASER_VER)/goreleaser
KREW_VER          := v0.4.3
VALIDATE_KREW     := $(TOOLS)/krew-$(KREW_VER)/validate-krew-manifest

.PHONY: docs check-docs check-release bench-startup

$(GORELEASER):
	GOBIN=$(dir $@) $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VER)

$(VALIDATE_KREW):
	GOBIN=$(dir $@) $(GO) install sigs.k8s.io/krew/cmd/validate-krew-manifest@$(KREW_VER)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install $(STATICCHECK)

# The command reference in docs/reference is generated from the command
# tree. After adding or changing a command, flag or help text, run
# `make docs` and commit docs/reference with the change; `make check-docs`
# (part of `make test`) fails while it is stale.
docs:
	$(GO) run ./hack/gendocs -dir docs/reference

check-docs:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) run ./hack/gendocs -dir "$$tmp" || exit 1; \
	if ! diff -ru docs/reference "$$tmp"; then \
		echo "docs/reference is stale: run 'make docs' and commit the result"; exit 1; \
	fi

# What the release pipeline would do, short of publishing: goreleaser's
# config check, a linux/amd64 snapshot build (into dist/), and the krew
# manifest rendered (placeholder checksums) and validated by krew's tool.
check-release: $(GORELEASER) $(VALIDATE_KREW) check-docs
	$(GORELEASER) check
	GOOS=linux GOARCH=amd64 $(GORELEASER) build --snapshot --clean --single-target --id kubectl-mesh
	@mkdir -p $(OUT)/krew
	$(GO) run ./krew/render -tag v0.0.0 -placeholder-sha -o $(OUT)/krew/mesh.yaml krew/mesh.yaml
	$(VALIDATE_KREW) -manifest $(OUT)/krew/mesh.yaml -skip-install

# Start-up time beside `kubectl version --client`, and binary sizes, of a
# binary built as the release builds it (static, CGO_ENABLED=0).
bench-startup: deps $(LAB_BIN)/kubectl-$(KUBE_VERSION)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(OUT)/bench/kubectl-mesh ./cmd/kubectl-mesh
	hack/bench-startup.sh $(OUT)/bench/kubectl-mesh $(LAB_BIN)/kubectl-$(KUBE_VERSION) $(OUT)/bench/startup.md
