#!/usr/bin/env bash
# Installs what gpumesh needs on a fresh Debian machine with Rust, then builds
# the release binaries. Safe to run again.
#   scripts/setup.sh          install + release build (for the demo)
#   scripts/setup.sh --ci     install only (the tests build what they need)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install Rust 1.95 or newer (https://rustup.rs) and run this again" >&2
  exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest (the test runner)"
  cargo install --locked cargo-nextest
fi

if [ "${1:-}" != "--ci" ]; then
  step "building gpumesh and gpumesh-sim (release)"
  cargo build --release --locked -p gpumesh -p gpumesh-sim
  step "ready: target/release/gpumesh demo --nodes 3"
fi
