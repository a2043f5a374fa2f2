#!/usr/bin/env bash
# A/B: consume 1 KiB records with fetch.zero.copy.enable true/false, same data, same run.
set -u
B=${GREGOR:-${CARGO_TARGET_DIR:-$HOME/.cache/gregor-target}/release/gregor}  # cargo build --release -p gregor-cli
PORT=39500
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for mode in true false true false; do
  rm -rf /tmp/zc-data
  $B broker --override listeners=PLAINTEXT://127.0.0.1:$PORT --override log.dirs=/tmp/zc-data \
     --override fetch.zero.copy.enable=$mode > /dev/null 2>/tmp/zc-broker.err &
  pid=$!
  sleep 1
  $B perf produce --brokers 127.0.0.1:$PORT --topic zc --records 400000 --record-size 1024 -X acks=1 -X batch.size=1048576 -X linger.ms=20 --json > /tmp/zc-produce.json
  sync; sleep 1
  for r in 1 2 3; do
    c0=$(cpu $pid)
    out=$($B perf consume --brokers 127.0.0.1:$PORT --topic zc --records 400000 --json)
    c1=$(cpu $pid)
    echo "zero_copy=$mode run=$r broker_cpu_ticks=$((c1-c0)) $out"
  done
  echo "peak_rss_kb=$(grep VmHWM /proc/$pid/status | awk '{print $2}')"
  kill $pid; wait $pid 2>/dev/null
done
