#!/usr/bin/env python3
"""Rebalance time: three consumers of one group read a 6-partition topic that a producer
keeps writing to; a fourth member joins. Reported: the time from the join until every
partition has again delivered a record to some member (the group consumes everywhere
again), and the time until the new member got its first record.

usage: rebalance_bench.py --bootstrap 127.0.0.1:9092 [--repeats 3]
Needs confluent-kafka (pip install confluent-kafka). Bounded: each run stops after 60 s.
"""
import argparse
import json
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6


def run_once(bootstrap):
    topic = f"rebalance-{uuid.uuid4().hex[:8]}"
    group = f"rebalance-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(10)
    stop = threading.Event()
    last_seen = {}  # partition -> monotonic time of the newest delivery
    first_of_new = []
    lock = threading.Lock()

    def produce():
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        i = 0
        while not stop.is_set():
            for part in range(PARTITIONS):
                p.produce(topic, value=b"x" * 100, partition=part)
            i += 1
            p.poll(0)
            time.sleep(0.001)
        p.flush(5)

    def consume(is_new):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "latest",
                      "enable.auto.commit": True, "session.timeout.ms": 10000})
        c.subscribe([topic])
        while not stop.is_set():
            for m in c.consume(num_messages=500, timeout=0.05):
                if m.error():
                    continue
                now = time.monotonic()
                with lock:
                    last_seen[m.partition()] = now
                    if is_new and not first_of_new:
                        first_of_new.append(now)
        c.close()

    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=consume, args=(False,)) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(last_seen) == PARTITIONS:
                break
        time.sleep(0.05)
    time.sleep(1.0)  # steady state
    joined = time.monotonic()
    newcomer = threading.Thread(target=consume, args=(True,))
    newcomer.start()
    threads.append(newcomer)
    resumed = None
    deadline = joined + 60
    # The group has resumed when every partition delivered something after the rebalance
    # began; a partition that kept flowing through it counts once it delivers after the
    # newcomer got its first record (the rebalance is over by then).
    while time.monotonic() < deadline:
        with lock:
            if first_of_new and all(last_seen.get(p, 0) >= first_of_new[0] for p in range(PARTITIONS)):
                resumed = max(last_seen[p] for p in range(PARTITIONS))
                break
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(20)
    return {
        "rebalance_resume_s": round(resumed - joined, 3) if resumed else None,
        "newcomer_first_record_s": round(first_of_new[0] - joined, 3) if first_of_new else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    runs = [run_once(a.bootstrap) for _ in range(a.repeats)]
    ok = [r["rebalance_resume_s"] for r in runs if r["rebalance_resume_s"] is not None]
    print(json.dumps({"bench": "rebalance", "runs": runs,
                      "median_rebalance_resume_s": statistics.median(ok) if ok else None}))


if __name__ == "__main__":
    main()
