#!/usr/bin/env python3
"""Runs the neutral harness (../shared/bench) against a running Gregor broker, case by case,
with the broker's CPU seconds per case, and prints medians as a Markdown table.

The harness's suite.py consumes and measures end-to-end latency through consumer groups;
until Gregor serves groups this runner passes --no-group (direct assignment) instead.

usage: run_matrix.py --bench-dir ../shared/bench --broker-pid PID [--repeats 3] [--sink 127.0.0.1:19092]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_peak_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    return 0


def run(bench_dir, script, args, pid):
    before = cpu_s(pid) if pid else 0.0
    out = subprocess.run([sys.executable, os.path.join(bench_dir, script)] + args,
                         capture_output=True, text=True, timeout=600)
    after = cpu_s(pid) if pid else 0.0
    try:
        row = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"{script} {args} failed: {out.stdout} {out.stderr}")
    row["broker_cpu_s"] = round(after - before, 2)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-dir", required=True)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--broker-pid", type=int, required=True)
    ap.add_argument("--sink", help="bootstrap of a running sink_broker.py for the client ceiling")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="matrix.jsonl")
    a = ap.parse_args()
    b, pid = a.bootstrap, a.broker_pid
    results = {}
    with open(a.out, "a") as log:
        for rep in range(a.repeats):
            tag = uuid.uuid4().hex[:6]
            cases = []
            if a.sink:
                cases.append(("client ceiling (sink), 100 B acks=1", "produce_bench.py",
                              ["--bootstrap", a.sink, "--topic", "sink", "--records", "1000000", "--size", "100", "--acks", "1"], None))
            t100, t1k = f"m100-{tag}", f"m1k-{tag}"
            cases += [
                ("produce 1,000,000 x 100 B, acks=1", "produce_bench.py",
                 ["--bootstrap", b, "--topic", t100, "--records", "1000000", "--size", "100", "--acks", "1"], pid),
                ("produce 1,000,000 x 100 B, acks=all", "produce_bench.py",
                 ["--bootstrap", b, "--topic", f"m100all-{tag}", "--records", "1000000", "--size", "100", "--acks", "all"], pid),
                ("produce 200,000 x 1 KiB, acks=1", "produce_bench.py",
                 ["--bootstrap", b, "--topic", t1k, "--records", "200000", "--size", "1024", "--acks", "1"], pid),
                ("produce 200,000 x 1 KiB, acks=all", "produce_bench.py",
                 ["--bootstrap", b, "--topic", f"m1kall-{tag}", "--records", "200000", "--size", "1024", "--acks", "all"], pid),
                ("consume 100 B topic, librdkafka defaults", "consume_bench.py",
                 ["--bootstrap", b, "--topic", t100, "--records", "1000000", "--no-group"], pid),
                ("consume 100 B topic, fetch.queue.backoff.ms=10", "consume_bench.py",
                 ["--bootstrap", b, "--topic", t100, "--records", "1000000", "--no-group", "--set", "fetch.queue.backoff.ms=10"], pid),
                ("consume 1 KiB topic, librdkafka defaults", "consume_bench.py",
                 ["--bootstrap", b, "--topic", t1k, "--records", "200000", "--no-group"], pid),
                ("e2e 1,000/s, acks=all, linger 0", "e2e_latency.py",
                 ["--bootstrap", b, "--rate", "1000", "--duration", "10", "--no-group"], pid),
            ]
            for name, script, args, p in cases:
                row = run(a.bench_dir, script, args, p)
                row["case"], row["rep"] = name, rep
                log.write(json.dumps(row) + "\n")
                log.flush()
                results.setdefault(name, []).append(row)
                print(f"{name} r{rep}: {row.get('records_per_s') or row.get('e2e_p99_ms')}", file=sys.stderr)
    med = lambda rows, k: statistics.median([r[k] for r in rows if r.get(k) is not None]) if any(r.get(k) is not None for r in rows) else None
    print(f"peak broker RSS: {rss_peak_kb(pid) / 1024:.1f} MiB")
    print("| case | records/s | MB/s | latency p50 / p99 / max (ms) | client CPU | broker CPU-s |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for name, rows in results.items():
        if rows[0]["bench"] == "e2e_latency":
            lat = f"e2e {med(rows,'e2e_p50_ms')} / {med(rows,'e2e_p99_ms')} / {med(rows,'e2e_max_ms')}; ack p50 {med(rows,'ack_p50_ms')}"
            rps, mbs, ccpu = "1,000 (fixed)", "-", "-"
        else:
            rps = f"{med(rows,'records_per_s'):,.0f}"
            mbs = f"{med(rows,'mb_per_s'):.1f}"
            lat = (f"{med(rows,'latency_p50_ms')} / {med(rows,'latency_p99_ms')} / {med(rows,'latency_max_ms')}"
                   if rows[0]["bench"] == "produce" else "-")
            ccpu = f"{med(rows,'client_cpu_pct'):.0f} %"
        bcpu = med(rows, "broker_cpu_s") if rows[0].get("broker_cpu_s") is not None and name.find("sink") < 0 else "-"
        print(f"| {name} | {rps} | {mbs} | {lat} | {ccpu} | {bcpu} |")


if __name__ == "__main__":
    main()
