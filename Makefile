# Shoal's two entry points are `make demo` and `make test`; the rest are helpers.
.PHONY: demo demo-stop test bench setup build fmt clippy machete kubernetes-image

CARGO ?= cargo

# The guests' accelerator (agents and the server's local agent read SHOAL_ACCEL).
# TCG by default: a nested /dev/kvm can pass the agent's probe and still hang a
# real kernel after decompression, as on the project's CI machines. `SHOAL_ACCEL=auto`
# probes KVM and falls back to TCG; `kvm` forces it.
export SHOAL_ACCEL ?= tcg

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

# Dependencies a crate declares but never uses.
machete:
	$(CARGO) machete

# The Kubernetes node image: Go builds of Kubernetes and its add-ons, a debootstrap,
# the container images and the disk, each cached outside the checkout (under
# ~/.cache/shoal/kubernetes) by a stamp of its inputs; cold 11.5 minutes on 2
# cores (measured, BENCHMARKS.md), warm under a second.
kubernetes-image: setup
	bash images/build-kubernetes-image.sh >/dev/null

# Every test: formatting, lints, unit, integration and end-to-end tests.
# One build for the binary and the tests: the same targets as `cargo test
# --workspace`, so dependencies compile once with one feature set (a plain
# `cargo build --bin shoal` resolves features without the tests' and would build
# most dependencies a second time).
test: setup kubernetes-image fmt clippy machete
	$(CARGO) build --workspace --bins --tests
	SHOAL_BIN=$(CURDIR)/target/debug/shoal $(CARGO) test --workspace --no-fail-fast

# Benchmarks on a release build; results go in BENCHMARKS.md.
bench: setup kubernetes-image
	$(CARGO) build --release --bin shoal
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench api
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench etcd
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench agent
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench lifecycle
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench gateway
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench oidc
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench ui
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench monitoring
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench migration
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench pxe
	SHOAL_BIN=$(CURDIR)/target/release/shoal $(CARGO) bench -p shoal-e2e --bench aws
	$(CARGO) bench -p shoal-e2e --bench kubernetes_boot
