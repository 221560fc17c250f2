#!/usr/bin/env bash
# Issue 16: the tail-latency table of BENCHMARKS.md. Per engine (SQLite, one
# private MariaDB) a fresh local stack, fair share lifted, and todoapp-bench
# through the gateway and direct in both connection shapes: the bench's
# default K = 4 connections carrying 64 streams, and 64 connections x 1.
# Release build first:
#   cargo build --release -p todoapp-stack -p todoapp-bench -p todoapp-gateway -p todoapp-user -p todoapp-todo
# Fair share, the per-user quota and the per-address connection limit lifted. Reports: /tmp/tail-ENGINE-kK.txt (and .json).
set -uo pipefail
cd "$(dirname "$0")/../.."
R=target/release
lift="TODOAPP_GATEWAY_FAIR_SHARE__READS_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__READ_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITES_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITE_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__MAX_IN_FLIGHT_PER_USER=100000"
# 64 connections from the one loopback address, to the gateway and (direct)
# to each backend beside the gateway's own: past the default per-address
# limit of 64, so that limit is raised too.
for s in GATEWAY TODO USER; do lift="$lift TODOAPP_${s}_LIMITS__MAX_CONNECTIONS_PER_ADDRESS=1000"; done
# The per-user entry quota (10 000 by default) too: on a fast machine the
# create scenarios fill it within a run, and its refusals are not latency.
lift="$lift TODOAPP_TODO_QUOTA__MAX_ENTRIES=1000000000 TODOAPP_TODO_QUOTA__MAX_BYTES=1000000000000"
for db in ${ENGINES:-sqlite mariadb}; do
  dir=/tmp/tail-$db
  rm -rf $dir
  # shellcheck disable=SC2086
  env $lift TODOAPP_BIN_DIR=$PWD/$R $R/todoapp-stack --state-dir $dir --listen 127.0.0.1:0 --database $db > $dir.log 2>&1 &
  s=$!
  for _ in $(seq 240); do [ -s $dir/stack.json ] && break; sleep 0.5; done
  [ -s $dir/stack.json ] || { echo "stack $db did not start"; tail $dir.log; kill $s; wait $s; continue; }
  sleep 1
  for k in 4 64; do
    $R/todoapp-bench --state-dir $dir --users 16 --entries 50 -k $k --via both \
      --scenarios "${SCENARIOS:-get,list,create,update,get:1}" --warmup 2s --duration ${DURATION:-6s} \
      --json-out /tmp/tail-$db-k$k.json > /tmp/tail-$db-k$k.txt 2>&1
    echo "$db k=$k: bench rc=$?"
  done
  kill -TERM $s; wait $s
  sleep 2
done
