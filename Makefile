# Switchyard: `make run` starts the whole system offline, `make test` runs every test.
GO        ?= go
BUF       := $(GO) tool -modfile=tools/go.mod buf
TEST_FLAGS ?= -race -shuffle=on -count=1
NPM       ?= npm
TS_CLIENT := clients/typescript
BROWSER   := e2e/browser
# npm ci writes node_modules/.package-lock.json: a stamp that is older than
# package-lock.json when the dependencies changed.
TS_DEPS      := $(TS_CLIENT)/node_modules/.package-lock.json
BROWSER_DEPS := $(BROWSER)/node_modules/.package-lock.json
CHROMIUM     ?= /usr/bin/chromium

.PHONY: run test test-go test-typescript test-browser generate lint breaking check-generated build bench bench-go vet tools

## run: the dev stack (embedded store + Anthropic simulator), real gRPC between services.
run:
	$(GO) run ./cmd/switchyard dev

## test: every test, with the race detector. PostgreSQL suites run when
## SWITCHYARD_TEST_DATABASE_URL is set, Redis suites when SWITCHYARD_TEST_REDIS_URL
## is; the fault test (e2e/fault_test.go:
## services as processes, killed under load, ~2 min) also needs
## SWITCHYARD_FAULT_TEST=1. Then the TypeScript client's tests and the
## dashboard's browser test, against the dev stack (they need Node.js 20+
## and npm; the browser test needs Chromium at $(CHROMIUM)).
test: test-go test-typescript test-browser

test-go:
	$(GO) test $(TEST_FLAGS) ./...

$(TS_DEPS): $(TS_CLIENT)/package-lock.json
	$(NPM) ci --prefix $(TS_CLIENT) --no-audit --no-fund

$(BROWSER_DEPS): $(BROWSER)/package-lock.json
	$(NPM) ci --prefix $(BROWSER) --no-audit --no-fund

## test-typescript: the TypeScript client's tests (clients/typescript), on a dev stack of bin/switchyard.
test-typescript: build $(TS_DEPS)
	SWITCHYARD_BIN=$(CURDIR)/bin/switchyard $(NPM) test --prefix $(TS_CLIENT)

## test-browser: the dashboard in headless Chromium (e2e/browser). Without
## Chromium it is skipped, unless SWITCHYARD_REQUIRE_BROWSER=1 (CI) makes
## that a failure; Debian: apt-get install chromium.
test-browser: build $(TS_DEPS) $(BROWSER_DEPS)
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ -n "$$SWITCHYARD_REQUIRE_BROWSER" ]; then echo "test-browser: no Chromium at $(CHROMIUM) (apt-get install chromium)"; exit 1; fi; \
	  echo "test-browser: SKIPPED, no Chromium at $(CHROMIUM) (apt-get install chromium, or CHROMIUM=/path)"; exit 0; \
	fi; \
	$(NPM) run build --prefix $(TS_CLIENT) && \
	CHROMIUM_PATH=$(CHROMIUM) SWITCHYARD_BIN=$(CURDIR)/bin/switchyard $(NPM) test --prefix $(BROWSER)

## generate: regenerate gen/ (Go) and clients/typescript/src/gen (TypeScript)
## from proto/ with the pinned buf and plugins.
generate: $(TS_DEPS)
	$(BUF) generate
	$(BUF) generate --template $(TS_CLIENT)/buf.gen.yaml

## lint: buf lint plus go vet.
lint:
	$(BUF) lint
	$(GO) vet ./...

## breaking: compare the contract with main.
breaking:
	$(BUF) breaking --against '.git#branch=main'

## check-generated: fail if `make generate` changes anything.
check-generated: generate
	git diff --exit-code -- gen/ $(TS_CLIENT)/src/gen/
	@test -z "$$(git status --porcelain -- gen/ $(TS_CLIENT)/src/gen/)" || (git status --porcelain -- gen/ $(TS_CLIENT)/src/gen/; echo 'generated code is stale: run make generate'; exit 1)

build:
	$(GO) build -o bin/switchyard ./cmd/switchyard

## bench: the load benchmark of docs/benchmarks.md: the services as processes
## against the simulator, closed- and open-loop, against the simulator called
## directly; on the embedded store, and on PostgreSQL too when
## SWITCHYARD_BENCH_DATABASE_URL (or SWITCHYARD_TEST_DATABASE_URL) is set.
## It rewrites the generated tables in docs/benchmarks.md. BENCH_FLAGS adds
## flags (go run ./cmd/switchyard-bench -h), e.g. BENCH_FLAGS='-profile /tmp/prof'.
bench:
	$(GO) run ./cmd/switchyard-bench -write docs/benchmarks.md $(BENCH_FLAGS)

## bench-go: every Go benchmark of the packages (components, in process).
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

vet:
	$(GO) vet ./...

## tools: install grpcurl (pinned in tools/go.mod) into $(shell go env GOPATH)/bin.
tools:
	$(GO) install -modfile=tools/go.mod github.com/fullstorydev/grpcurl/cmd/grpcurl
