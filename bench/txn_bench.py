#!/usr/bin/env python3
"""Exactly-once costs measured with librdkafka (confluent_kafka) against a running broker.

produce: the same workload (--records x --size bytes, acks=all, linger 5 ms) three ways:
plain acks=all, idempotent, and transactional with a commit every --commit-ms; prints
records/s of each and the ratios to plain.
consume: fills one topic through a transactional producer (commits every --commit-ms, so the
log holds commit markers) and reads it back with isolation.level read_uncommitted and
read_committed; prints records/s of each and the ratio.

Each producer sends one untimed warm-up record first. usage: txn_bench.py --bootstrap 127.0.0.1:9092 [--records 500000] [--size 100] [--repeats 3]
"""
import argparse
import json
import statistics
import time
import os
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition


TICKS = os.sysconf("SC_CLK_TCK")
BROKER_PID = None


def broker_cpu_s():
    """CPU seconds the broker process has used (0 when --broker-pid is not given)."""
    if BROKER_PID is None:
        return 0.0
    with open(f"/proc/{BROKER_PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def produce(bootstrap, topic, records, size, mode, commit_ms):
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    if mode == "idempotent":
        conf["enable.idempotence"] = True
    if mode == "transactional":
        conf["transactional.id"] = f"bench-{uuid.uuid4()}"
    p = Producer(conf)
    payload = bytes(size)
    # One untimed warm-up record: connections, metadata and the producer id are set up
    # before timing (librdkafka's idempotent producer acquires its id asynchronously).
    if mode == "transactional":
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(topic, payload, partition=0)
        p.commit_transaction(30)
        p.begin_transaction()
    else:
        p.produce(topic, payload, partition=0)
        p.flush(30)
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    start = time.perf_counter()
    last_commit = start
    commits = 0
    for i in range(records):
        while True:
            try:
                p.produce(topic, payload, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
            if mode == "transactional" and (time.perf_counter() - last_commit) * 1000 >= commit_ms:
                p.commit_transaction(30)
                commits += 1
                p.begin_transaction()
                last_commit = time.perf_counter()
    if mode == "transactional":
        p.commit_transaction(60)
        commits += 1
    else:
        p.flush(60)
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} delivery errors, first: {errors[0]}")
    return records / elapsed, commits


def consume(bootstrap, topic, records, isolation):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "fetch.queue.backoff.ms": 10,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    start = None
    while got < records + 1:
        batch = c.consume(min(10000, records + 1 - got), 5.0)
        if not batch:
            raise SystemExit(f"{isolation}: stalled after {got} records")
        if start is None:
            start = time.perf_counter()
        got += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - start
    c.close()
    return records / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--commit-ms", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--broker-pid", type=int, help="report the broker's CPU per million records")
    args = ap.parse_args()
    global BROKER_PID
    BROKER_PID = args.broker_pid
    cpu = {"plain": [], "idempotent": [], "transactional": []}

    rates = {"plain": [], "idempotent": [], "transactional": []}
    commits = []
    for _ in range(args.repeats):
        for mode in rates:
            cpu0 = broker_cpu_s()
            rate, n = produce(args.bootstrap, f"txnbench-{mode}-{uuid.uuid4().hex[:8]}",
                              args.records, args.size, mode, args.commit_ms)
            rates[mode].append(rate)
            cpu[mode].append((broker_cpu_s() - cpu0) * 1e6 / args.records)
            if mode == "transactional":
                commits.append(n)
    med = {m: statistics.median(v) for m, v in rates.items()}

    filled = f"txnbench-consume-{uuid.uuid4().hex[:8]}"
    produce(args.bootstrap, filled, args.records, args.size, "transactional", args.commit_ms)
    reads = {"read_uncommitted": [], "read_committed": []}
    for _ in range(args.repeats):
        for iso in reads:
            reads[iso].append(consume(args.bootstrap, filled, args.records, iso))
    rmed = {i: statistics.median(v) for i, v in reads.items()}

    print(json.dumps({
        "records": args.records, "size": args.size, "commit_ms": args.commit_ms,
        "produce_records_per_s": {m: round(v) for m, v in med.items()},
        "broker_cpu_s_per_million_records": {m: round(statistics.median(v), 3) for m, v in cpu.items()},
        "idempotent_vs_plain": round(med["idempotent"] / med["plain"], 3),
        "transactional_vs_plain": round(med["transactional"] / med["plain"], 3),
        "commits_per_run": commits,
        "consume_records_per_s": {i: round(v) for i, v in rmed.items()},
        "read_committed_vs_uncommitted": round(rmed["read_committed"] / rmed["read_uncommitted"], 3),
    }, indent=1))


if __name__ == "__main__":
    main()
