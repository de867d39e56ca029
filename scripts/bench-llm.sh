#!/usr/bin/env bash
# Language-model benchmarks of docs/BENCHMARKS.md, in one run on this
# machine: three llama.cpp engines (the tiny GGUF), a 4-node gpumesh cluster
# in front of them (n1 without an engine, n2..n4 each beside one), and
# vllm-router fronting the same engines.
#   scripts/bench-llm.sh [SECONDS]        (default 20 s per measurement)
# Needs scripts/setup.sh (llama-server, the model) and the release build;
# installs vllm-router 0.1.17 into .venv if missing. Results: JSON lines
# under target/bench-llm/, and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
OUT=target/bench-llm
source scripts/lib-llm.sh

ENGINES=(18191 18192 18193)
start_engines
write_registries
for n in 1 2 3 4; do
  seed=(); [ "$n" -gt 1 ] && seed=(--seed 127.0.0.1:18201)
  GPUMESH_LOG=warn "$GPUMESH" node --name "n$n" --data-dir "$OUT/n$n" --models "$OUT/n$n.toml" \
    --http "127.0.0.1:1818$n" --grpc "127.0.0.1:1824$n" --gossip "127.0.0.1:1820$n" --cluster "127.0.0.1:1822$n" "${seed[@]}" \
    >"$OUT/n$n.log" 2>&1 &
  PIDS+=($!)
done
wait_serving http://127.0.0.1:18181 3
sleep 2
echo "==> gpumesh n1..n4 up"

E1=http://127.0.0.1:${ENGINES[0]}; E2=http://127.0.0.1:${ENGINES[1]}; E3=http://127.0.0.1:${ENGINES[2]}
SINGLE=(--concurrency 1 --prompt-tokens 128 --max-tokens 64)
bench "1 client, engine directly" --node "$E1" "${SINGLE[@]}"
bench "1 client, node beside the engine" --node http://127.0.0.1:18182 "${SINGLE[@]}"
bench "1 client, one hop (n1)" --node http://127.0.0.1:18181 "${SINGLE[@]}"
LOAD=(--concurrency 12 --prompt-tokens 128 --shared-prefix-tokens 96 --prefix-groups 6 --max-tokens 64)
for e in "$E1" "$E2" "$E3"; do
  bench "alone: $e" --node "$e" --concurrency 4 --prompt-tokens 128 --shared-prefix-tokens 96 --prefix-groups 6 --max-tokens 64
done
bench "3 engines directly, together" --node "$E1,$E2,$E3" "${LOAD[@]}"
bench "3 engines through gpumesh n1" --node http://127.0.0.1:18181 "${LOAD[@]}"
for policy in power_of_two cache_aware; do
  .venv/bin/vllm-router --host 127.0.0.1 --port 18240 --worker-urls "$E1" "$E2" "$E3" --policy "$policy" \
    >"$OUT/router-$policy.log" 2>&1 &
  ROUTER=$!; PIDS+=("$ROUTER")
  wait_router http://127.0.0.1:18240
  bench "3 engines through vllm-router $policy" --node http://127.0.0.1:18240 "${LOAD[@]}"
  kill "$ROUTER"; wait "$ROUTER" 2>/dev/null || true
done

echo "==> CPU seconds used by each process during the run"
ps -o pid=,cputime=,args= -p "$(IFS=,; echo "${PIDS[*]}")" | sed -E 's/--(models|data-dir) [^ ]+//g' | cut -c1-110

.venv/bin/python - "$OUT/named.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'measurement':44} {'req':>5} {'err':>4} {'ttft p50':>9} {'ttft p99':>9} {'itl p50':>8} {'tok/s':>8} {'cached':>7}")
for r in rows:
    print(f"{r['name']:44} {r['requests']:5} {r['errors']:4} {r['ttft_ms']['p50']:9.3f} {r['ttft_ms']['p99']:9.3f} "
          f"{r['inter_token_ms']['p50']:8.3f} {r['completion_tokens_per_s']:8.1f} {r['cached_token_ratio']*100:6.1f}%")
alone = sum(r["completion_tokens_per_s"] for r in rows if r["name"].startswith("alone"))
for r in rows:
    if "3 engines" in r["name"]:
        print(f"{r['name']:44} share of the sum alone ({alone:.0f} tok/s): {r['completion_tokens_per_s'] / alone:.3f}")
PY
