# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
GO ?= go
PKGS := ./...

.PHONY: run test test-race bench fuzz lint build demo

build:
	$(GO) build -o bin/scalpel ./cmd/scalpel

run:
	$(GO) run ./cmd/scalpel serve

demo:
	$(GO) run ./cmd/scalpel demo

test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 10m $(PKGS)

test-race:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

bench:
	$(GO) run ./cmd/scalpel bench --rounds 5

FUZZTIME ?= 30s
fuzz:
	$(GO) test ./ingest -run '^$$' -fuzz FuzzDecodeTelemetry -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz FuzzDecodeSubject -fuzztime $(FUZZTIME)
	$(GO) test ./schemas -run '^$$' -fuzz FuzzParseManifest -fuzztime $(FUZZTIME)
	$(GO) test ./internal/config -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	# A snapshot is kilobytes: minimising each new input at the default 60 s would take the run.
	$(GO) test ./detect -run '^$$' -fuzz FuzzRestore -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./internal/replay -run '^$$' -fuzz FuzzReplayBundle -fuzztime $(FUZZTIME) -fuzzminimizetime 2s

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)
