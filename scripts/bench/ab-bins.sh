#!/usr/bin/env bash
# Two local stacks side by side, A running the service binaries of DIR_A and
# B those of DIR_B (release builds, e.g. a copy of target/release from before
# a change), on one engine, alternating todoapp-bench runs between them so
# both see the same drift of a noisy machine (issue 16):
#   ab-bins.sh DIR_A DIR_B [sqlite|mariadb]
# Fair share and the per-user quota lifted on both. Reports: /tmp/bench-{a,b}-ROUND.json; then
#   SCENARIOS=create,update python3 scripts/bench/ab-summary.py
# ROUNDS (default 6) rounds of SCENARIOS (default create:64,update:64,get:64),
# B first every other round; EXTRA adds todoapp-bench arguments (e.g. -k 64);
# ENV_A and ENV_B add settings to one stack only, e.g.
#   ENV_B=TODOAPP_TODO_DATABASE__MAX_CONNECTIONS=4 ab-bins.sh D D sqlite
set -euo pipefail
cd "$(dirname "$0")/../.."
R=target/release
dir_a=${1:?usage: ab-bins.sh DIR_A DIR_B [sqlite|mariadb]}
dir_b=${2:?usage: ab-bins.sh DIR_A DIR_B [sqlite|mariadb]}
db=${3:-sqlite}
lift_fair="TODOAPP_GATEWAY_FAIR_SHARE__READS_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__READ_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITES_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITE_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__MAX_IN_FLIGHT_PER_USER=100000"
# The per-user entry quota (10 000 by default) too: on a fast machine the
# create scenarios fill it within a run, and its refusals are not latency.
lift_fair="$lift_fair TODOAPP_TODO_QUOTA__MAX_ENTRIES=1000000000 TODOAPP_TODO_QUOTA__MAX_BYTES=1000000000000"
rm -rf /tmp/bench-a /tmp/bench-b /tmp/bench-[ab]-*.json /tmp/bench-[ab]-*.txt
# shellcheck disable=SC2086
env $lift_fair ${ENV_A:-} TODOAPP_BIN_DIR="$(realpath "$dir_a")" $R/todoapp-stack --state-dir /tmp/bench-a \
  --listen 127.0.0.1:0 --database "$db" > /tmp/bench-a.log 2>&1 &
a=$!
# shellcheck disable=SC2086
env $lift_fair ${ENV_B:-} TODOAPP_BIN_DIR="$(realpath "$dir_b")" $R/todoapp-stack --state-dir /tmp/bench-b \
  --listen 127.0.0.1:0 --database "$db" > /tmp/bench-b.log 2>&1 &
b=$!
trap 'kill $a $b 2>/dev/null; wait' EXIT
for _ in $(seq 240); do
  [ -s /tmp/bench-a/stack.json ] && [ -s /tmp/bench-b/stack.json ] && break
  sleep 0.5
done
[ -s /tmp/bench-a/stack.json ] && [ -s /tmp/bench-b/stack.json ] || { tail /tmp/bench-[ab].log; exit 1; }
for run in $(seq "${ROUNDS:-6}"); do
  if [ $((run % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for s in $order; do
    # shellcheck disable=SC2086
    $R/todoapp-bench --state-dir /tmp/bench-$s --users 16 --entries 20 \
      --scenarios "${SCENARIOS:-create:64,update:64,get:64}" --warmup 1s --duration 4s \
      ${EXTRA:-} --json-out /tmp/bench-$s-$run.json > /tmp/bench-$s-$run.txt 2>&1
    echo "round $run, stack $s: done"
  done
done
