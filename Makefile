# ampstream — Kafka to Amplitude forwarder.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PKGS      := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n\nTargets:\n"} /^[a-z0-9A-Z_-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/ampstream (static).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ampstream ./cmd/ampstream

.PHONY: demo
demo: ## Run the embedded demo: in-process Kafka + Amplitude emulator + traffic, live progress, summary.
	$(GO) run ./cmd/ampstream demo $(DEMO_ARGS)

.PHONY: test
test: ## Unit and end-to-end tests (-race) against the best broker available: KAFKA_BROKERS, Docker, else in-process kfake.
	$(GO) test -race -shuffle=on -count=1 -timeout 25m $(PKGS)

.PHONY: test-short
test-short: ## Unit tests only (-short).
	$(GO) test -race -short -count=1 $(PKGS)

.PHONY: test-rules
test-rules: ## Check the Prometheus rules and run their unit tests (needs promtool: apt-get install prometheus).
	promtool check rules deployments/prometheus/ampstream-rules.yaml
	promtool test rules deployments/prometheus/ampstream-rules.test.yaml

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 15s); new crashers land in the package's testdata/fuzz.
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' internal); do \
		pkg=./$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(or $(FUZZTIME),15s) -fuzzminimizetime 10x $$pkg; \
		done; \
	done
# -fuzzminimizetime 10x: minimising each new input for up to 60 s (the default) stalled
# FuzzFetchResponse's worker at ~10 executions in 20 s; with 10 tries it runs ~7k/s.

.PHONY: bench
bench: ## End-to-end benchmark (Kafka → ampstream → sink on 127.0.0.1) plus Go micro-benchmarks; prints a BENCH line.
	$(GO) test -run '^$$' -bench . -benchmem ./internal/event/ ./internal/route/ ./internal/deliver/ ./internal/amplitude/ ./internal/fetch/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ampstream ./cmd/ampstream
	$(GO) run ./cmd/ampstream-bench --ampstream bin/ampstream $(BENCH_ARGS)

.PHONY: emulate
emulate: ## Run the Amplitude API emulator on 127.0.0.1:8080.
	$(GO) run ./cmd/ampstream emulate --listen 127.0.0.1:8080

.PHONY: lint
lint: ## gofmt and go vet.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet $(PKGS)

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin
