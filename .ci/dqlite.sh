#!/usr/bin/env bash
# A throw-away 3-node dqlite cluster on 127.0.0.1 for tests.
#
#   bash .ci/dqlite.sh install   # Debian's go-dqlite (dqlite-demo, dqlite shell, libdqlite0)
#                                # and a Python 3.13 venv with dqlite-dbapi
#   bash .ci/dqlite.sh start     # 3 nodes, waits until 3 voters; writes $STATE_DIR/cluster.env
#   bash .ci/dqlite.sh status    # exit 0 healthy, 1 not running, 2 degraded
#   bash .ci/dqlite.sh stop      # TERM, wait, KILL; removes the data
#   bash .ci/dqlite.sh env       # prints the cluster.env (for `eval` or `source`)
#
# Every subcommand is idempotent. Settings (environment):
#   SQLMIGRATE_DQLITE_DIR     state, data and logs   (default /tmp/sqlmigrate-dqlite)
#   SQLMIGRATE_DQLITE_VENV    the client's venv      (default ~/.cache/sqlmigrate-dqlite/venv)
#   SQLMIGRATE_DQLITE_PORT    first database port; nodes use PORT..PORT+2 for replication
#                             and PORT+100..PORT+102 for dqlite-demo's HTTP API (default 29001)
#   SQLMIGRATE_DQLITE_PYTHON  the Python >= 3.13 that makes the venv
#   SQLMIGRATE_DQLITE_START_TIMEOUT  seconds to wait for 3 voters (default 60)
#   SQLMIGRATE_DQLITE_STOP_GRACE     seconds between TERM and KILL (default 5)
#
# Why KILL is routinely needed: dqlite-demo answers TERM with a leadership handover that
# waits without a deadline for a quorum, so the last node standing never exits on TERM.
set -uo pipefail

STATE_DIR=${SQLMIGRATE_DQLITE_DIR:-/tmp/sqlmigrate-dqlite}
STATE_FILE=$STATE_DIR/cluster.env
VENV=${SQLMIGRATE_DQLITE_VENV:-$HOME/.cache/sqlmigrate-dqlite/venv}
BASE_PORT=${SQLMIGRATE_DQLITE_PORT:-29001}
START_TIMEOUT=${SQLMIGRATE_DQLITE_START_TIMEOUT:-60}
STOP_GRACE=${SQLMIGRATE_DQLITE_STOP_GRACE:-5}
HOST=127.0.0.1
NODES=3

say() { echo "dqlite.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

db_addr() { echo "$HOST:$((BASE_PORT + $1 - 1))"; }
api_addr() { echo "$HOST:$((BASE_PORT + 100 + $1 - 1))"; }

find_python() {
  if [ -n "${SQLMIGRATE_DQLITE_PYTHON:-}" ]; then echo "$SQLMIGRATE_DQLITE_PYTHON"; return; fi
  local root; root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  local candidate
  for candidate in "$root"/versions/3.13*/bin/python "$root"/versions/3.1[4-9]*/bin/python \
                   "$(command -v python3.13 || true)" "$(command -v python3 || true)"; do
    [ -x "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  return 1
}

# ---------------------------------------------------------------- install

cmd_install() {
  if ! command -v dqlite-demo >/dev/null || ! command -v dqlite >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "installing go-dqlite needs root (apt-get)"
    say "installing go-dqlite from Debian"
    export DEBIAN_FRONTEND=noninteractive
    # Another apt-get may hold the dpkg lock (CI and developers share the machine): wait for it.
    apt-get -o DPkg::Lock::Timeout=600 update -qq || die "apt-get update failed"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq go-dqlite >/dev/null \
      || die "apt-get install go-dqlite failed"
  fi
  command -v dqlite-demo >/dev/null || die "dqlite-demo is missing after the install"

  if ! "$VENV/bin/python" -c 'import dqlitedbapi' 2>/dev/null; then
    local py; py=$(find_python) || die "no Python >= 3.13 found (set SQLMIGRATE_DQLITE_PYTHON)"
    say "making $VENV with $py"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$py" -m venv "$VENV" || die "venv creation failed"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check dqlite-dbapi \
      || die "pip install dqlite-dbapi failed"
  fi
  say "go-dqlite $(dpkg-query -W -f='${Version}' go-dqlite 2>/dev/null)," \
      "libdqlite0 $(dpkg-query -W -f='${Version}' libdqlite0 2>/dev/null)," \
      "dqlite-dbapi $("$VENV/bin/python" -c 'import dqlitedbapi; print(dqlitedbapi.__version__)')" \
      "on $("$VENV/bin/python" --version 2>&1)"
  echo "$VENV/bin/python"
}

# ---------------------------------------------------------------- processes

# True if PID is a live (not zombie) dqlite-demo whose command line names our state dir:
# guards against signalling a recycled PID.
ours() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  local state; state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$state" != X ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "dqlite-demo .*-D $STATE_DIR/" || return 1
}

# True while any thread of PID is still running. A SIGKILLed Go process can show its main
# thread as a zombie (empty cmdline) while other threads still hold its sockets.
lingers() {
  [ -d "/proc/$1" ] || return 1
  local state; state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$state" != X ] && return 0
  [ "$(ls "/proc/$1/task" 2>/dev/null | wc -l)" -gt 1 ]
}

# Every live dqlite-demo using our state dir, whether or not a state file lists it.
our_pids() {
  local p
  for p in $(pgrep -x dqlite-demo 2>/dev/null); do ours "$p" && echo "$p"; done
}

port_busy() {  # $1 host:port -> true if something accepts connections there
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

kill_all() {  # TERM, wait STOP_GRACE, KILL, wait for them to be gone
  local pids=("$@") p alive waited
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null
  for ((waited = 0; waited < STOP_GRACE * 10; waited++)); do
    alive=(); for p in "${pids[@]}"; do lingers "$p" && alive+=("$p"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  say "KILL after ${STOP_GRACE}s: ${alive[*]}"
  kill -KILL "${alive[@]}" 2>/dev/null
  for ((waited = 0; waited < 100; waited++)); do
    pids=("${alive[@]}"); alive=()
    for p in "${pids[@]}"; do lingers "$p" && alive+=("$p"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  say "still alive after KILL: ${alive[*]}"
  return 1
}

# Prints "ID|ADDRESS|ROLE" lines as the leader sees them, via any of our nodes.
cluster_members() {
  local i out
  for ((i = 1; i <= NODES; i++)); do
    out=$(timeout 5 dqlite -s "$(db_addr "$i")" ci .cluster 2>/dev/null) || continue
    [ -n "$out" ] && { echo "$out"; return 0; }
  done
  return 1
}

voters() { cluster_members | grep -c '|voter$'; }

# ---------------------------------------------------------------- start / stop / status

cmd_stop() {
  local pids=() p
  if [ -f "$STATE_FILE" ]; then
    # shellcheck disable=SC1090
    . "$STATE_FILE"
    for p in ${DQLITE_PIDS:-}; do ours "$p" && pids+=("$p"); done
  fi
  for p in $(our_pids); do [[ " ${pids[*]} " == *" $p "* ]] || pids+=("$p"); done
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping ${#pids[@]} node(s): ${pids[*]}"
    kill_all "${pids[@]}" || die "could not stop: ${pids[*]}"
  fi
  rm -rf "$STATE_DIR"
  say "stopped; $STATE_DIR removed"
}

cmd_start() {
  command -v dqlite-demo >/dev/null || die "dqlite-demo not found: run '$0 install' first"
  if [ -f "$STATE_FILE" ] && cmd_status >/dev/null 2>&1; then
    say "already running (3 voters): $STATE_FILE"
    cat "$STATE_FILE"
    return 0
  fi
  # Stale or partial state from an earlier run: clear it first.
  if [ -e "$STATE_DIR" ] || [ -n "$(our_pids)" ]; then cmd_stop 2>/dev/null; fi

  # A just-KILLed node can show as a zombie while its threads still hold its sockets for a
  # moment, so a busy port gets a few seconds before it counts as taken by someone else.
  local i addr w
  for ((i = 1; i <= NODES; i++)); do
    for addr in "$(db_addr "$i")" "$(api_addr "$i")"; do
      for ((w = 0; w < 50; w++)); do port_busy "$addr" || break; sleep 0.1; done
      port_busy "$addr" && die "$addr is already in use (set SQLMIGRATE_DQLITE_PORT)"
    done
  done

  mkdir -p "$STATE_DIR" || die "cannot create $STATE_DIR"
  local started=$SECONDS t0; t0=$(date +%s.%N)
  START_PIDS=()
  # On any failure below, leave nothing running.
  trap 'kill_all "${START_PIDS[@]}" >/dev/null 2>&1; rm -rf "$STATE_DIR"' EXIT

  for ((i = 1; i <= NODES; i++)); do
    local join=()
    [ "$i" -gt 1 ] && join=(-j "$(db_addr 1)")
    mkdir -p "$STATE_DIR/n$i"
    # setsid: the node must not die with (or be signalled by) the shell that started it.
    setsid dqlite-demo -a "$(api_addr "$i")" -d "$(db_addr "$i")" -D "$STATE_DIR/n$i" \
      "${join[@]}" </dev/null >"$STATE_DIR/n$i.log" 2>&1 &
    START_PIDS+=("$!")
    if [ "$i" -eq 1 ]; then  # the others join through node 1: let it listen first
      for ((w = 0; w < 100; w++)); do port_busy "$(db_addr 1)" && break; sleep 0.1; done
    fi
  done

  local n=0
  while :; do
    for ((i = 1; i <= NODES; i++)); do
      if ! ours "${START_PIDS[$((i - 1))]}"; then
        say "node $i ($(db_addr "$i")) exited during start-up; its log:"
        tail -n 20 "$STATE_DIR/n$i.log" >&2
        exit 1
      fi
    done
    n=$(voters 2>/dev/null || echo 0)
    [ "${n:-0}" -ge "$NODES" ] && break
    if [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
      say "no $NODES voters after ${START_TIMEOUT}s (have ${n:-0}); membership:"
      cluster_members >&2
      for ((i = 1; i <= NODES; i++)); do say "log of node $i:"; tail -n 10 "$STATE_DIR/n$i.log" >&2; done
      exit 1
    fi
    sleep 0.2
  done

  local addrs=() apis=()
  for ((i = 1; i <= NODES; i++)); do addrs+=("$(db_addr "$i")"); apis+=("$(api_addr "$i")"); done
  {
    echo "DQLITE_PIDS='${START_PIDS[*]}'"
    echo "DQLITE_ADDRESSES='${addrs[*]}'"
    echo "DQLITE_API_ADDRESSES='${apis[*]}'"
    echo "DQLITE_DATA_DIR='$STATE_DIR'"
    echo "DQLITE_PYTHON='$VENV/bin/python'"
  } >"$STATE_FILE.tmp" && mv "$STATE_FILE.tmp" "$STATE_FILE" || exit 1
  trap - EXIT
  say "3 voters after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s;" \
      "pids ${START_PIDS[*]}; state in $STATE_FILE"
  cat "$STATE_FILE"
}

cmd_status() {
  if [ ! -f "$STATE_FILE" ]; then
    local stray; stray=$(our_pids | tr '\n' ' ')
    echo "not running${stray:+ (stray dqlite-demo processes: $stray; run stop)}"
    return 1
  fi
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  local p i=0 alive=0 addrs=($DQLITE_ADDRESSES)
  for p in $DQLITE_PIDS; do
    if ours "$p"; then echo "node ${addrs[$i]} pid $p: up"; alive=$((alive + 1))
    else echo "node ${addrs[$i]} pid $p: DOWN"; fi
    i=$((i + 1))
  done
  local members; members=$(cluster_members) || members="(no leader reachable)"
  echo "$members"
  local n; n=$(grep -c '|voter$' <<<"$members")
  if [ "$alive" -eq "$NODES" ] && [ "$n" -eq "$NODES" ]; then echo "healthy: $n voters"; return 0; fi
  echo "degraded: $alive of $NODES processes up, $n voters"
  return 2
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) [ -f "$STATE_FILE" ] && cat "$STATE_FILE" || die "not running" ;;
  *) echo "usage: $0 {install|start|stop|status|env}" >&2; exit 2 ;;
esac
