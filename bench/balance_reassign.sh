#!/usr/bin/env bash
# Three-node local cluster (release build): (1) time to give 1,000 partitions' leadership back
# to their preferred replicas after a broker returns, by the controller's periodic check
# (leader.imbalance.check.interval.seconds=1) and by `gregor cluster elect-leaders`; (2) the copy
# rate of a reassignment adding a replica to a partition of MB megabytes, unthrottled and with
# `--throttle`. Usage: bench/balance_reassign.sh [MB] [THROTTLE_BYTES_PER_S]; needs jq and bc.
set -u
B=${GREGOR:-${CARGO_TARGET_DIR:-$HOME/.cache/gregor-target}/release/gregor}  # cargo build --release -p gregor-cli
D=/tmp/balance-bench; BASE=39700; BS=127.0.0.1:$BASE; MB=${1:-200}; THROTTLE=${2:-20000000}
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
# Waits (at most 300 s) until `jq -e FILTER` holds for `topic describe T --format json`.
wait_describe() { local t=$1 f=$2 end=$(( $(date +%s) + 300 ))
  until $B topic describe "$t" --format json --brokers $BS 2>/dev/null | jq -e "$f" >/dev/null; do
    [ "$(date +%s)" -lt $end ] || { echo "timed out waiting for $f on $t"; return 1; }; sleep 0.2; done; }
all_preferred='[.partitions[] | select(.status != [])] | length == 0'
none_led_by_2='[.partitions[] | select(.leader == 2 or .leader == -1)] | length == 0'
all_in_sync='[.partitions[] | select(.under_replicated)] | length == 0'
cluster() { $B local-cluster down --dir $D >/dev/null 2>&1; rm -rf $D
  $B local-cluster up --dir $D --nodes 3 --base-port $BASE "$@" >/dev/null; }

echo "== preferred-leader balancing, 1,000 partitions, RF 3"
for mode in auto elect; do
  if [ $mode = auto ]; then cluster --override leader.imbalance.check.interval.seconds=1; else cluster; fi
  $B topic create bal --partitions 1000 --replication-factor 3 --brokers $BS -X request.timeout.ms=120000 >/dev/null
  wait_describe bal "$all_preferred"
  $B local-cluster kill --dir $D 2 >/dev/null; wait_describe bal "$none_led_by_2"
  t0=$(now); $B local-cluster start --dir $D 2 >/dev/null; echo "$mode: broker 2 serving again after $(since $t0) s"
  if [ $mode = elect ]; then
    wait_describe bal "$all_in_sync"; echo "$mode: every replica back in sync after $(since $t0) s"
    t1=$(now); $B cluster elect-leaders --topic bal --format json --brokers $BS > /tmp/elect.json
    echo "$mode: elect-leaders answered after $(since $t1) s, $(jq '[.[] | select(.result == "ELECTED")] | length' /tmp/elect.json) elected"
    wait_describe bal "$all_preferred"; echo "$mode: every partition on its preferred leader $(since $t1) s after elect-leaders"
  else
    wait_describe bal "$all_preferred"; echo "$mode: every partition on its preferred leader after $(since $t0) s"
  fi
done

echo "== reassignment copy rate, one partition of $MB MB, adding one replica"
cluster
for throttle in none $THROTTLE; do
  t=copy-$throttle
  $B topic create $t --partitions 1 --replication-factor 1 --brokers $BS >/dev/null
  $B perf produce --topic $t --records $((MB * 1000)) --record-size 1000 --acks 1 --brokers $BS --json >/dev/null
  leader=$($B topic describe $t --format json --brokers $BS | jq '.partitions[0].leader')
  other=$(( leader % 3 + 1 ))
  echo "{\"version\":1,\"partitions\":[{\"topic\":\"$t\",\"partition\":0,\"replicas\":[$leader,$other]}]}" > /tmp/$t.json
  extra=(); [ $throttle = none ] || extra=(--throttle $throttle)
  t0=$(now); $B topic reassign --execute --reassignment-json-file /tmp/$t.json "${extra[@]}" --brokers $BS >/dev/null
  end=$(( $(date +%s) + 600 ))
  until $B topic reassign --verify --reassignment-json-file /tmp/$t.json --format json --brokers $BS | jq -e .complete >/dev/null; do
    [ "$(date +%s)" -lt $end ] || { echo "timed out"; break; }; sleep 0.2; done
  took=$(since $t0); bytes=$(du -sb $D/node-$other/data/$t-0 | cut -f1)
  echo "throttle $throttle: $bytes bytes copied in $took s = $(echo "$bytes / $took / 1000000" | bc -l | cut -c1-6) MB/s"
done
$B local-cluster down --dir $D >/dev/null
