# balancebeam: make demo (the main job on the embedded database), make test.
GO ?= go
BIN := bin/balancebeam

.PHONY: build demo test lint unit clean

build:
	$(GO) build -o $(BIN) ./cmd/balancebeam

## demo: the main job over testdata/ on the embedded default PostgreSQL
demo: build
	scripts/ensure-postgres.sh
	BALANCEBEAM=$(BIN) scripts/demo.sh

## test: formatting, vet, and every test (unit, pipeline on direct and Prism,
## integration against a throwaway PostgreSQL)
test: lint
	scripts/ensure-postgres.sh
	$(GO) test -count=1 -timeout 30m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
