#!/usr/bin/env bash
# Two local stacks side by side (release build), alternating todoapp-bench
# runs between them so both see the same drift of a noisy machine:
#   ab.sh bounds   A: every connection/call bound at its default,
#                  B: the bounds raised out of the way        (issue 8)
#   ab.sh metrics  A: metrics on (the stack's default), B: --no-metrics (issue 12)
# Both stacks have the per-user fair share lifted (the throughput scenarios
# drive 16 users far past it). Reports: /tmp/bench-{a,b}-ROUND.json; then
#   python3 scripts/bench/ab-summary.py
# ROUNDS (default 8) rounds of SCENARIOS (default get:64,list:64), B first
# every other round.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=target/release
mode=${1:?usage: ab.sh bounds|metrics}
lift_fair="TODOAPP_GATEWAY_FAIR_SHARE__READS_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__READ_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITES_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITE_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__MAX_IN_FLIGHT_PER_USER=100000"
env_b="" args_b=""
case $mode in
  bounds)
    for s in GATEWAY TODO USER; do
      env_b="$env_b TODOAPP_${s}_LIMITS__MAX_CALLS=1000000 TODOAPP_${s}_LIMITS__MAX_CALLS_PER_CONNECTION=100000 TODOAPP_${s}_LIMITS__MAX_CONCURRENT_STREAMS=10000 TODOAPP_${s}_LIMITS__MAX_HEADER_LIST_BYTES=1048576 TODOAPP_${s}_LIMITS__MAX_CONNECTIONS_PER_ADDRESS=100000"
    done ;;
  metrics) args_b="--no-metrics" ;;
  *) echo "usage: ab.sh bounds|metrics" >&2; exit 2 ;;
esac
rm -rf /tmp/bench-a /tmp/bench-b /tmp/bench-[ab]-*.json /tmp/bench-[ab]-*.txt
# shellcheck disable=SC2086
env $lift_fair $R/todoapp-stack --state-dir /tmp/bench-a --listen 127.0.0.1:0 > /tmp/bench-a.log 2>&1 &
a=$!
# shellcheck disable=SC2086
env $lift_fair $env_b $R/todoapp-stack --state-dir /tmp/bench-b --listen 127.0.0.1:0 $args_b > /tmp/bench-b.log 2>&1 &
b=$!
trap 'kill $a $b 2>/dev/null; wait' EXIT
for _ in $(seq 120); do
  [ -s /tmp/bench-a/stack.json ] && [ -s /tmp/bench-b/stack.json ] && break
  sleep 0.5
done
[ -s /tmp/bench-a/stack.json ] && [ -s /tmp/bench-b/stack.json ] || { tail /tmp/bench-[ab].log; exit 1; }
for run in $(seq "${ROUNDS:-8}"); do
  if [ $((run % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for s in $order; do
    $R/todoapp-bench --state-dir /tmp/bench-$s --users 16 --entries 20 \
      --scenarios "${SCENARIOS:-get:64,list:64}" --warmup 1s --duration 4s \
      --json-out /tmp/bench-$s-$run.json > /tmp/bench-$s-$run.txt 2>&1
    echo "round $run, stack $s: done"
  done
done
