#!/bin/bash
# Usage: scripts/gpu-check.sh [BINARY]
# On a GPU machine: starts the real gpumesh binary with a synthetic model,
# sends it 2 s of requests, and prints what it publishes (/cluster, the GPU
# series of /metrics, `gpumesh status`) next to what nvidia-smi reports.
set -u
bin=${1:-target/release/gpumesh}
d=$(mktemp -d)
$bin keygen > "$d/secret"
chmod 400 "$d/secret"
printf '[[model]]\nname = "echo"\nkind = "synthetic"\nservice_time_ms = 1\nmax_batch_size = 64\n' > "$d/echo.toml"
$bin node --models "$d/echo.toml" --name h100 --data-dir "$d/data" --secret-file "$d/secret" \
  --http 127.0.0.1:18080 --grpc 127.0.0.1:18001 --gossip 127.0.0.1:17946 --cluster 127.0.0.1:17947 > "$d/log" 2>&1 &
pid=$!
# Ready within 10 s, then until the node publishes its GPUs (10 s at most).
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18080/v2/health/ready >/dev/null && break; sleep 0.2; done
for _ in $(seq 1 50); do curl -s http://127.0.0.1:18080/cluster | grep -q '"gpus":\[{' && break; sleep 0.2; done
export GPUMESH_LOG=warn
$bin bench --node http://127.0.0.1:18080 --model echo --concurrency 4 --duration 2s 2>&1 | tail -5
echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total,memory.free,memory.used,temperature.gpu,power.draw,utilization.gpu --format=csv
echo "== /cluster"; curl -s http://127.0.0.1:18080/cluster | head -c 3000; echo
echo "== /metrics gpu"; curl -s http://127.0.0.1:18080/metrics | grep -E '^gpumesh_gpu|^gpumesh_members'
echo "== status"; $bin status --node http://127.0.0.1:18080 2>&1 | head -30
kill -TERM $pid; wait $pid; echo "exit $?"
echo "== log"; head -c 3000 "$d/log"
