#!/usr/bin/env bash
# Coverage-guided fuzzing of Shoal's parsers of untrusted network bytes (the
# gateway's ClientHello and HTTP head readers, the guest's HTTP/1 reader and DHCP
# client), each for a bounded time. Needs the nightly toolchain; installs
# cargo-fuzz if it is missing.
#
#   scripts/fuzz.sh            # every target, SHOAL_FUZZ_SECONDS (20) each
#   scripts/fuzz.sh guest_dhcp # one target
#
# Not part of `make test`: the first build of the targets (sanitizers, release,
# kube and rustls underneath) took 15m51s on the project's 2-core machine, far
# over the budget of the test command; the property tests in each crate's
# tests/properties.rs run in `cargo test` instead. A crash leaves its input in
# fuzz/artifacts/<target>/; replay it with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${SHOAL_FUZZ_SECONDS:-20}"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "scripts/fuzz.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

for target in "${targets[@]}"; do
    # The corpus grows across runs (git-ignored).
    mkdir -p "corpus/$target"
    echo "scripts/fuzz.sh: $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=0
done
