#!/usr/bin/env bash
# The test command of the README: formatting, lints, then every test
# (unit, property, real node processes on loopback, simulator seed sweep and
# determinism). Ends with the test runner's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --profile ci
else
  exec cargo test --workspace --locked
fi
