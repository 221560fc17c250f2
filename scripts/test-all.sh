#!/usr/bin/env bash
# Every check and test of todoapp, as CI runs them. On Debian/Ubuntu it
# installs what the tests need (MariaDB, systemd tools, debootstrap, Nix's
# parser) when missing. Needs root for apt and for the container test; as
# another user it uses sudo for those steps.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -E env "PATH=$PATH" "$@"; fi
}
step() { printf '\n==> %s\n' "$*"; }

missing=()
command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v systemd-socket-activate >/dev/null || missing+=(systemd)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v nix-instantiate >/dev/null || missing+=(nix-bin)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v jq >/dev/null || missing+=(jq)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's mariadb-server package starts a system-wide server; the tests
# start their own and do not need it. Likewise the prometheus package's
# server: only its promtool is used.

# The container test's Debian root file system (debootstrap, cached) is
# fetched while the Rust code compiles: it is network-bound, the build is not.
rootfs_log=$(mktemp)
as_root bash scripts/container-test.sh --rootfs-only >"$rootfs_log" 2>&1 &
rootfs_job=$!

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Prometheus alert rules (promtool)"
promtool check rules deploy/observability/alerts.yml
(cd deploy/observability && promtool test rules alerts.test.yml)
jq empty deploy/observability/grafana-dashboard.json

step "cargo test (unit, store, system and end-to-end tests; real MariaDB, real processes)"
# The system tests run the service binaries, so build them all first.
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast

step "systemd units: up to date, verify, security scores"
as_root bash scripts/check-units.sh

step "Nix: parse, format, dead code, builtins-only evaluation, flake.lock"
bash scripts/check-nix.sh

step "the container test under a real systemd"
# The debug binaries built for the tests above: a separate release build
# would compile every crate a second time (several minutes on CI's 2 cores)
# and the container test checks behaviour, not speed.
if ! wait "$rootfs_job"; then
  # The container test below tries again and fails loudly if it cannot.
  cat "$rootfs_log" >&2
fi
as_root bash scripts/container-test.sh --bin-dir target/debug

step "all checks passed"
