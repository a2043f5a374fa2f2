#!/usr/bin/env bash
# Does creating many partitions stall the partitions already serving? One release broker;
# `gregor perf produce` sends 1,000 records/s (100 B, acks=1) to an existing topic for
# SECONDS (12) while `gregor topic create` makes PARTITIONS (5,000) new ones; prints the
# produce summary (latency p50/p99/max) and how long the create took.
# Usage: bench/create_stall.sh [PARTITIONS] [SECONDS]; needs jq. GREGOR picks the binary.
set -u
B=${GREGOR:-${CARGO_TARGET_DIR:-$HOME/.cache/gregor-target}/release/gregor}  # cargo build --release -p gregor-cli
PORT=39700; D=/tmp/create-stall; N=${1:-5000}; S=${2:-12}
rm -rf $D; $B broker --override listeners=PLAINTEXT://127.0.0.1:$PORT --override log.dirs=$D \
  --override metrics.listener= > /tmp/create-stall.out 2>/dev/null & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf $D /tmp/create-stall.out' EXIT
until grep -q listening /tmp/create-stall.out 2>/dev/null; do sleep 0.05; done
$B topic create hot --partitions 1 --brokers 127.0.0.1:$PORT >/dev/null
$B perf produce --topic hot --records $((S * 1000)) --record-size 100 --acks 1 --throughput 1000 \
  --json --brokers 127.0.0.1:$PORT > /tmp/create-stall.json &
perf=$!
sleep 2
t0=$(date +%s.%N)
$B topic create wide --partitions $N --brokers 127.0.0.1:$PORT -X request.timeout.ms=300000 >/dev/null
t1=$(date +%s.%N)
wait $perf
echo "create $N partitions: $(echo "$t1-$t0" | bc) s"
jq -c '{records_per_sec, latency_p50_ms, latency_p99_ms, latency_max_ms}' /tmp/create-stall.json 2>/dev/null || cat /tmp/create-stall.json
