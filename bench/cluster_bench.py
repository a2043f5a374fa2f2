#!/usr/bin/env python3
"""Metadata performance of a 3-node `gregor local-cluster`, driven with librdkafka
(confluent_kafka) and the gregor CLI:

- propagation: --creates topics (1 partition) are created one by one, each at one broker in
  turn; reported are the CreateTopics latency and the time from its answer until the topic
  is listed by Metadata at all three brokers (p50/p99/max);
- partition creation: one topic of each of --partitions (RF 1, so each broker opens a third
  of them; see issue #17 for the file-descriptor limit), timed until CreateTopics answers and
  until every broker lists all its partitions;
- controller failover: after each big topic, SIGKILL of the active controller
  (`gregor local-cluster kill`) to the next successful CreateTopics at a survivor (each try
  with a new librdkafka admin client, 1 s timeout); then the killed node is restarted
  (`gregor local-cluster start`, timed until it serves) before the next step.

usage: cluster_bench.py --gregor target/release/gregor [--dir DIR] [--base-port 29092]
                        [--creates 200] [--partitions 1000,10000]
Needs confluent-kafka (pip install confluent-kafka). Every wait is bounded; the cluster is
taken down at the end, also on failure.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka.admin import AdminClient, NewTopic

WAIT_S = 120


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def summary_ms(samples):
    return {
        "p50_ms": round(pct(samples, 50) * 1000, 2),
        "p99_ms": round(pct(samples, 99) * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
        "mean_ms": round(statistics.mean(samples) * 1000, 2),
    }


class Cluster:
    def __init__(self, gregor, directory, base_port):
        self.gregor, self.dir, self.base = gregor, directory, base_port
        self.addrs = [f"127.0.0.1:{base_port + i}" for i in range(3)]
        self.admins = [AdminClient({"bootstrap.servers": a, "broker.address.family": "v4"})
                       for a in self.addrs]

    def cli(self, *args, check=True):
        out = subprocess.run([self.gregor, *args], capture_output=True, text=True,
                             timeout=WAIT_S)
        if check and out.returncode != 0:
            raise RuntimeError(f"gregor {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def local(self, *args):
        return self.cli("local-cluster", *args, "--dir", self.dir)

    def controller(self):
        info = json.loads(self.cli("cluster", "info", "--format", "json", "--brokers",
                                   ",".join(self.addrs)))
        return info["controller"]

    def topic_visible(self, i, name, partitions):
        md = self.admins[i].list_topics(timeout=5)
        t = md.topics.get(name)
        return t is not None and t.error is None and len(t.partitions) == partitions

    def wait_visible_everywhere(self, name, partitions, skip=()):
        deadline = time.monotonic() + WAIT_S
        pending = [i for i in range(3) if i not in skip]
        while pending:
            pending = [i for i in pending if not self.topic_visible(i, name, partitions)]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not visible at brokers {pending}")
        return time.monotonic()

    def create(self, i, name, partitions, timeout=WAIT_S, fresh=False):
        # A fresh client learns the controller from a new Metadata answer; a long-lived one
        # keeps waiting for the controller it knew until its metadata is refreshed.
        admin = (AdminClient({"bootstrap.servers": self.addrs[i], "broker.address.family": "v4"})
                 if fresh else self.admins[i])
        fut = admin.create_topics(
            [NewTopic(name, partitions, 1)], operation_timeout=timeout, request_timeout=timeout
        )[name]
        fut.result(timeout + 5)


def propagation(c, creates):
    create_s, visible_s = [], []
    for n in range(creates):
        name = f"prop-{n}"
        t0 = time.monotonic()
        c.create(n % 3, name, 1)
        t1 = time.monotonic()
        t2 = c.wait_visible_everywhere(name, 1)
        create_s.append(t1 - t0)
        visible_s.append(t2 - t1)
    return {"creates": creates, "create": summary_ms(create_s),
            "propagation_after_answer": summary_ms(visible_s)}


def big_topic(c, partitions):
    name = f"big-{partitions}"
    t0 = time.monotonic()
    c.create(0, name, partitions)
    t1 = time.monotonic()
    t2 = c.wait_visible_everywhere(name, partitions)
    return {"partitions": partitions, "create_s": round(t1 - t0, 3),
            "visible_everywhere_s": round(t2 - t0, 3)}


def failover(c, step):
    victim = c.controller()
    survivor = next(i for i in range(3) if i + 1 != victim)
    killed = time.monotonic()
    c.local("kill", str(victim))
    deadline = killed + WAIT_S
    while True:
        try:
            c.create(survivor, f"after-failover-{step}", 1, timeout=1, fresh=True)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    failover_s = time.monotonic() - killed
    restarted = time.monotonic()
    c.local("start", str(victim))
    restart_s = time.monotonic() - restarted
    return {"killed_controller": victim, "failover_s": round(failover_s, 3),
            "restart_until_serving_s": round(restart_s, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gregor", required=True)
    ap.add_argument("--dir")
    ap.add_argument("--base-port", type=int, default=29092)
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--partitions", default="1000,10000")
    a = ap.parse_args()
    directory = a.dir or tempfile.mkdtemp(prefix="gregor-cluster-bench-")
    c = Cluster(a.gregor, directory, a.base_port)
    report = {}
    try:
        started = time.monotonic()
        c.local("up", "--nodes", "3", "--base-port", str(a.base_port))
        report["up_s"] = round(time.monotonic() - started, 3)
        report["propagation"] = propagation(c, a.creates)
        report["big_topics"] = []
        report["failover"] = []
        for step, n in enumerate(int(p) for p in a.partitions.split(",")):
            report["big_topics"].append(big_topic(c, n))
            report["failover"].append({"after_partitions": n, **failover(c, step)})
        print(json.dumps(report, indent=2))
    finally:
        subprocess.run([a.gregor, "local-cluster", "down", "--dir", directory],
                       capture_output=True, timeout=WAIT_S)
        if not a.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
