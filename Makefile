# balancebeam: make demo (the main job on the embedded database), make test.
GO ?= go
BIN := bin/balancebeam

.PHONY: build demo test lint unit clean worker prism-jobserver flink-jobserver bench bench-build

# make bench: the benchmarks of BENCHMARKS.md (not part of make test). ROWS
# is the input sizes, comma-separated (the README's quick check:
# make bench ROWS=1000000); RUNS how often each configuration runs.
ROWS ?= 1000000,10000000
RUNS ?= 3
# SKIP leaves configurations out from a size on, as NAME@ROWS, comma-separated
# (SKIP=ledger@10000000: the ledger mode and its rerun at 1M rows only; at
# 10M each writes every transaction, over a minute a run).
SKIP ?=
BENCH_FLAGS ?=

build:
	$(GO) build -o $(BIN) ./cmd/balancebeam

## demo: the main job over testdata/ on the embedded default PostgreSQL
demo: build
	scripts/ensure-postgres.sh
	BALANCEBEAM=$(BIN) scripts/demo.sh

## test: formatting, vet, and every test (unit, pipeline on every runner,
## integration against a throwaway PostgreSQL; internal/runners starts its
## own Prism and Flink job servers, and needs Java and Maven for Flink)
test: lint
	scripts/ensure-postgres.sh
	$(GO) test -count=1 -timeout 30m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## bench: balancebeam against a plain Go baseline and a naive sink, side by
## side in one invocation, on txgen data and a throwaway PostgreSQL; writes
## BENCHMARKS.md's results, docs/bench-ratios.svg and docs/bench-results.json
bench: bench-build
	scripts/ensure-postgres.sh
	bin/bench --rows $(ROWS) --runs $(RUNS) $(if $(SKIP),--skip '$(SKIP)') $(BENCH_FLAGS)

bench-build: build
	$(GO) build -o bin/txgen ./cmd/txgen
	$(GO) build -o bin/bench ./cmd/bench
	$(GO) build -o bin/bench-baseline ./cmd/bench/baseline
	$(GO) build -o bin/bench-peer ./cmd/bench/peer

## worker: the program for linux/amd64 workers (Dataflow's --worker_binary)
worker:
	GOOS=linux GOARCH=amd64 CGO_ENABLED=0 $(GO) build -trimpath -o bin/balancebeam-linux-amd64 ./cmd/balancebeam

## prism-jobserver, flink-jobserver: a job server on port 8073, 8099
prism-jobserver:
	scripts/prism-jobserver.sh

flink-jobserver:
	scripts/flink-jobserver.sh

clean:
	rm -rf bin
