#!/usr/bin/env bash
# Issue 8 item 6: cost of the bounds at their defaults vs raised out of the way, same run, alternating.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=target/release
LIFT_FAIR="TODOAPP_GATEWAY_FAIR_SHARE__READS_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__READ_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITES_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITE_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__MAX_IN_FLIGHT_PER_USER=100000"
RAISE=""
for s in GATEWAY TODO USER; do
  RAISE="$RAISE TODOAPP_${s}_LIMITS__MAX_CALLS=1000000 TODOAPP_${s}_LIMITS__MAX_CALLS_PER_CONNECTION=100000 TODOAPP_${s}_LIMITS__MAX_CONCURRENT_STREAMS=10000 TODOAPP_${s}_LIMITS__MAX_HEADER_LIST_BYTES=1048576 TODOAPP_${s}_LIMITS__MAX_CONNECTIONS_PER_ADDRESS=100000"
done
rm -rf /tmp/bench-a /tmp/bench-b
env $LIFT_FAIR $R/todoapp-stack --state-dir /tmp/bench-a --listen 127.0.0.1:0 > /tmp/bench-a.log 2>&1 &
A=$!
env $LIFT_FAIR $RAISE $R/todoapp-stack --state-dir /tmp/bench-b --listen 127.0.0.1:0 > /tmp/bench-b.log 2>&1 &
B=$!
trap 'kill $A $B 2>/dev/null; wait' EXIT
for i in $(seq 60); do [ -s /tmp/bench-a/stack.json ] && [ -s /tmp/bench-b/stack.json ] && break; sleep 0.5; done
sleep 2
ROUNDS=${ROUNDS:-8}
for run in $(seq $ROUNDS); do
  if [ $((run % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for s in $order; do
  $R/todoapp-bench --state-dir /tmp/bench-$s --users 16 --entries 20 --scenarios get:64,list:64 --warmup 1s --duration 4s --json-out /tmp/bench-$s-$run.json > /tmp/bench-$s-$run.txt 2>&1 || { echo "bench $s $run failed"; cat /tmp/bench-$s-$run.txt; }
  echo "== $s run $run"; grep -E "^\| (get|list)" /tmp/bench-$s-$run.txt | head -4 || true
done; done
