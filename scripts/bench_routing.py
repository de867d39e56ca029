#!/usr/bin/env python3
"""Routing benchmarks of docs/BENCHMARKS.md (issue 4), with the release binary:

    python3 scripts/bench_routing.py overhead          # A->C minus direct C, bundled tiny model
    python3 scripts/bench_routing.py scaling           # 3 synthetic nodes, all load into one
    python3 scripts/bench_routing.py mixed [seconds]   # 5/20/80 ms nodes at ~55 % load, p99 per policy
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BINARY = os.path.join(ROOT, "target", "release", "gpumesh")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.loads(response.read())
    except Exception:
        return None


class Cluster:
    """Nodes n1.. with their own registries (TOML text) and one policy."""

    def __init__(self, registries, policy="eta"):
        self.dir = tempfile.mkdtemp()
        secret = os.path.join(self.dir, "secret")
        with open(secret, "wb") as f:
            f.write(subprocess.check_output([BINARY, "keygen"]))
        os.chmod(secret, 0o400)
        self.urls, self.procs = [], []
        seed = None
        for index, registry in enumerate(registries):
            name = f"n{index + 1}"
            path = os.path.join(self.dir, f"{name}.toml")
            with open(path, "w") as f:
                f.write(registry)
            http, gossip, cluster = free_port(), free_port(socket.SOCK_DGRAM), free_port()
            args = [BINARY, "node", "--name", name, "--http", f"127.0.0.1:{http}", "--gossip", f"127.0.0.1:{gossip}",
                    "--cluster", f"127.0.0.1:{cluster}", "--data-dir", os.path.join(self.dir, name),
                    "--secret-file", secret, "--models", path, "--policy", policy]
            if seed:
                args += ["--seed", seed]
            seed = seed or f"127.0.0.1:{gossip}"
            log = open(os.path.join(self.dir, f"{name}.log"), "w")
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=log))
            self.urls.append(f"http://127.0.0.1:{http}")

    def wait_models(self, at, count, timeout=30):
        """Waits until node `at` sees `count` nodes serving a model, linked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = get_json(self.urls[at] + "/cluster")
            if view and sum(1 for n in view["nodes"] if n["models"] and n["connected"] and n["status"] == "alive") >= count:
                return
            time.sleep(0.05)
        raise SystemExit(f"cluster did not form; logs in {self.dir}")

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def bench(urls, model, *extra):
    out = subprocess.check_output([BINARY, "bench", "--node", ",".join(urls), "--model", model, "--json", *extra])
    return json.loads(out)


def synthetic(name, service_ms, batch=1):
    return f'[[model]]\nname = "{name}"\nkind = "synthetic"\nservice_time_ms = {service_ms}\nmax_batch_size = {batch}\nmax_queue_size = 100000\n'


def overhead():
    tiny = os.path.join(ROOT, "models", "tiny.onnx")
    registry = f'[[model]]\nname = "tiny"\npath = "{tiny}"\nmax_batch_size = 32\nmax_queue_delay_us = 2000\n'
    cluster = Cluster(["", registry])
    try:
        cluster.wait_models(0, 1)
        args = ["--concurrency", "1", "--duration", "20s", "--binary"]
        bench([cluster.urls[1]], "tiny", "--duration", "2s")  # warm up
        direct = bench([cluster.urls[1]], "tiny", *args)
        forwarded = bench([cluster.urls[0]], "tiny", *args)
        for label, result in [("direct to C", direct), ("A -> C", forwarded)]:
            l = result["latency_ms"]
            print(f"{label:12} p50 {l['p50']:.3f} ms  p99 {l['p99']:.3f} ms  {result['throughput_rps']:.0f} req/s  ran on {result['by_node']}")
        print(f"forwarding overhead: p50 {forwarded['latency_ms']['p50'] - direct['latency_ms']['p50']:+.3f} ms, "
              f"p99 {forwarded['latency_ms']['p99'] - direct['latency_ms']['p99']:+.3f} ms")
    finally:
        cluster.stop()


def scaling():
    """Capacity is measured, not assumed: one node alone first (its timer
    rounds each 10 ms hold up), then three such nodes with all load into n1."""
    service_ms = 10
    args = ["--concurrency", "48", "--duration", "20s", "--binary"]
    single = Cluster([synthetic("svc", service_ms)])
    try:
        single.wait_models(0, 1)
        alone = bench(single.urls, "svc", *args)["throughput_rps"]
    finally:
        single.stop()
    cluster = Cluster([synthetic("svc", service_ms)] * 3)
    try:
        cluster.wait_models(0, 3)
        bench([cluster.urls[0]], "svc", "--concurrency", "16", "--duration", "3s")  # learn service times
        result = bench([cluster.urls[0]], "svc", *args)
        capacity = 3 * alone
        print(f"one node alone: {alone:.1f} req/s; 3 nodes, all load into n1: {result['throughput_rps']:.1f} req/s "
              f"= {result['throughput_rps'] / capacity:.3f} of 3x; by node {result['by_node']}; "
              f"p50 {result['latency_ms']['p50']:.1f} ms p99 {result['latency_ms']['p99']:.1f} ms")
    finally:
        cluster.stop()


def mixed(seconds):
    services = [5, 20, 80]
    capacity = sum(1000 / s for s in services)
    rate = round(0.55 * capacity, 1)
    print(f"nodes with 5, 20, 80 ms per request (capacity {capacity:.1f} req/s), open loop {rate} req/s into n1 and n2")
    for policy in ["eta", "least-queue", "round-robin", "random", "weighted-score"]:
        cluster = Cluster([synthetic("svc", s) for s in services], policy)
        try:
            cluster.wait_models(0, 3)
            cluster.wait_models(1, 3)
            bench(cluster.urls[:2], "svc", "--rate", str(rate), "--duration", "3s")  # learn service times
            result = bench(cluster.urls[:2], "svc", "--rate", str(rate), "--duration", f"{seconds}s", "--binary")
            l = result["latency_ms"]
            print(f"  {policy:15} p50 {l['p50']:8.1f} ms  p99 {l['p99']:8.1f} ms  max {l['max']:8.1f} ms  "
                  f"errors {result['errors']}  by node {result['by_node']}")
        finally:
            cluster.stop()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("overhead", "all"):
        overhead()
    if what in ("scaling", "all"):
        scaling()
    if what in ("mixed", "all"):
        mixed(int(sys.argv[2]) if len(sys.argv) > 2 else 20)
