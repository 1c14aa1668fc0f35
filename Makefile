# Fulcrum. `make demo` (first command) and `make test` (second) are what the README
# promises; every target installs what it needs first.

SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)

SWIFT        ?= swift
DEB_PACKAGES := libbpf-dev libxdp-dev libelf-dev clang llvm iproute2 nftables pkg-config ethtool iputils-ping \
                curl prometheus chromium python3-venv haproxy wrk keepalived stress-ng \
                tcpdump arping conntrack conntrackd iperf3
# From PyPI, in a virtualenv of the build tree: the API contract test's schemathesis.
VENV         := .build/venv
FUZZ_SECONDS ?= 60
BENCH_ARGS   ?=

.PHONY: all setup tools bpf build release demo test test-unit test-asan fuzz bench clean install

all: build

ARCH_INCLUDE := /usr/include/$(shell uname -m)-linux-gnu
BPF_OBJECTS  := .build/bpf/fulcrum.bpf.o .build/bpf/xdp_pass.bpf.o .build/bpf/bench.bpf.o
BPF_HEADERS  := $(wildcard BPF/include/*.h)

## bpf: compile the XDP programs (clang -target bpf)
bpf: setup $(BPF_OBJECTS)

.build/bpf/%.bpf.o: BPF/%.bpf.c $(BPF_HEADERS)
	@mkdir -p .build/bpf
	clang -O2 -g -Wall -Werror -target bpf -I BPF/include -I $(ARCH_INCLUDE) -c $< -o $@

## setup: install missing Debian packages (idempotent; silent when all are there)
setup:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "setup: need root to install$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## tools: schemathesis (PyPI) in $(VENV), for the API contract test
tools: setup
	@[ -x $(VENV)/bin/st ] || { python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet --disable-pip-version-check schemathesis; }

build: setup bpf
	$(SWIFT) build

release: setup bpf
	$(SWIFT) build -c release

## install: release binaries, the XDP object, the systemd unit and the docs (PREFIX=/usr/local)
PREFIX ?= /usr/local
install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/fulcrum $(DESTDIR)$(PREFIX)/share/doc/fulcrum \
	  $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/fulcrum
	install -m 755 .build/release/fulcrum .build/release/fulcrumctl .build/release/fulcrum-agent $(DESTDIR)$(PREFIX)/bin/
	install -m 644 .build/bpf/fulcrum.bpf.o $(DESTDIR)$(PREFIX)/lib/fulcrum/
	install -m 644 Sources/fulcrum/fulcrum.service $(DESTDIR)/etc/systemd/system/
	install -m 644 Docs/*.md Docs/openapi.yaml $(DESTDIR)$(PREFIX)/share/doc/fulcrum/
	@[ -n "$(DESTDIR)" ] || systemctl daemon-reload 2>/dev/null || true
	@echo "installed; next: /etc/fulcrum/fulcrum.yaml and its api token (see the unit's header), then systemctl enable --now fulcrum"

## demo: the README's first command — real traffic through MAT and NAT on a namespace testbed
demo: build
	@if [ "$$(id -u)" != 0 ]; then echo "demo: needs root (network namespaces, XDP)" >&2; exit 1; fi
	Bench/testbed/demo.sh

## test: everything CI runs — unit tests, the core suite under AddressSanitizer, a short
## fuzz run. Privileged tests skip without root unless FULCRUM_REQUIRE_PRIVILEGED=1.
test: setup tools bpf .build/bench/xsk_forward test-unit test-asan
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=20

test-unit:
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

test-asan:
	FULCRUM_CORE_ONLY=1 $(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	FULCRUM_CORE_ONLY=1 LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan-suppressions.txt \
	  $(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan --filter FulcrumCoreTests

## fuzz: libFuzzer over the packet path for FUZZ_SECONDS (corpus kept in fuzz-corpus/)
fuzz: setup
	@mkdir -p .build-fuzz fuzz-corpus
	$(SWIFT)c -O -sanitize=fuzzer,address -parse-as-library -module-name FuzzParser \
	  Sources/FulcrumCore/*.swift Tests/Fuzz/ParserFuzzer.swift -o .build-fuzz/fuzz-parser 2>&1 \
	  | grep -v "Cannot export local symbol" || true
	.build-fuzz/fuzz-parser -max_total_time=$(FUZZ_SECONDS) -max_len=1600 -print_final_stats=1 fuzz-corpus Tests/Fuzz/seeds 2>&1 \
	  | grep -E "^(stat::number_of_executed_units|stat::peak_rss|==|INFO: Running|#[0-9]+.*DONE|SUMMARY)" ; \
	  exit $${PIPESTATUS[0]}

## The plain C AF_XDP forwarder the forwarding benchmark compares one worker with.
.build/bench/xsk_forward: Bench/reference/xsk_forward.c
	@mkdir -p .build/bench
	clang -O2 -Wall -Werror -o $@ $< -lxdp -lbpf

## bench: release build; every scenario against the peers (table, .build/bench-results/report.json
## and one SVG chart per scenario), then Fulcrum's own costs: FulcrumCore per packet with a malloc
## counter, one worker against the C forwarder, the controller, the API, the health checker
INTERPOSER = $$(find -L .build/release -name 'libMallocInterposerSwift.so' | head -1)
bench: release .build/bench/xsk_forward
	LD_PRELOAD=$(INTERPOSER) .build/release/fulcrum-bench core $(BENCH_ARGS)
	@if [ "$$(id -u)" = 0 ]; then \
	  .build/release/fulcrum-bench all --root $(CURDIR) $(PEER_ARGS) && \
	  LD_PRELOAD=$(INTERPOSER) .build/release/fulcrum-bench forward --root $(CURDIR) $(FORWARD_ARGS) && \
	  .build/release/fulcrum-bench control --root $(CURDIR) && \
	  .build/release/fulcrum-bench api --root $(CURDIR) && \
	  .build/release/fulcrum-bench checks --root $(CURDIR) && \
	  .build/release/fulcrum-bench failover --root $(CURDIR); \
	else echo "bench: the scenarios against the peers, forwarding, control, API and failover benchmarks skipped: need root (namespaces, XDP)"; fi

clean:
	rm -rf .build .build-asan .build-fuzz
