#!/usr/bin/env python3
"""Measures what docs/BENCHMARKS.md records for membership, with the release
binary: start to ready, formation of N nodes, kill -9 detection, rejoin after
restart, and idle memory of one node.

    python3 scripts/measure_membership.py --nodes 3 --runs 5
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

BINARY = os.path.join(os.path.dirname(__file__), "..", "target", "release", "gpumesh")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status, response.read()
    except Exception:
        return None, b""


def linked_alive(http_port):
    status, body = get(f"http://127.0.0.1:{http_port}/cluster")
    if status != 200:
        return set()
    view = json.loads(body)
    return {n["name"] for n in view["nodes"] if n["status"] == "alive" and n["trusted"] and n["connected"]}


def status_of(http_port, name):
    status, body = get(f"http://127.0.0.1:{http_port}/cluster")
    if status != 200:
        return None
    return next((n["status"] for n in json.loads(body)["nodes"] if n["name"] == name), None)


def wait(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise SystemExit("timed out")


def start(name, ports, data, secret, seed):
    http, gossip, cluster = ports
    args = [BINARY, "node", "--name", name, "--http", f"127.0.0.1:{http}", "--gossip", f"127.0.0.1:{gossip}",
            "--cluster", f"127.0.0.1:{cluster}", "--data-dir", os.path.join(data, name), "--secret-file", secret]
    if seed:
        args += ["--seed", seed]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_once(count):
    data = tempfile.mkdtemp()
    secret = os.path.join(data, "secret")
    with open(secret, "wb") as f:
        f.write(subprocess.check_output([BINARY, "keygen"]))
    os.chmod(secret, 0o400)
    ports = [(free_port(), free_port(socket.SOCK_DGRAM), free_port()) for _ in range(count)]
    names = [f"m{i + 1}" for i in range(count)]
    seed = f"127.0.0.1:{ports[0][1]}"
    result = {}
    procs = []
    try:
        t0 = time.monotonic()
        procs.append(start(names[0], ports[0], data, secret, None))
        wait(lambda: get(f"http://127.0.0.1:{ports[0][0]}/v2/health/ready")[0] == 200)
        result["ready_ms"] = (time.monotonic() - t0) * 1000
        t1 = time.monotonic()
        for i in range(1, count):
            procs.append(start(names[i], ports[i], data, secret, seed))
        wait(lambda: all(linked_alive(p[0]) == set(names) for p in ports))
        result["formation_ms"] = (time.monotonic() - t1) * 1000
        time.sleep(5)
        with open(f"/proc/{procs[0].pid}/status") as f:
            rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        result["idle_rss_mb"] = rss_kb / 1024
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait()
        t2 = time.monotonic()
        survivors = ports[:-1]
        # Gossip failure detection, not the dropped TCP link: the status leaves "alive".
        wait(lambda: all(status_of(p[0], names[-1]) not in (None, "alive") for p in survivors))
        result["detect_ms"] = (time.monotonic() - t2) * 1000
        t3 = time.monotonic()
        procs[-1] = start(names[-1], ports[-1], data, secret, seed)
        wait(lambda: all(linked_alive(p[0]) == set(names) for p in ports))
        result["rejoin_ms"] = (time.monotonic() - t3) * 1000
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [run_once(args.nodes) for _ in range(args.runs)]
    print(f"{args.nodes} nodes, {args.runs} runs (median, min-max):")
    for key in ["ready_ms", "formation_ms", "detect_ms", "rejoin_ms", "idle_rss_mb"]:
        values = [r[key] for r in runs]
        print(f"  {key:<13} {statistics.median(values):8.1f}   ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
