# Switchyard: `make run` starts the whole system offline, `make test` runs every test.
GO        ?= go
BUF       := $(GO) tool -modfile=tools/go.mod buf
TEST_FLAGS ?= -race -shuffle=on -count=1

.PHONY: run test generate lint breaking check-generated build bench bench-go vet tools

## run: the dev stack (embedded store + Anthropic simulator), real gRPC between services.
run:
	$(GO) run ./cmd/switchyard dev

## test: every test, with the race detector. PostgreSQL suites run when
## SWITCHYARD_TEST_DATABASE_URL is set, Redis suites when SWITCHYARD_TEST_REDIS_URL
## is; the fault test (e2e/fault_test.go:
## services as processes, killed under load, ~2 min) also needs
## SWITCHYARD_FAULT_TEST=1.
test:
	$(GO) test $(TEST_FLAGS) ./...

## generate: regenerate gen/ from proto/ with the pinned buf and plugins.
generate:
	$(BUF) generate

## lint: buf lint plus go vet.
lint:
	$(BUF) lint
	$(GO) vet ./...

## breaking: compare the contract with main.
breaking:
	$(BUF) breaking --against '.git#branch=main'

## check-generated: fail if `make generate` changes anything.
check-generated: generate
	git diff --exit-code -- gen/
	@test -z "$$(git status --porcelain -- gen/)" || (git status --porcelain -- gen/; echo 'gen/ is stale: run make generate'; exit 1)

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
