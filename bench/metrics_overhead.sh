#!/usr/bin/env bash
# Cost of the metrics on the hot path: one release broker, `gregor perf produce` RECORDS (1,000,000) x
# 100 B (acks=1) then `gregor perf consume` of them, alternately with metrics.listener on and
# off, ROUNDS times each (the order alternates per round); prints records/s and the
# broker's CPU seconds (utime+stime) per run. Usage: bench/metrics_overhead.sh [ROUNDS]; needs jq.
set -u
B=${GREGOR:-${CARGO_TARGET_DIR:-$HOME/.cache/gregor-target}/release/gregor}  # cargo build --release -p gregor-cli
PORT=39800; D=/tmp/metrics-bench; ROUNDS=${1:-3}
run() { local listener=$1 tag=$2
  rm -rf $D; $B broker --override listeners=PLAINTEXT://127.0.0.1:$PORT --override log.dirs=$D \
    --override "metrics.listener=$listener" > /tmp/metrics-bench.out 2>/dev/null & local pid=$!
  until grep -q listening /tmp/metrics-bench.out 2>/dev/null; do sleep 0.05; done
  $B topic create perf --partitions 1 --brokers 127.0.0.1:$PORT >/dev/null
  p=$($B perf produce --topic perf --records ${RECORDS:-1000000} --record-size 100 --acks 1 --json --brokers 127.0.0.1:$PORT | jq .records_per_sec)
  c=$($B perf consume --topic perf --records ${RECORDS:-1000000} --json --brokers 127.0.0.1:$PORT | jq .records_per_sec)
  cpu=$(awk '{printf "%.2f", ($14+$15)/100}' /proc/$pid/stat)
  echo "$tag produce $p consume $c broker_cpu_s $cpu"
  kill $pid; wait $pid 2>/dev/null
}
for r in $(seq 1 $ROUNDS); do if [ $((r % 2)) = 1 ]; then run 127.0.0.1:39801 on; run "" off; else run "" off; run 127.0.0.1:39801 on; fi; done
