#!/usr/bin/env python3
"""Replication costs on a 3-node `gregor local-cluster` (issue #14), each figure against its
RF 1 counterpart in the same run:

- produce: --records x 100 B, acks=all (idempotent, linger 5 ms), to a fresh RF 1 topic and a
  fresh RF 3 topic (min.insync.replicas 2), alternating, --repeats times, with the neutral
  harness (../shared/bench/produce_bench.py, librdkafka) and with `gregor perf produce`;
  reported are records/s and the RF 3 / RF 1 ratio of the medians, and the brokers' CPU
  seconds per run;
- end to end: ../shared/bench/e2e_latency.py at --rate records/s, RF 3, acks=all, linger 0;
- follower catch-up: one follower of an RF 3 topic is SIGKILLed (`gregor local-cluster kill`),
  --catchup-mb of 1000 B records are written without it (acks=1), then it is started again;
  timed from `start` returning (the broker serves) until Metadata lists it in the ISR again,
  with its CPU seconds; next to the disk's sequential read rate of the leader's segment
  (dd with O_DIRECT, so not from the page cache).

usage: replication_bench.py --gregor target/release/gregor [--dir DIR] [--base-port 39192]
         [--records 1000000] [--repeats 3] [--rate 1000] [--duration 20] [--catchup-mb 1000]
Needs confluent-kafka (pip install confluent-kafka). Every wait is bounded; the cluster is
taken down at the end, also on failure. Prints one JSON object.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(HERE, "..", "..", "shared", "bench")
WAIT_S = 300


def run_json(cmd, timeout=WAIT_S):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    def __init__(self, gregor, directory, base_port):
        self.gregor, self.dir, self.base = gregor, directory, base_port
        self.addrs = [f"127.0.0.1:{base_port + i}" for i in range(3)]
        self.admin = AdminClient({"bootstrap.servers": ",".join(self.addrs),
                                  "broker.address.family": "v4"})

    def cli(self, *args):
        out = subprocess.run([self.gregor, *args], capture_output=True, text=True,
                             timeout=WAIT_S)
        if out.returncode != 0:
            raise RuntimeError(f"gregor {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def local(self, *args):
        return self.cli("local-cluster", *args, "--dir", self.dir)

    def pids(self):
        pids = {}
        for n in (1, 2, 3):
            try:
                with open(os.path.join(self.dir, f"node-{n}", "pid")) as f:
                    pid = int(f.read().strip())
                os.kill(pid, 0)
                pids[n] = pid
            except (OSError, ValueError):
                pass
        return pids

    def create(self, name, rf):
        configs = {"min.insync.replicas": "2"} if rf == 3 else {}
        f = self.admin.create_topics([NewTopic(name, 1, rf, config=configs)])[name]
        f.result(timeout=30)
        self.wait(lambda: self.isr(name) is not None and len(self.isr(name)[1]) == rf,
                  f"{name} in sync")

    def isr(self, topic):
        md = self.admin.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None or 0 not in t.partitions:
            return None
        p = t.partitions[0]
        return p.leader, sorted(p.isrs)

    def wait(self, check, what, timeout=WAIT_S):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if check():
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}")


def produce_harness(c, topic, records, rf):
    return run_json([sys.executable, os.path.join(HARNESS, "produce_bench.py"),
                     "--bootstrap", c.addrs[0], "--topic", topic, "--records", str(records),
                     "--size", "100", "--acks", "all", "--idempotence", "--linger-ms", "5",
                     "--replication-factor", str(rf)] + (["--min-insync", "2"] if rf == 3 else []))


def produce_perf(c, topic, records):
    return run_json([c.gregor, "perf", "produce", "--brokers", c.addrs[0], "--topic", topic,
                     "--records", str(records), "--record-size", "100", "--acks", "all",
                     "--json"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gregor", required=True)
    ap.add_argument("--dir")
    ap.add_argument("--base-port", type=int, default=39192)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--catchup-mb", type=int, default=1000)
    args = ap.parse_args()
    own_dir = args.dir is None
    directory = args.dir or tempfile.mkdtemp(prefix="gregor-repl-bench-")
    c = Cluster(os.path.abspath(args.gregor), directory, args.base_port)
    result = {"records": args.records, "repeats": args.repeats}
    try:
        c.local("up", "--base-port", str(args.base_port))
        c.wait(lambda: len(c.admin.list_topics(timeout=5).brokers) == 3, "3 live brokers")
        runs = {"harness": {1: [], 3: []}, "perf": {1: [], 3: []}}
        cpu = {1: [], 3: []}
        for i in range(args.repeats):
            for rf in (1, 3):
                for tool in ("harness", "perf"):
                    topic = f"bench-{tool}-rf{rf}-{i}"
                    pids = c.pids()
                    before = sum(cpu_seconds(p) for p in pids.values())
                    if tool == "harness":
                        r = produce_harness(c, topic, args.records, rf)
                    else:
                        c.create(topic, rf)
                        r = produce_perf(c, topic, args.records)
                    after = sum(cpu_seconds(p) for p in pids.values())
                    rps = r.get("records_per_s", r.get("records_per_sec"))
                    runs[tool][rf].append(round(rps))
                    if tool == "harness":
                        cpu[rf].append(round(after - before, 2))
                    print(f"{tool} rf{rf} run {i}: {rps:.0f} rec/s, "
                          f"brokers {after - before:.1f} CPU-s", file=sys.stderr)
        for tool, by_rf in runs.items():
            m1, m3 = statistics.median(by_rf[1]), statistics.median(by_rf[3])
            result[f"produce_{tool}"] = {"rf1_records_per_s": by_rf[1],
                                         "rf3_records_per_s": by_rf[3],
                                         "ratio_rf3_over_rf1": round(m3 / m1, 3)}
        result["broker_cpu_s_per_harness_run"] = {"rf1": cpu[1], "rf3": cpu[3]}

        e2e = {}
        for rf in (1, 3):
            e2e[f"rf{rf}"] = run_json(
                [sys.executable, os.path.join(HARNESS, "e2e_latency.py"),
                 "--bootstrap", c.addrs[0], "--rate", str(args.rate),
                 "--duration", str(args.duration), "--acks", "all", "--linger-ms", "0",
                 "--replication-factor", str(rf)] + (["--min-insync", "2"] if rf == 3 else []))
        result["e2e"] = e2e

        # Follower catch-up.
        c.create("catchup", 3)
        leader, _ = c.isr("catchup")
        follower = next(n for n in (1, 2, 3) if n != leader)
        c.local("kill", str(follower))
        c.wait(lambda: follower not in c.isr("catchup")[1], "the killed follower out of the ISR")
        records = args.catchup_mb * 1000
        wrote = run_json([c.gregor, "perf", "produce", "--brokers", c.addrs[leader - 1],
                          "--topic", "catchup", "--records", str(records),
                          "--record-size", "1000", "--acks", "1", "--json"], timeout=900)
        seg_dir = os.path.join(directory, f"node-{leader}", "data", "catchup-0")
        seg_bytes = sum(os.path.getsize(os.path.join(seg_dir, f))
                        for f in os.listdir(seg_dir) if f.endswith(".log"))
        t0 = time.time()
        for f in sorted(os.listdir(seg_dir)):
            if f.endswith(".log"):
                subprocess.run(["dd", f"if={os.path.join(seg_dir, f)}", "of=/dev/null",
                                "bs=4M", "iflag=direct"], capture_output=True, check=True)
        disk_mb_s = seg_bytes / 1e6 / (time.time() - t0)
        c.local("start", str(follower))
        started = time.time()
        pid = c.pids()[follower]
        cpu0 = cpu_seconds(pid)
        c.wait(lambda: follower in c.isr("catchup")[1], "the restarted follower in the ISR", 900)
        took = time.time() - started
        cpu1 = cpu_seconds(pid)
        result["catchup"] = {
            "bytes": seg_bytes,
            "records": records,
            "produce_records_per_s": wrote.get("records_per_sec"),
            "seconds": round(took, 2),
            "mb_per_s": round(seg_bytes / 1e6 / took, 1),
            "disk_direct_read_mb_per_s": round(disk_mb_s, 1),
            "follower_cpu_s": round(cpu1 - cpu0, 2),
            "follower_cpu_s_per_million_records": round((cpu1 - cpu0) / records * 1e6, 2),
        }
    finally:
        try:
            c.local("down")
        except Exception as e:
            print(f"could not take the cluster down: {e}", file=sys.stderr)
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
