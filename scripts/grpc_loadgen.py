#!/usr/bin/env python3
"""Closed-loop KServe v2 gRPC load generator (tritonclient.grpc), the gRPC
counterpart of ../shared/peers/loadgen.py: C clients (threads spread over P
processes), each with its own channel, send the same prepared request back
to back for D seconds after a warm-up; prints one JSON line with
throughput and latency percentiles (ms).

  grpc_loadgen.py --url 127.0.0.1:8001 --model tiny --shape 1,3,32,32 -c 32 -d 12 -w 3
"""
import argparse
import json
import multiprocessing as mp
import resource
import threading
import time

import numpy as np


def client(args, t_warm_end, t_end, out):
    import tritonclient.grpc as grpcclient

    connection = grpcclient.InferenceServerClient(args.url)
    shape = [int(s) for s in args.shape.split(",")]
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    tensor = grpcclient.InferInput(args.input_name, shape, "FP32")
    tensor.set_data_from_numpy(data)
    latencies, errors = [], 0
    while True:
        start = time.perf_counter()
        if start >= t_end:
            break
        try:
            connection.infer(args.model, [tensor])
            ok = True
        except Exception:  # noqa: BLE001 - every failure counts as an error
            ok = False
        if start >= t_warm_end:
            if ok:
                latencies.append((time.perf_counter() - start) * 1000)
            else:
                errors += 1
    out.append((latencies, errors))


def process(args, threads, t_start, results):
    t_warm_end, out = t_start + args.warmup, []
    t_end = t_warm_end + args.duration
    before = resource.getrusage(resource.RUSAGE_SELF)
    workers = [threading.Thread(target=client, args=(args, t_warm_end, t_end, out)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results.put(([x for o in out for x in o[0]], sum(o[1] for o in out), cpu))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="host:port of the gRPC server")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input-name", default="input")
    parser.add_argument("--shape", default="1,3,32,32")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=12)
    parser.add_argument("-w", "--warmup", type=float, default=3)
    parser.add_argument("-p", "--procs", type=int, default=0, help="processes (0: 1 if c<=8 else 2)")
    args = parser.parse_args()
    procs = args.procs or (1 if args.concurrency <= 8 else 2)
    shares = [args.concurrency // procs + (1 if i < args.concurrency % procs else 0) for i in range(procs)]
    results = mp.Queue()
    t_start = time.perf_counter() + 0.5
    workers = [mp.Process(target=process, args=(args, n, t_start, results)) for n in shares if n]
    for worker in workers:
        worker.start()
    gathered = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(x for g in gathered for x in g[0])
    errors, cpu = sum(g[1] for g in gathered), sum(g[2] for g in gathered)

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 3) if latencies else None

    print(json.dumps({
        "url": args.url, "model": args.model, "c": args.concurrency, "procs": procs, "duration_s": args.duration,
        "ok": len(latencies), "errors": errors, "rps": round(len(latencies) / args.duration, 1),
        "p50_ms": pct(50), "p99_ms": pct(99), "loadgen_cpu_s": round(cpu, 2),
    }))


if __name__ == "__main__":
    main()
