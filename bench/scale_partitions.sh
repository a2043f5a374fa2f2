#!/usr/bin/env bash
# One broker (release), N×10,000 partitions: create time, Metadata time, restarts, RSS, fds.
# Usage: bench/scale_partitions.sh TOPICS (each topic has 10,000 partitions); needs kcat and bc.
set -u
B=${GREGOR:-${CARGO_TARGET_DIR:-$HOME/.cache/gregor-target}/release/gregor}  # cargo build --release -p gregor-cli
PORT=39600; D=/tmp/scale-data; TOPICS=$1
start() { $B broker --override listeners=PLAINTEXT://127.0.0.1:$PORT --override log.dirs=$D > /tmp/scale.out 2>>/tmp/scale.err & pid=$!; 
  t0=$(date +%s.%N); until grep -q listening /tmp/scale.out 2>/dev/null; do sleep 0.05; done; t1=$(date +%s.%N); echo "start: $(echo "$t1-$t0"|bc) s"; }
rm -rf $D /tmp/scale.err; start
t0=$(date +%s.%N)
for i in $(seq 1 $TOPICS); do $B topic create t$i --partitions 10000 --brokers 127.0.0.1:$PORT -X request.timeout.ms=300000 >/dev/null || echo "create t$i failed"; done
t1=$(date +%s.%N); echo "create $((TOPICS*10000)) partitions: $(echo "$t1-$t0"|bc) s"
sleep 2
for r in 1 2 3; do t0=$(date +%s.%N); kcat -L -b 127.0.0.1:$PORT -m 60 > /tmp/scale-md.txt; t1=$(date +%s.%N); echo "metadata (kcat -L): $(echo "$t1-$t0"|bc) s, $(grep -c 'partition ' /tmp/scale-md.txt) partitions"; done
echo "rss: $(grep VmRSS /proc/$pid/status) peak $(grep VmHWM /proc/$pid/status); fds: $(ls /proc/$pid/fd | wc -l)"
kill -9 $pid; wait $pid 2>/dev/null; rm -f /tmp/scale.out; echo "after SIGKILL:"; start
echo "fds after start: $(ls /proc/$pid/fd | wc -l)"
kill $pid; wait $pid 2>/dev/null; rm -f /tmp/scale.out; echo "after SIGTERM:"; start
echo "rss: $(grep VmHWM /proc/$pid/status); fds: $(ls /proc/$pid/fd | wc -l)"
kcat -L -b 127.0.0.1:$PORT -m 60 | grep -c 'partition '
kill $pid; wait $pid 2>/dev/null
grep -ci "too many\|error" /tmp/scale.err
