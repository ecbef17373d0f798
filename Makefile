# tunnelplane — the Makefile targets are the interface. `make help` lists them.
SHELL := /usr/bin/env bash
GO    ?= go
BIN   := bin/tunnelplane
PKGS  := ./...
# Data directory for `make run` (keys, embedded NATS, a private PostgreSQL if none runs locally).
DATA_DIR ?= .tunnelplane
BENCH_DURATION ?= 2s
FUZZTIME ?= 30s
DESYNC_ITERATIONS ?= 2000
# Debian packages the tests run for real: uvicorn (with h11) and Node.js are upstreams of the
# ingress desync harness; rsyslog with its TLS driver receives the SIEM syslog tests; prometheus
# brings promtool, which tests the alert rules in deploy/prometheus (the tests want only the tool:
# `make deps` stops and disables the server its install starts, see below); python3-cryptography
# and zstd run the independent Python verifier of evidence bundles (compliance/evidence/testdata);
# poppler-utils brings pdftotext, which reads back the PDF reports (report/render, report/compliance).
TEST_PACKAGES := python3-uvicorn nodejs rsyslog rsyslog-gnutls prometheus python3-cryptography zstd poppler-utils chromium
# The external NATS server the bus and system tests also run against (this machine's, the Debian
# package, 2.9.x); `make nats` starts one when nothing answers there.
TEST_NATS_HOST := 127.0.0.1
TEST_NATS_PORT := 4222

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/tunnelplane
	$(GO) build -o $(BIN) ./cmd/tunnelplane

.PHONY: run
run: build ## tunnelplane serve --demo: NATS, control plane, a node and a demo tunnel you can curl
	$(BIN) serve --demo --data-dir $(DATA_DIR)

.PHONY: deps
deps: ## Download the modules (every platform's) and install the Debian packages the tests use, only those missing (root)
	$(GO) mod download
	@command -v dpkg >/dev/null || { echo "deps: not a Debian system; install $(TEST_PACKAGES) yourself"; exit 0; }; \
	missing=""; for p in $(TEST_PACKAGES); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "deps: missing Debian packages:$$missing; as root: apt-get install$$missing (tests that need them skip)"; exit 0; fi; \
	echo "deps: installing$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null || exit 1; \
	case " $$missing " in *" prometheus "*) \
	  echo "deps: stopping and disabling the prometheus server its package started (the tests use only promtool)"; \
	  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus.service >/dev/null 2>&1; \
	  else invoke-rc.d prometheus stop >/dev/null 2>&1; update-rc.d prometheus disable >/dev/null 2>&1; fi; \
	  if pgrep -x prometheus >/dev/null; then echo "deps: a prometheus server still runs (port 9090)"; fi;; \
	esac
	@# The official OpenAI SDK for Node, a real client of the ingress (TestOpenAISDKThroughAnAccessKey skips without it).
	@if command -v npm >/dev/null && [ ! -f dataplane/node/testdata/openai/node_modules/openai/package.json ]; then \
	  echo "deps: npm install in dataplane/node/testdata/openai (the OpenAI SDK, the exact version package.json names)"; \
	  timeout 180 npm install --prefix dataplane/node/testdata/openai --no-audit --no-fund --no-package-lock >/dev/null || echo "deps: npm install failed; the OpenAI SDK test skips"; \
	fi
	@# The official Standard Webhooks library for Node, an independent verifier of webhook signatures (TestWebhooksAtLeastOnceAcrossARestart skips that check without it).
	@if command -v npm >/dev/null && [ ! -f webhooks/testdata/verify/node_modules/standardwebhooks/package.json ]; then \
	  echo "deps: npm install in webhooks/testdata/verify (standardwebhooks, the exact version package.json names)"; \
	  timeout 180 npm install --prefix webhooks/testdata/verify --no-audit --no-fund --no-package-lock >/dev/null || echo "deps: npm install failed; the webhook signature check with standardwebhooks skips"; \
	fi

.PHONY: nats
nats: ## Make sure a NATS server with JetStream answers at 127.0.0.1:4222 (installed and started if not)
	@if (exec 3<>/dev/tcp/$(TEST_NATS_HOST)/$(TEST_NATS_PORT)) 2>/dev/null; then exit 0; fi; \
	if ! command -v nats-server >/dev/null; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then echo "nats: no server at $(TEST_NATS_HOST):$(TEST_NATS_PORT) and nats-server is not installed"; exit 1; fi; \
	  echo "nats: installing nats-server"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nats-server >/dev/null; \
	fi; \
	dir=$$(mktemp -d /tmp/tunnelplane-nats.XXXXXX); echo "nats: starting nats-server -js on $(TEST_NATS_HOST):$(TEST_NATS_PORT) (store $$dir)"; \
	nohup $$(command -v nats-server) -a $(TEST_NATS_HOST) -p $(TEST_NATS_PORT) -js -sd $$dir >$$dir/nats.log 2>&1 </dev/null & \
	for i in $$(seq 100); do (exec 3<>/dev/tcp/$(TEST_NATS_HOST)/$(TEST_NATS_PORT)) 2>/dev/null && exit 0; sleep 0.1; done; \
	echo "nats: the server did not start; see $$dir/nats.log"; exit 1

.PHONY: test
test: deps nats lint ## Run the whole suite against a real PostgreSQL (found or started) and NATS (embedded and this machine's)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	@# The bus tests again, against this machine's NATS server (2.9.x) under cluster names of their own.
	TUNNELPLANE_TEST_NATS_URL=nats://$(TEST_NATS_HOST):$(TEST_NATS_PORT) $(GO) test -race -count=1 -timeout 10m ./bus/bustest
	@# The race detector makes a 256 MiB transfer too slow, so that test shrinks under -race, and
	@# the bench's process tests and the SIEM crash test skip under it: run them without.
	$(GO) test -count=1 -run 'TestLargeBodyArrivesIntactAndStreams' ./dataplane/node
	$(GO) test -count=1 ./bench/tunnel
	@# The SIEM crash test's subject is the control process, built without the race detector.
	$(GO) test -count=1 -run 'TestSIEMDeliveryThroughKillsAndRestarts' ./cmd/tunnelplane

.PHONY: bench
bench: build ## Benchmarks against their baselines in the same run (scratch databases)
	$(BIN) bench store --duration $(BENCH_DURATION) --data-dir $(DATA_DIR)
	$(BIN) bench api --data-dir $(DATA_DIR)
	$(BIN) bench tunnel --log-level warn
	$(BIN) bench siem --log-level warn

.PHONY: fuzz
fuzz: deps ## Every fuzz target for FUZZTIME each, then the ingress desync harness for DESYNC_ITERATIONS
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME); \
	  done; \
	done
	TUNNELPLANE_DESYNC_ITERATIONS=$(DESYNC_ITERATIONS) $(GO) test -count=1 -timeout 60m -run 'TestIngressDesync' ./dataplane/node

.PHONY: lint
lint: ## gofmt, go vet, and the binary builds for the agent's other platforms
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tunnelplane/*'))"; \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@# `tunnelplane connect` runs on developers' machines: keep macOS and Windows building.
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/tunnelplane
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./cmd/tunnelplane

.PHONY: clean
clean: ## Remove build output and stop a private PostgreSQL started under the data dir
	-[ -x $(BIN) ] && $(BIN) db stop --data-dir $(DATA_DIR)
	rm -rf bin
