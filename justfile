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
