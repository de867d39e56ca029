#!/usr/bin/env bash
# Prefix-cache affinity (docs/BENCHMARKS.md, issue 15), in one run on this
# machine: two llama.cpp engines (the tiny GGUF), a 3-node gpumesh cluster
# in front of them (n1 without an engine, n2 and n3 each beside one) with
# requests entering at all three nodes, run with and without
# --prefix-affinity; then vllm-router --policy cache_aware fronting the same
# engines, once as one central router and once as three routers (one per
# entry point, as three gpumesh nodes are).
#   scripts/bench-affinity.sh [SECONDS]     (default 20 s per measurement)
# Needs scripts/setup.sh and the release build; installs vllm-router 0.1.17
# into .venv if missing. Results: JSON lines under target/bench-affinity/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
OUT=target/bench-affinity
source scripts/lib-llm.sh

ENGINES=(18391 18392)
start_engines --slots --cache-ram 0
E1=http://127.0.0.1:${ENGINES[0]}; E2=http://127.0.0.1:${ENGINES[1]}
write_registries
NODES=http://127.0.0.1:18381,http://127.0.0.1:18382,http://127.0.0.1:18383

CLUSTER=()
start_cluster() { # affinity: true or false
  CLUSTER=()
  for n in 1 2 3; do
    seed=(); [ "$n" -gt 1 ] && seed=(--seed 127.0.0.1:18401)
    rm -rf "$OUT/n$n"
    GPUMESH_LOG=warn "$GPUMESH" node --name "n$n" --data-dir "$OUT/n$n" --models "$OUT/n$n.toml" \
      --http "127.0.0.1:1838$n" --grpc "127.0.0.1:1844$n" --gossip "127.0.0.1:1840$n" --cluster "127.0.0.1:1842$n" --prefix-affinity "$1" \
      "${seed[@]}" >"$OUT/n$n-affinity-$1.log" 2>&1 &
    CLUSTER+=($!); PIDS+=($!)
  done
  for n in 1 2 3; do wait_serving "http://127.0.0.1:1838$n" 2; done
  sleep 1
}
stop_cluster() { kill "${CLUSTER[@]}"; wait "${CLUSTER[@]}" 2>/dev/null || true; }

WORKLOAD=(--concurrency 6 --prompt-tokens 192 --shared-prefix-tokens 160 --prefix-groups 8 --max-tokens 16)

for affinity in true false; do
  start_cluster "$affinity"
  bench "gpumesh eta, affinity $affinity, entering at n1 n2 n3" --node "$NODES" "${WORKLOAD[@]}"
  stop_cluster
done

ROUTERS=()
for port in 18441 18442 18443; do
  .venv/bin/vllm-router --host 127.0.0.1 --port "$port" --worker-urls "$E1" "$E2" --policy cache_aware --prometheus-port $((port + 100)) \
    >"$OUT/router-$port.log" 2>&1 &
  ROUTERS+=($!); PIDS+=($!)
  wait_router "http://127.0.0.1:$port"
done
bench "vllm-router cache_aware, one router" --node http://127.0.0.1:18441 "${WORKLOAD[@]}"
bench "vllm-router cache_aware, three routers" --node http://127.0.0.1:18441,http://127.0.0.1:18442,http://127.0.0.1:18443 "${WORKLOAD[@]}"
kill "${ROUTERS[@]}"; wait "${ROUTERS[@]}" 2>/dev/null || true

.venv/bin/python - "$OUT/named.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'measurement':52} {'req':>5} {'err':>4} {'ttft p50':>9} {'ttft p99':>9} {'tok/s':>8} {'cached':>7}  by node")
for r in rows:
    print(f"{r['name']:52} {r['requests']:5} {r['errors']:4} {r['ttft_ms']['p50']:9.3f} {r['ttft_ms']['p99']:9.3f} "
          f"{r['completion_tokens_per_s']:8.1f} {r['cached_token_ratio']*100:6.1f}%  {r.get('by_node', {})}")
PY
