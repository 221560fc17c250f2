#!/usr/bin/env bash
# Container test: the plain units from deploy/systemd/ under a real systemd.
#
# Boots Debian bookworm (debootstrap, cached) in systemd-nspawn with the
# service binaries (release by default; CI passes its debug build), the committed units and example configs, test
# certificates and MariaDB (unix_socket users), then a oneshot unit inside
# runs the checks below and powers the container off:
#   1. the three sockets listen, the services are not running yet
#   2. todoapp-e2e against the gateway passes
#   3. the services were started by their sockets, Type=notify, sandboxed;
#      the user service's argon2 threads run at nice 10 (the units' system
#      call filter allows setpriority)
#   4. SIGKILL of the todo service: systemd restarts it, calls fail only
#      until the restart is done
#   5. MariaDB restart: the services recover without being restarted
#   6. systemctl stop ends each service cleanly (exit 0, Result=success)
#   7. the sockets start them again on the next request
#
# Usage (as root):
#   scripts/container-test.sh [--bin-dir DIR] [--keep]
#   scripts/container-test.sh --self-test    # stub binaries instead
#   scripts/container-test.sh --rootfs-only  # only build the cached rootfs
# Needs todoapp-{gateway,user,todo,e2e} in --bin-dir (default
# target/release: cargo build --release) unless --self-test. Env: TODOAPP_ROOTFS_CACHE (default
# /var/cache/todoapp-ci/rootfs-bookworm), DEBIAN_MIRROR (default: the Debian
# mirror from apt's sources), BOOT_TIMEOUT (seconds, default 600).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
bin_dir=$repo/target/release
self_test=0
keep=0
rootfs_only=0
while (($#)); do
  case $1 in
    --bin-dir) bin_dir=$(realpath "$2"); shift 2 ;;
    --self-test) self_test=1; shift ;;
    --keep) keep=1; shift ;;
    --rootfs-only) rootfs_only=1; shift ;;
    *) echo "usage: $0 [--bin-dir DIR] [--self-test] [--keep] [--rootfs-only]" >&2; exit 2 ;;
  esac
done

cache=${TODOAPP_ROOTFS_CACHE:-/var/cache/todoapp-ci/rootfs-bookworm}
boot_timeout=${BOOT_TIMEOUT:-600}
include=systemd,systemd-sysv,dbus,mariadb-server,iproute2,procps
started=$SECONDS

log() { echo "[container-test +$((SECONDS - started))s] $*"; }
die() {
  echo "container-test: FAIL: $*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap, systemd-nspawn)"

need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  log "installing $pkg"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (package $pkg)"
}
need debootstrap debootstrap
need systemd-nspawn systemd-container
need systemd-sysusers systemd
need openssl openssl
need flock util-linux
((self_test == 0)) || need gcc gcc

work=$(mktemp -d /var/tmp/todoapp-container-test.XXXXXX)
cleanup() {
  if ((keep)); then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- binaries --------------------------------------------------------------
binaries="todoapp-gateway todoapp-user todoapp-todo todoapp-e2e"
# Stub standing in for the real binaries in --self-test: socket activation
# (checks LISTEN_FDNAMES), sd_notify READY/STOPPING/WATCHDOG, credentials,
# MariaDB socket reachability; the gateway asks both backends per request and
# the e2e stub asks the gateway.
stub_source() {
  cat <<'STUB'
#define _GNU_SOURCE
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static void notify(const char *msg) {
  const char *p = getenv("NOTIFY_SOCKET");
  if (!p) return;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t n = strlen(p);
  if (n >= sizeof sa.sun_path) return;
  memcpy(sa.sun_path, p, n);
  if (p[0] == '@') sa.sun_path[0] = 0;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + n);
  close(fd);
}

static void timeouts(int fd, int secs) {
  struct timeval tv = {.tv_sec = secs};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int db_ok(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX, .sun_path = "/run/mysqld/mysqld.sock"};
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  char b[16];
  if (fd < 0) return 0;
  timeouts(fd, 3);
  int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && read(fd, b, sizeof b) > 0;
  close(fd);
  return ok;
}

static int ask(const char *host, int port, char *line, size_t n) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &sa.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  line[0] = 0;
  if (fd < 0) return 0;
  timeouts(fd, 20);
  ssize_t r = 0;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) r = read(fd, line, n - 1);
  close(fd);
  line[r > 0 ? r : 0] = 0;
  line[strcspn(line, "\n")] = 0;
  return strcmp(line, "ok") == 0;
}

/* Like the user service's argon2 workers: a named thread at nice 10. */
static void *hashing_thread(void *arg) {
  (void)arg;
  prctl(PR_SET_NAME, "argon2-0");
  if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) != 0) perror("stub user: setpriority");
  for (;;) pause();
  return NULL;
}

static int serve(const char *role) {
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS"), *names = getenv("LISTEN_FDNAMES");
  const char *creds = getenv("CREDENTIALS_DIRECTORY"), *wd = getenv("WATCHDOG_USEC");
  int backend = strcmp(role, "gateway") != 0;
  char path[512];
  if (!pid || atoi(pid) != getpid() || !fds || atoi(fds) != 1) {
    fprintf(stderr, "stub %s: not socket-activated\n", role);
    return 1;
  }
  if (!names || strcmp(names, role) != 0) {
    fprintf(stderr, "stub %s: LISTEN_FDNAMES=%s\n", role, names ? names : "");
    return 1;
  }
  snprintf(path, sizeof path, "%s/tls.key", creds ? creds : "/nonexistent");
  if (open(path, O_RDONLY | O_CLOEXEC) < 0) {
    fprintf(stderr, "stub %s: cannot read credential %s\n", role, path);
    return 1;
  }
  if (backend && !db_ok()) {
    fprintf(stderr, "stub %s: database unreachable\n", role);
    return 1;
  }
  struct sigaction act = {.sa_handler = on_term};
  sigaction(SIGTERM, &act, NULL);
  int interval = wd ? (int)(atoll(wd) / 2000) : -1;
  if (strcmp(role, "user") == 0) {
    pthread_t t;
    if (pthread_create(&t, NULL, hashing_thread, NULL) != 0) return 1;
  }
  notify("READY=1\nSTATUS=stub serving");
  fprintf(stderr, "stub %s: ready (watchdog %d ms)\n", role, interval);
  for (;;) {
    struct pollfd p = {.fd = 3, .events = POLLIN};
    int r = poll(&p, 1, interval);
    if (stopping) {
      notify("STOPPING=1");
      fprintf(stderr, "stub %s: SIGTERM, exiting\n", role);
      return 0;
    }
    if (interval > 0) notify("WATCHDOG=1");
    if (r <= 0) continue;
    int c = accept4(3, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) continue;
    timeouts(c, 20);
    char a[64], b[64];
    const char *reply = "ok\n";
    if (backend && !db_ok()) reply = "db-down\n";
    if (!backend && !(ask("127.0.0.1", 50061, a, sizeof a) && ask("127.0.0.1", 50062, b, sizeof b)))
      reply = "upstream-down\n";
    if (write(c, reply, strlen(reply)) < 0) perror("write");
    close(c);
  }
}

int main(int argc, char **argv) {
  const char *role = basename(argv[0]);
  if (strncmp(role, "todoapp-", 8) == 0) role += 8;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "--check-config")) return 0;
  if (strcmp(role, "e2e") == 0) {
    char line[64];
    const char *gw = "127.0.0.1:50051";
    for (int i = 1; i + 1 < argc; i++)
      if (!strcmp(argv[i], "--gateway")) gw = argv[i + 1];
    char host[64];
    snprintf(host, sizeof host, "%s", gw);
    char *colon = strrchr(host, ':');
    if (!colon) return 2;
    *colon = 0;
    int ok = ask(host, atoi(colon + 1), line, sizeof line);
    printf("stub scenario: gateway answered '%s'\n%d passed, %d failed\n", line, ok, !ok);
    return ok ? 0 : 1;
  }
  return serve(role);
}
STUB
}

if ((self_test)); then
  log "self-test: building stub binaries (the harness is tested, not the services)"
  mkdir -p "$work/bin"
  stub_source >"$work/stub.c"
  gcc -O2 -static -Wall -o "$work/bin/todoapp-stub" "$work/stub.c" || die "building the stub failed"
  for b in $binaries; do ln -f "$work/bin/todoapp-stub" "$work/bin/$b"; done
  bin_dir=$work/bin
fi
for b in $binaries; do
  ((rootfs_only)) && break
  [[ -x "$bin_dir/$b" ]] || die "$bin_dir/$b missing: run 'cargo build --release' first (or --self-test)"
done

# --- root file system ------------------------------------------------------
debian_mirror() {
  local m
  m=$(grep -hsE '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
  echo "${m:-http://deb.debian.org/debian}"
}

mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock -w 900 9 || die "another run holds $cache.lock"
if [[ ! -f "$cache/.todoapp-rootfs" || "$(cat "$cache/.todoapp-rootfs")" != "$include" ]]; then
  mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
  log "building rootfs cache $cache from $mirror (a few minutes, once)"
  rm -rf "$cache" "$cache.tmp"
  if ! timeout 600 debootstrap --variant=minbase --include="$include" bookworm "$cache.tmp" "$mirror" \
    >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
  fi
  echo "$include" >"$cache.tmp/.todoapp-rootfs"
  mv "$cache.tmp" "$cache"
fi
if ((rootfs_only)); then
  log "rootfs cache ready"
  exit 0
fi
rootfs=$work/rootfs
log "copying rootfs"
cp -a "$cache" "$rootfs"
exec 9>&-

# --- install ---------------------------------------------------------------
log "installing binaries, units, configs, credentials"
for b in $binaries; do install -m 0755 "$bin_dir/$b" "$rootfs/usr/local/bin/"; done
chroot "$rootfs" /usr/local/bin/todoapp-gateway --help >/dev/null 2>&1 ||
  die "todoapp-gateway does not run inside the Debian rootfs (missing shared libraries?)"
install -m 0644 deploy/systemd/todoapp-*.socket deploy/systemd/todoapp-*.service "$rootfs/etc/systemd/system/"
install -D -m 0644 deploy/systemd/todoapp.sysusers.conf "$rootfs/etc/sysusers.d/todoapp.conf"
systemd-sysusers --root="$rootfs" >/dev/null
install -d -m 0755 "$rootfs/etc/todoapp" "$rootfs/etc/todoapp/test"
install -m 0644 deploy/systemd/{gateway,user,todo}.toml "$rootfs/etc/todoapp/"
# todoapp-e2e runs several times from one address here; the per-address
# limits are meant for the internet (the per-account ones stay).
printf '\n[throttle]\naddress_failures = 100000\nregistrations = 100000\n' >>"$rootfs/etc/todoapp/user.toml"

bash certs/gen-test-certs.sh "$work/certs" >/dev/null
cred() { # service credential-name source-file
  install -D -m 0600 "$work/certs/$3" "$rootfs/etc/todoapp/credentials/$1/$2"
}
cred gateway tls.crt gateway.crt
cred gateway tls.key gateway.key
cred gateway upstream-ca.crt internal-ca.crt
cred gateway client.crt gateway-client.crt
cred gateway client.key gateway-client.key
cred gateway jwt.pub jwt-ed25519.pub
cred user tls.crt user.crt
cred user tls.key user.key
cred user client-ca.crt internal-ca.crt
cred user jwt.key jwt-ed25519.key
cred todo tls.crt todo.crt
cred todo tls.key todo.key
cred todo client-ca.crt internal-ca.crt
chmod 0700 "$rootfs/etc/todoapp/credentials" "$rootfs/etc/todoapp/credentials"/*
install -m 0644 "$work/certs/ca.crt" "$rootfs/etc/todoapp/test/ca.crt"

install -d "$rootfs/usr/local/lib/todoapp-test" "$rootfs/var/log/journal"
cat >"$rootfs/usr/local/lib/todoapp-test/run.sh" <<'RUN'
#!/bin/bash
# Runs inside the container as todoapp-container-test.service.
set -u
out=/var/lib/todoapp-test
mkdir -p "$out"
exec > >(tee -a "$out/log") 2>&1
gateway=127.0.0.1:50051
ca=/etc/todoapp/test/ca.crt
step=boot
units=()

finish() {
  trap - EXIT
  echo "$1" >"$out/result"
  sync
  systemctl poweroff --no-block
  exit 0
}
trap 'finish "FAIL [$step]: test script aborted"' EXIT

fail() {
  echo "FAIL [$step]: $*"
  local u
  for u in "${units[@]}"; do
    echo "--- journalctl -u $u (last 40 lines)"
    journalctl -u "$u" --no-pager -n 40 -o short-monotonic
  done
  echo "--- systemctl list-units 'todoapp-*'"
  systemctl list-units --all --no-pager 'todoapp-*'
  finish "FAIL [$step]: $*"
}

begin() { step=$1; shift; units=("$@"); echo; echo "=== STEP: $step"; }
ok() { echo "ok: $*"; }
prop() { systemctl show -P "$2" "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS DESCRIPTION COMMAND...
wait_for() {
  local limit=$1 what=$2 end
  shift 2
  end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || fail "timed out after ${limit}s waiting for: $what"
    sleep 0.2
  done
}

# e2e LOGFILE [TIMEOUT]: runs the end-to-end suite once, bounded.
e2e() {
  timeout "${2:-180}" todoapp-e2e --gateway "$gateway" --ca "$ca" >"$1" 2>&1 &&
    grep -qE '(^|: )[0-9]+ passed, 0 failed' "$1"
}
summary() { grep -E '[0-9]+ passed, [0-9]+ failed' "$1" | tail -n1; }
later() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; } # later A B: A > B

is_active() { [[ $(prop "$1" ActiveState) == active ]]; }
restarted() { # unit old-pid old-restarts
  [[ $(prop "$1" ActiveState) == active && $(prop "$1" MainPID) != 0 && $(prop "$1" MainPID) != "$2" &&
    $(prop "$1" NRestarts) -gt $3 ]]
}

begin "database setup" mariadb.service
wait_for 120 "mariadb.service active" systemctl is-active --quiet mariadb.service
mariadb <<'SQL' || fail "creating databases and users failed"
CREATE DATABASE IF NOT EXISTS todoapp_user;
CREATE DATABASE IF NOT EXISTS todoapp_todo;
CREATE USER IF NOT EXISTS 'todoapp-user'@'localhost' IDENTIFIED VIA unix_socket;
CREATE USER IF NOT EXISTS 'todoapp-todo'@'localhost' IDENTIFIED VIA unix_socket;
GRANT ALL PRIVILEGES ON todoapp_user.* TO 'todoapp-user'@'localhost';
GRANT ALL PRIVILEGES ON todoapp_todo.* TO 'todoapp-todo'@'localhost';
SQL
ok "databases todoapp_user, todoapp_todo; unix_socket users todoapp-user, todoapp-todo"

begin "sockets listen, services not started" todoapp-gateway.socket todoapp-user.socket todoapp-todo.socket
for s in gateway:50051 user:50061 todo:50062; do
  svc=${s%:*} port=${s#*:}
  wait_for 30 "todoapp-$svc.socket active" systemctl is-active --quiet "todoapp-$svc.socket"
  [[ -n $(ss -Hltn "sport = :$port") ]] || fail "nothing listens on port $port"
  state=$(prop "todoapp-$svc.service" ActiveState)
  [[ $state == inactive ]] || fail "todoapp-$svc.service is $state before any connection"
  ok "todoapp-$svc.socket listens on $(prop "todoapp-$svc.socket" Listen); service inactive"
done

begin "todoapp-e2e against the gateway" todoapp-gateway.service todoapp-user.service todoapp-todo.service
t=$(now)
e2e "$out/e2e-1.log"
rc=$?
cat "$out/e2e-1.log"
((rc == 0)) || fail "todoapp-e2e failed (see its output above)"
ok "todoapp-e2e passed in $(since "$t")s"

begin "per-call journal fields, one trace id across the hop, no token" \
  todoapp-gateway.service todoapp-todo.service todoapp-user.service
# Under systemd the services log to the journal natively: one entry per call
# with SERVICE, METHOD, STATUS, LATENCY_US and the call's TRACE_ID.
field() { # unit match field: the field's value in the newest matching entry
  journalctl -u "$1" "$2" -o cat --output-fields="$3" -n 1 --no-pager
}
trace=$(field todoapp-gateway.service METHOD=/ToDo/CreateToDo TRACE_ID)
[[ $trace =~ ^[0-9a-f]{32}$ && $trace != 00000000000000000000000000000000 ]] ||
  fail "no CreateToDo entry with a TRACE_ID in the gateway's journal (got '$trace')"
for svc in gateway todo; do
  u=todoapp-$svc.service
  n=$(journalctl -u "$u" "TRACE_ID=$trace" METHOD=/ToDo/CreateToDo -o cat --no-pager | wc -l)
  ((n >= 1)) || fail "$u has no CreateToDo entry for trace $trace"
  [[ $(journalctl -u "$u" "TRACE_ID=$trace" METHOD=/ToDo/CreateToDo -o cat --output-fields=SERVICE -n 1 --no-pager) == "$svc" ]] ||
    fail "$u: SERVICE field is not '$svc'"
  [[ $(journalctl -u "$u" "TRACE_ID=$trace" METHOD=/ToDo/CreateToDo -o cat --output-fields=STATUS -n 1 --no-pager) == Ok ]] ||
    fail "$u: STATUS field of the call is not Ok"
  [[ $(journalctl -u "$u" "TRACE_ID=$trace" METHOD=/ToDo/CreateToDo -o cat --output-fields=LATENCY_US -n 1 --no-pager) =~ ^[0-9]+$ ]] ||
    fail "$u: LATENCY_US is not a number"
done
[[ -n $(field todoapp-user.service METHOD=/User/Login TRACE_ID) ]] ||
  fail "the user service logged no Login entry with a TRACE_ID"
# A JWT starts with base64url of '{"' ("eyJ"); none may reach any field.
leaks=$(journalctl -u todoapp-gateway.service -u todoapp-user.service -u todoapp-todo.service \
  -o export --no-pager | grep -c 'eyJ')
((leaks == 0)) || fail "$leaks journal fields contain something shaped like a token"
ok "trace $trace logged by gateway and todo with SERVICE, METHOD, STATUS, LATENCY_US; no token in the journal"

begin "services started by socket activation, Type=notify, sandboxed" \
  todoapp-gateway.service todoapp-user.service todoapp-todo.service
for svc in gateway user todo; do
  u=todoapp-$svc.service
  [[ $(prop "$u" ActiveState)/$(prop "$u" SubState) == active/running ]] ||
    fail "$u is $(prop "$u" ActiveState)/$(prop "$u" SubState)"
  [[ $(prop "$u" Type) == notify ]] || fail "$u has Type=$(prop "$u" Type)"
  [[ " $(prop "$u" TriggeredBy) " == *" todoapp-$svc.socket "* ]] || fail "$u is not triggered by its socket"
  [[ $(prop "$u" NRestarts) == 0 ]] || fail "$u restarted $(prop "$u" NRestarts) times"
  pid=$(prop "$u" MainPID)
  user=$(ps -o user:32= -p "$pid")
  [[ $user == todoapp-$svc ]] || fail "$u runs as '$user'"
  grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" || fail "$u: NoNewPrivs not set"
  grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status" || fail "$u: no seccomp filter"
  grep -q '^CapEff:[[:space:]]*0*$' "/proc/$pid/status" || fail "$u: has capabilities"
  ok "$u active (pid $pid, user $user, watchdog $(prop "$u" WatchdogUSec), seccomp, no capabilities)"
done

begin "argon2 threads at nice 10 under the units' system call filter" todoapp-user.service
# The user service lowers its hashing threads' priority with setpriority();
# a filter that forbids it would leave them at nice 0 without any error.
pid=$(prop todoapp-user.service MainPID)
threads=$(ps -L -o comm=,nice= -p "$pid")
hashing=$(awk '$1 ~ /^argon2-/ { print $2 }' <<<"$threads" | sort -u | xargs)
[[ -n $hashing ]] || fail "todoapp-user.service has no argon2-* threads:
$threads"
[[ $hashing == 10 ]] || fail "argon2 threads run at nice '$hashing', expected 10:
$threads"
main_nice=$(ps -o nice= -p "$pid" | xargs)
[[ $main_nice == 0 ]] || fail "the main thread runs at nice $main_nice, expected 0"
ok "$(grep -c '^argon2-' <<<"$threads") argon2 threads at nice 10, main thread at nice 0"

begin "SIGKILL todo service: systemd restarts it" todoapp-todo.service todoapp-gateway.service
u=todoapp-todo.service
pid0=$(prop "$u" MainPID)
n0=$(prop "$u" NRestarts)
t0=$(now)
systemctl kill --signal=SIGKILL "$u"
restart_done=""
late_failures=0
deadline=$((SECONDS + 120))
i=0
while :; do
  i=$((i + 1))
  ((SECONDS < deadline)) || fail "calls through the gateway still fail $(since "$t0")s after the kill"
  if [[ -z $restart_done ]] && restarted "$u" "$pid0" "$n0"; then restart_done=$(now); fi
  call=$(now)
  if e2e "$out/e2e-kill.log" 60; then
    echo "call $i at +$(awk -v a="$t0" -v b="$call" 'BEGIN { printf "%.1f", b - a }')s: ok"
    break
  fi
  echo "call $i at +$(awk -v a="$t0" -v b="$call" 'BEGIN { printf "%.1f", b - a }')s: failed ($(summary "$out/e2e-kill.log"))"
  # Calls may fail until the restart is done (1 s grace); not after that.
  if [[ -n $restart_done ]] && later "$call" "$(awk -v a="$restart_done" 'BEGIN { print a + 1 }')"; then
    late_failures=$((late_failures + 1))
  fi
  sleep 0.2
done
wait_for 30 "$u restarted" restarted "$u" "$pid0" "$n0"
[[ -n $restart_done ]] || restart_done=$(now)
restart_secs=$(awk -v a="$t0" -v b="$restart_done" 'BEGIN { printf "%.1f", b - a }')
((late_failures == 0)) ||
  { cat "$out/e2e-kill.log"; fail "$late_failures calls failed after the restart had finished (+${restart_secs}s)"; }
ok "$u restarted by systemd (pid $pid0 -> $(prop "$u" MainPID), NRestarts $n0 -> $(prop "$u" NRestarts), active after ${restart_secs}s); calls ok again after $(since "$t0")s"

begin "MariaDB restart: services recover without restarting" \
  mariadb.service todoapp-user.service todoapp-todo.service todoapp-gateway.service
declare -A pid nr
for svc in gateway user todo; do
  pid[$svc]=$(prop "todoapp-$svc.service" MainPID)
  nr[$svc]=$(prop "todoapp-$svc.service" NRestarts)
done
t0=$(now)
timeout 120 systemctl restart mariadb.service || fail "systemctl restart mariadb.service failed"
wait_for 60 "mariadb.service active" systemctl is-active --quiet mariadb.service
ok "mariadb restarted in $(since "$t0")s"
t0=$(now)
deadline=$((SECONDS + 90))
i=0
until e2e "$out/e2e-db.log" 60; do
  i=$((i + 1))
  echo "call $i after the database restart failed: $(summary "$out/e2e-db.log")"
  ((SECONDS < deadline)) || { cat "$out/e2e-db.log"; fail "calls still fail $(since "$t0")s after the database restart"; }
  sleep 1
done
for svc in gateway user todo; do
  u=todoapp-$svc.service
  [[ $(prop "$u" MainPID) == "${pid[$svc]}" && $(prop "$u" NRestarts) == "${nr[$svc]}" ]] ||
    fail "$u was restarted (pid ${pid[$svc]} -> $(prop "$u" MainPID), NRestarts ${nr[$svc]} -> $(prop "$u" NRestarts))"
done
ok "todoapp-e2e passes again after $(since "$t0")s; MainPID and NRestarts unchanged"

begin "systemctl stop ends each service cleanly" \
  todoapp-gateway.service todoapp-user.service todoapp-todo.service
for svc in gateway user todo; do
  u=todoapp-$svc.service
  t0=$(now)
  timeout 60 systemctl stop "$u" || fail "systemctl stop $u failed or hung"
  r="$(prop "$u" Result) code=$(prop "$u" ExecMainCode) status=$(prop "$u" ExecMainStatus)"
  [[ $r == "success code=1 status=0" ]] || fail "$u did not exit cleanly: Result=$r (code 1 = exited)"
  is_active "todoapp-$svc.socket" || fail "todoapp-$svc.socket went down with its service"
  ok "$u stopped in $(since "$t0")s: exit status 0, Result=success; socket still listening"
done

begin "sockets start the services again" todoapp-gateway.service todoapp-user.service todoapp-todo.service
e2e "$out/e2e-again.log" || { cat "$out/e2e-again.log"; fail "todoapp-e2e failed after the stop"; }
for svc in gateway user todo; do is_active "todoapp-$svc.service" || fail "todoapp-$svc.service not active"; done
ok "todoapp-e2e passes; all three services active again"

echo
echo "ALL CONTAINER CHECKS PASSED"
finish PASS
RUN
chmod 0755 "$rootfs/usr/local/lib/todoapp-test/run.sh"

cat >"$rootfs/etc/systemd/system/todoapp-container-test.service" <<EOF
[Unit]
Description=todoapp container test
Wants=mariadb.service
After=multi-user.target mariadb.service sockets.target
# A hung test fails the unit; either way the container goes down.
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/lib/todoapp-test/run.sh
TimeoutStartSec=$((boot_timeout - 60))
StandardOutput=journal
StandardError=inherit
EOF
ln -sf /etc/systemd/system/todoapp-container-test.service \
  "$rootfs/etc/systemd/system/multi-user.target.wants/todoapp-container-test.service"
for s in gateway user todo; do
  ln -sf "/etc/systemd/system/todoapp-$s.socket" "$rootfs/etc/systemd/system/sockets.target.wants/todoapp-$s.socket"
done

# --- boot --------------------------------------------------------------------
log "booting the container (timeout ${boot_timeout}s)"
install -d "$rootfs/var/lib/todoapp-test"
touch "$rootfs/var/lib/todoapp-test/log"
tail -n +1 -F "$rootfs/var/lib/todoapp-test/log" 2>/dev/null &
tail_pid=$!
set +e
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY:-1} \
  timeout --kill-after=20 "$boot_timeout" \
  systemd-nspawn -D "$rootfs" --register=no --keep-unit --private-network --console=pipe -b \
  </dev/null 2>&1 | grep --line-buffered -v 'we can.t allow that' | tee "$work/console.log"
rc=${PIPESTATUS[0]}
set -e
sleep 0.5
kill "$tail_pid" 2>/dev/null || true
log "container exited (rc $rc)"

result=$(cat "$rootfs/var/lib/todoapp-test/result" 2>/dev/null || true)
if [[ $result != PASS ]]; then
  if [[ -z $result ]]; then
    echo "container-test: no result: the test never finished (rc $rc; 124 = timeout). Journal tail:" >&2
    journalctl -D "$rootfs/var/log/journal" --no-pager -n 80 -o short-monotonic 2>/dev/null >&2 || true
    die "container test did not finish"
  fi
  die "${result#FAIL }"
fi
if ((self_test)); then
  log "PASS (self-test with stub binaries, $((SECONDS - started))s)"
else
  log "PASS ($((SECONDS - started))s)"
fi
echo "container-test: $(grep -c '^ok: ' "$rootfs/var/lib/todoapp-test/log") passed, 0 failed"
