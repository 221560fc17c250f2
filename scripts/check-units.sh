#!/usr/bin/env bash
# Checks the plain systemd units in deploy/systemd/ against their single
# source, nixos-modules/units.nix:
#   1. re-renders them (Nix builtins only) and fails if the committed copy
#      is stale (--update rewrites it instead);
#   2. `systemd-analyze verify` must print nothing (no warnings);
#   3. `systemd-analyze security --offline=true` exposure per service:
#      gateway <= 2.0, user/todo <= 1.5.
# Needs nix-instantiate, systemd-analyze (systemd >= 250) and jq; installs
# missing ones with apt-get when run as root. Needs no release binaries.
set -euo pipefail

cd "$(dirname "$0")/.."
update=0
[[ "${1:-}" == "--update" ]] && update=1

fail() { echo "check-units: FAIL: $*" >&2; exit 1; }

need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "check-units: installing $pkg"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  fi
  command -v "$cmd" >/dev/null 2>&1 || fail "$cmd not found (install $pkg)"
}
need nix-instantiate nix-bin
need systemd-analyze systemd
need jq jq

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# render DIR [NIX-ARGS]: writes every rendered file into DIR.
render() {
  local dir=$1 args=${2:-}
  mkdir -p "$dir"
  nix-instantiate --eval --strict --json \
    -E "import ./nixos-modules/render-units.nix { $args }" >"$tmp/render.json" ||
    fail "rendering nixos-modules/render-units.nix failed"
  local f
  for f in $(jq -r 'keys[]' "$tmp/render.json"); do
    jq -j --arg f "$f" '.[$f]' "$tmp/render.json" >"$dir/$f"
  done
}

echo "== render"
render "$tmp/rendered"
generated=$(cd "$tmp/rendered" && ls)
if ((update)); then
  for f in $generated; do cp "$tmp/rendered/$f" "deploy/systemd/$f"; done
  echo "updated deploy/systemd/: $(echo $generated)"
fi
stale=0
for f in $generated; do
  if ! diff -u "deploy/systemd/$f" "$tmp/rendered/$f"; then
    stale=1
  fi
done
((stale == 0)) || fail "deploy/systemd/ is stale: run scripts/check-units.sh --update and commit"
echo "deploy/systemd/ matches nixos-modules/units.nix ($(echo $generated))"

# The example configs must refer to exactly the credentials the units load.
for svc in gateway user todo; do
  for cred in $(grep -o 'LoadCredential=[^:]*' "deploy/systemd/todoapp-$svc.service" | cut -d= -f2); do
    grep -q "\"$cred\"" "deploy/systemd/$svc.toml" ||
      fail "deploy/systemd/$svc.toml does not use credential $cred"
  done
done
if command -v python3 >/dev/null && python3 -c 'import tomllib' 2>/dev/null; then
  for svc in gateway user todo; do
    python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "deploy/systemd/$svc.toml" ||
      fail "deploy/systemd/$svc.toml is not valid TOML"
  done
  echo "example configs parse and use the units' credentials"
fi

echo "== sysusers.d"
mkdir -p "$tmp/root/etc"
: >"$tmp/root/etc/passwd"
: >"$tmp/root/etc/group"
systemd-sysusers --root="$tmp/root" "$PWD/deploy/systemd/todoapp.sysusers.conf" >/dev/null 2>&1 ||
  fail "systemd-sysusers rejects deploy/systemd/todoapp.sysusers.conf"
for svc in gateway user todo; do
  grep -q "^todoapp-$svc:" "$tmp/root/etc/passwd" || fail "sysusers.d does not create todoapp-$svc"
  grep -q "^User=todoapp-$svc$" "deploy/systemd/todoapp-$svc.service" || fail "todoapp-$svc.service runs as another user"
done
echo "sysusers.d creates the service users"

echo "== systemd-analyze verify"
# verify wants ExecStart= to exist: check a copy rendered with stub binaries.
mkdir -p "$tmp/bin"
for svc in gateway user todo; do
  printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/todoapp-$svc"
  chmod +x "$tmp/bin/todoapp-$svc"
done
render "$tmp/verify" "binDir = \"$tmp/bin\";"
out=$(cd "$tmp/verify" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify todoapp-*.socket todoapp-*.service 2>&1) ||
  fail "systemd-analyze verify exited non-zero: $out"
[[ -z "$out" ]] || fail "systemd-analyze verify warned:
$out"
echo "verify: no warnings"

echo "== systemd-analyze security --offline=true"
bad=0
for svc in gateway user todo; do
  limit=1.5
  [[ $svc == gateway ]] && limit=2.0
  report=$(cd deploy/systemd && SYSTEMD_COLORS=0 systemd-analyze security --offline=true --no-pager "todoapp-$svc.service" 2>&1) ||
    true
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")
  [[ -n "$score" ]] || fail "no exposure score for todoapp-$svc.service:
$report"
  if awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s <= l) }'; then
    echo "todoapp-$svc.service: exposure $score (limit $limit) ok"
  else
    echo "todoapp-$svc.service: exposure $score (limit $limit) TOO HIGH; findings:" >&2
    grep '✗' <<<"$report" >&2 || true
    bad=1
  fi
done
((bad == 0)) || fail "exposure above limit"
echo "check-units: all checks passed"
echo "check-units: 6 passed, 0 failed"
