# Sentinel: `make run` starts sentinel with the example config; `make test` runs
# every test (installing the real Prometheus/Alertmanager tools when missing).
GO        ?= go
BIN       ?= bin
DATA      ?= data
GOFILES    = $(shell git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './vendor/*')

VERSION   ?= $(shell cat VERSION)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
VPKG       = github.com/prometheus/common/version
LDFLAGS    = -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(REVISION) -X $(VPKG).Branch=$(BRANCH) \
             -X $(VPKG).BuildUser=$(shell id -un)@$(shell hostname) -X $(VPKG).BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)

.PHONY: all build run demo test test-deps lint fmt bench bench-quick bench-go bench-build fuzz generate clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# The example config's keys are public: listen on loopback only.
run: build
	@mkdir -p $(DATA)
	./$(BIN)/sentinel --config.file=deploy/sentinel.example.yml --storage.path=./$(DATA) --web.listen-address=127.0.0.1:9464

# The whole loop on loopback: sentinel, Prometheus, Alertmanager, a webhook
# sink and agents that hang, crash or are killed (scripts/demo.sh). Ctrl-C stops it.
demo: build
	@DEPS=demo bash scripts/install-test-deps.sh
	@BIN=$(BIN) bash scripts/demo.sh

test-deps:
	@bash scripts/install-test-deps.sh

test: test-deps lint build
	$(GO) test -race -count=1 -timeout 12m ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $(GOFILES)

# Unit-level benchmarks (go test -bench).
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m ./...

# The side-by-side benchmark (scripts/bench): sentinel against reference
# servers, Prometheus and the Pushgateway. Not part of `make test`.
# The driver and the load generator run on CPU 1, the servers on CPU 0.
BENCH_PIN ?= $(shell command -v taskset >/dev/null 2>&1 && [ $$(nproc) -ge 2 ] && echo taskset -c 1)

bench-build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/sentinel ./cmd/sentinel-loadgen ./scripts/bench/refserver ./scripts/bench

bench: bench-build
	$(BENCH_PIN) ./$(BIN)/bench --bin=$(BIN) --out=BENCHMARKS.md

bench-quick: bench-build
	$(BENCH_PIN) ./$(BIN)/bench --quick --bin=$(BIN) --out=$(BIN)/BENCHMARKS-quick.md

# Every fuzz target for FUZZTIME each; `make test` already runs their seed corpora.
FUZZTIME  ?= 30s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

# The PrometheusRule and the dashboards, and the Helm chart's copies of both.
generate:
	$(GO) generate ./...

clean:
	rm -rf $(BIN)
