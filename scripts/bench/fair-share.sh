#!/usr/bin/env bash
# Issue 15 item 3: 8 paced users' GetToDo p99 alone vs beside a C=64 hammer; stack with default limits.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=target/release
rm -rf /tmp/bench-c
$R/todoapp-stack --state-dir /tmp/bench-c --listen 127.0.0.1:0 > /tmp/bench-c.log 2>&1 &
C=$!
trap 'kill $C 2>/dev/null; wait' EXIT
for i in $(seq 60); do [ -s /tmp/bench-c/stack.json ] && break; sleep 0.5; done
sleep 2
$R/todoapp-bench --state-dir /tmp/bench-c --users 9 --entries 5 --warmup 1s --duration 8s \
  --scenarios fair-share-idle,fair-share:64,fair-share-idle,fair-share:64,fair-share-idle,fair-share:64 "$@" \
  --json-out /tmp/bench-fair.json
