#!/usr/bin/env bash
# Fuzzes the decoders that read client and peer bytes with cargo-fuzz
# (libFuzzer, nightly Rust): the OIP JSON request, the binary tensor
# extension, the gRPC ModelInferRequest,
# node-to-node messages and gossiped values.
#   scripts/fuzz.sh            every target for 10 minutes
#   scripts/fuzz.sh 20 1       every target for 20 seconds from libFuzzer seed 1 (what CI runs)
# A crash stops the script with the failing input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-600}"
# libFuzzer's random seed; 0 picks one (a fixed seed makes a run repeatable).
FUZZ_SEED="${2:-0}"
TARGETS="oip_request binary_extension grpc_request cluster_message gossip_value"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); the decoders' property tests in the test suite still run" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  if ! cargo install --locked cargo-fuzz; then
    echo "fuzz: cargo-fuzz could not be installed; the decoders' property tests in the test suite still run" >&2
    exit 0
  fi
fi
echo "==> building the fuzz targets (nightly, address sanitizer)"
cargo +nightly fuzz build -O
for target in $TARGETS; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  echo "==> fuzzing $target for ${SECONDS_PER_TARGET}s"
  cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -seed="$FUZZ_SEED" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)|ERROR|SUMMARY|panicked' || true
  if compgen -G "fuzz/artifacts/$target/crash-*" >/dev/null; then
    echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
