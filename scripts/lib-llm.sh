# What scripts/bench-llm.sh and scripts/bench-affinity.sh share: sourced
# from the repository root with OUT set. Checks what they need, stops
# every process they start on exit, and runs llama.cpp engines (the tiny
# GGUF), gpumesh registries beside them, and `gpumesh bench`.
GPUMESH=target/release/gpumesh
rm -rf "$OUT" && mkdir -p "$OUT"
[ -x "$GPUMESH" ] || { echo "error: build first: cargo build --release -p gpumesh" >&2; exit 1; }
[ -x .venv/bin/llama-server ] || { echo "error: run scripts/setup.sh first (it builds llama-server)" >&2; exit 1; }
[ -x .venv/bin/vllm-router ] || .venv/bin/pip install --quiet --disable-pip-version-check vllm-router==0.1.17

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# One llama-server on each port of ENGINES (4 slots), with any extra flags
# given; returns once every one answers its health check.
start_engines() {
  for port in "${ENGINES[@]}"; do
    .venv/bin/llama-server -m models/tiny-llm.gguf --host 127.0.0.1 --port "$port" --metrics -np 4 -c 16384 -t 1 "$@" \
      >"$OUT/engine-$port.log" 2>&1 &
    PIDS+=($!)
  done
  for port in "${ENGINES[@]}"; do
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
  done
  echo "==> engines up on ${ENGINES[*]}"
}

# Registries: n1.toml empty, n2.toml onwards each naming one engine.
write_registries() {
  : >"$OUT/n1.toml"
  local i
  for i in "${!ENGINES[@]}"; do
    printf '[[model]]\nname = "tiny-llm"\nkind = "openai"\nurl = "http://127.0.0.1:%s"\nengine = "llamacpp"\nmax_concurrency = 4\n' \
      "${ENGINES[$i]}" >"$OUT/n$((i + 2)).toml"
  done
}

# Waits until the node at URL lists COUNT nodes serving the model.
wait_serving() { # url count
  until [ "$(curl -s "$1/v1/models" | .venv/bin/python -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(len(d[0]["gpumesh"]["nodes"]) if d else 0)' 2>/dev/null)" = "$2" ]; do
    sleep 0.3
  done
}

# Waits until the router at URL answers.
wait_router() { # url
  until curl -sf "$1/health" >/dev/null 2>&1 || curl -sf "$1/v1/models" >/dev/null 2>&1; do sleep 0.3; done
}

# Runs `gpumesh bench --openai` for SECONDS_EACH; appends its JSON to
# results.jsonl, and with the measurement's name to named.jsonl.
bench() { # name, --node urls, flags...
  local name=$1; shift
  echo "==> $name"
  "$GPUMESH" bench --openai --model tiny-llm --duration "${SECONDS_EACH}s" --json "$@" | tee -a "$OUT/results.jsonl" \
    | .venv/bin/python -c "import json,sys; r=json.load(sys.stdin); r['name']='$name'; print(json.dumps(r))" >>"$OUT/named.jsonl"
}
