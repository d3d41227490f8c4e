# Shoal's two entry points are `make demo` and `make test`; the rest are helpers.
.PHONY: demo demo-stop test bench setup build fmt clippy

CARGO ?= cargo

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --bin shoal

# Set-up, the all-in-one server and a demo guest cluster.
demo: build
	bash scripts/demo.sh

demo-stop:
	bash scripts/demo.sh stop

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: formatting, lints, unit, integration and end-to-end tests.
test: setup fmt clippy
	$(CARGO) build --bin shoal
	$(CARGO) test --workspace --no-fail-fast

# Benchmarks on a release build; results go in BENCHMARKS.md.
bench: setup
	$(CARGO) build --release --bin shoal
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench api
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench etcd
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench agent
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench lifecycle
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench gateway
