# Convenience recipes. Nothing here is required: each recipe is one plain command.

# Serve on 127.0.0.1:8080 with data in ./data
run:
    cargo run --release

# Every test: unit, property and black-box
test:
    cargo test

# Format check and lints, as CI runs them
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Benchmarks (see BENCHMARKS.md)
bench:
    cargo bench --bench store

# Check Cargo.lock against the bundled RustSec snapshot
audit:
    ../shared/bin/audit

# What CI runs
ci:
    bash .ci/run

# The crash test with 20 SIGKILLs (cargo test runs it with 5)
crash:
    FLIGHTDECK_CRASH_ROUNDS=20 cargo test --test integration crash

# Every fuzzer for 60 s (cargo-fuzz on the stable toolchain needs RUSTC_BOOTSTRAP=1)
fuzz seconds="60":
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    cd fuzz && for t in route decode_request ws_client record_codec; do RUSTC_BOOTSTRAP=1 cargo fuzz run -s none $t -- -max_total_time={{seconds}} || exit 1; done
