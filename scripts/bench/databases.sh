#!/usr/bin/env bash
# Issue 11: MariaDB and Galera rows of BENCHMARKS.md, 1 and 2 replicas, through
# gateway 0 (every gateway balances over every instance). Release build first:
#   cargo build --release -p todoapp-stack -p todoapp-bench -p todoapp-gateway -p todoapp-user -p todoapp-todo
# Reports: /tmp/dbb-DB-REPLICAS.txt. CFGS picks configurations (default all four).
set -uo pipefail
cd "$(dirname "$0")/../.."
R=target/release
lift="TODOAPP_GATEWAY_FAIR_SHARE__READS_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__READ_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITES_PER_SEC=1000000 TODOAPP_GATEWAY_FAIR_SHARE__WRITE_BURST=1000000 TODOAPP_GATEWAY_FAIR_SHARE__MAX_IN_FLIGHT_PER_USER=100000"
for cfg in ${CFGS:-mariadb:1 galera:1 mariadb:2 galera:2}; do
  db=${cfg%:*} r=${cfg#*:}
  dir=/tmp/dbb-$db-$r
  rm -rf $dir
  env $lift TODOAPP_BIN_DIR=$PWD/$R $R/todoapp-stack --state-dir $dir --listen 127.0.0.1:0 --database $db --replicas $r > $dir.log 2>&1 &
  s=$!
  for _ in $(seq 240); do [ -s $dir/stack.json ] && break; sleep 0.5; done
  [ -s $dir/stack.json ] || { echo "stack $cfg did not start"; tail $dir.log; kill $s; wait $s; continue; }
  sleep 2
  $R/todoapp-bench --state-dir $dir --users 16 --entries 50 --scenarios get,list,create,update,login:16 --warmup 2s --duration 6s > /tmp/dbb-$db-$r.txt 2>&1
  echo "$cfg: bench rc=$?"
  kill -TERM $s; wait $s
  sleep 2
done
