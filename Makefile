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
STATICCHECK      := honnef.co/go/tools/cmd/staticcheck@v0.7.0
LAB_BIN          := $(OUT)/lab-bin
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
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kubectl-mesh ./cmd/kubectl-mesh

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

# Unit tests of the product, then the e2e suite against a real local lab
# (started once for the whole run, or reused when `make lab-up` left one).
test: deps lab-bins
	$(GO) test -count=1 ./...
	cd test && $(GO) test -count=1 -p 1 -timeout 30m ./...

bench: deps lab-bins
	$(GO) test -run '^$$' -bench . -benchmem ./...
	cd test && $(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

lint:
	@out=$$(gofmt -l cmd pkg test hack); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test && $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN) dist
