#!/usr/bin/env bash
# The tiny CNN on one gpumesh node and on Triton (PyTriton, ../shared/peers)
# side by side in one run: JSON over HTTP (../shared/peers/loadgen.py),
# binary tensors over HTTP (`gpumesh bench --binary`) and gRPC
# (scripts/grpc_loadgen.py, tritonclient.grpc), 32 and 1 clients each.
#   bash ../shared/peers/install.sh lg && bash ../shared/peers/install.sh models && bash ../shared/peers/install.sh triton
#   cargo build --release -p gpumesh && scripts/bench-triton.sh [seconds]
# Prints one table; every raw result is in /tmp/bench-triton/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS="$(cd ../shared/peers && pwd)"
SECONDS_EACH="${1:-12}"
OUT=/tmp/bench-triton
GPUMESH=target/release/gpumesh
LOADGEN=(/tmp/peers/venv_lg/bin/python "$PEERS/loadgen.py")
GRPC_LOADGEN=(.venv/bin/python scripts/grpc_loadgen.py)
rm -rf "$OUT" && mkdir -p "$OUT"
[ -x "$GPUMESH" ] || { echo "build first: cargo build --release -p gpumesh" >&2; exit 1; }
[ -f /tmp/peers/models/tiny_cnn.onnx ] || { echo "install the peers first (see the top of this script)" >&2; exit 1; }

# run SYSTEM HTTP_URL GRPC_ADDRESS: the six measurements against one system.
run() {
  local system=$1 http=$2 grpc=$3
  for clients in 32 1; do
    echo "==> $system: JSON, $clients clients" >&2
    "${LOADGEN[@]}" --url "$http/v2/models/tiny_cnn/infer" --shape 1,3,32,32 -c "$clients" -d "$SECONDS_EACH" -w 3 \
      | sed "s/^{/{\"system\": \"$system\", \"protocol\": \"json\", /" >> "$OUT/results.jsonl"
    echo "==> $system: binary HTTP, $clients clients" >&2
    "$GPUMESH" bench --node "$http" --model tiny_cnn --binary --concurrency "$clients" --duration "${SECONDS_EACH}s" --json \
      | sed "s/^{/{\"system\": \"$system\", \"protocol\": \"binary\", \"c\": $clients, /" >> "$OUT/results.jsonl"
    echo "==> $system: gRPC, $clients clients" >&2
    "${GRPC_LOADGEN[@]}" --url "$grpc" --model tiny_cnn -c "$clients" -d "$SECONDS_EACH" -w 3 \
      | sed "s/^{/{\"system\": \"$system\", \"protocol\": \"grpc\", /" >> "$OUT/results.jsonl"
  done
}

bash "$PEERS/start.sh" triton tiny_cnn >&2
trap 'bash "$PEERS/stop.sh" triton >/dev/null 2>&1 || true' EXIT
run triton http://127.0.0.1:8010 127.0.0.1:8011
bash "$PEERS/stop.sh" triton >&2

cat > "$OUT/models.toml" <<TOML
[[model]]
name = "tiny_cnn"
path = "/tmp/peers/models/tiny_cnn.onnx"
max_batch_size = 32
max_queue_delay_us = 2000
TOML
GPUMESH_LOG=warn "$GPUMESH" node --name bench --data-dir "$OUT/data" --models "$OUT/models.toml" \
  --http 127.0.0.1:18500 --grpc 127.0.0.1:18501 --gossip 127.0.0.1:18502 --cluster 127.0.0.1:18503 > "$OUT/node.log" 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18500/v2/models/tiny_cnn/ready >/dev/null && break; sleep 0.1; done
run gpumesh http://127.0.0.1:18500 127.0.0.1:18501
kill $NODE

python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def find(system, protocol, c):
    for r in rows:
        if r["system"] == system and r["protocol"] == protocol and int(r["c"]) == c:
            rps = r.get("rps", r.get("throughput_rps"))
            p50 = r.get("p50_ms", r.get("latency_ms", {}).get("p50") if isinstance(r.get("latency_ms"), dict) else None)
            return float(rps), p50
    return None, None
print("| protocol | clients | gpumesh req/s (p50 ms) | Triton req/s (p50 ms) | ratio |")
print("|---|---|---|---|---|")
for protocol in ("json", "binary", "grpc"):
    for c in (32, 1):
        g, gp = find("gpumesh", protocol, c)
        t, tp = find("triton", protocol, c)
        ratio = f"{g / t:.2f}x" if g and t else "-"
        print(f"| {protocol} | {c} | {g:,.0f} ({gp}) | {t:,.0f} ({tp}) | {ratio} |")
PY
