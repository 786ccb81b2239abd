#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, owned by this checkout.
#
#   scripts/postgres.sh start   start one (idempotent), wait until it accepts connections,
#                               create the database liaison_test and print its URL
#   scripts/postgres.sh url     print the URL of the running one (status 1 if none)
#   scripts/postgres.sh stop    stop it and delete its data (nothing to do is not an error)
#
# The server listens on 127.0.0.1 only, on a free port, with no Unix socket; its superuser
# `liaison` logs in with a password generated per cluster (scram-sha-256). Durability stays
# at PostgreSQL's defaults (fsync, synchronous_commit, full_page_writes on): the tests must
# see what production would. The cluster lives in a fresh folder /tmp/liaison-pg.* (or under
# $TMPDIR when not root: data/, server.log) whose path and URL are kept in .venv/postgres/.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user that
# Debian's package creates (else as a `liaison-pg` system user, created here).
#
# Binaries: $PG_BIN if set, else the newest /usr/lib/postgresql/<major>/bin (Debian's
# layout), else pg_ctl and initdb on $PATH. scripts/setup.sh installs Debian's `postgresql`.
set -euo pipefail
cd "$(dirname "$0")/.."
# runuser and useradd live in sbin, which a non-login or scrubbed PATH (CI's env -i) lacks.
PATH="$PATH:/usr/sbin:/sbin"

state=$PWD/.venv/postgres
database=liaison_test
superuser=liaison
owner="" # who runs the server: empty means ourselves

die() {
  echo "postgres.sh: $*" >&2
  exit 2
}

say() {
  echo "postgres.sh: $*" >&2
}

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/initdb" ] || die "PG_BIN=$PG_BIN lacks pg_ctl or initdb"
    echo "$PG_BIN"
    return
  fi
  local newest
  newest=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
    sort -V | tail -n 1)
  if [ -n "$newest" ]; then
    dirname "$newest"
  elif command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  else
    die "no PostgreSQL server binaries (initdb, pg_ctl) found: run scripts/setup.sh (it" \
      "installs Debian's postgresql package) or set PG_BIN to the folder that holds them"
  fi
}

pick_owner() {
  [ "$(id -u)" -eq 0 ] || return 0
  command -v runuser >/dev/null || die "running as root needs runuser (util-linux)"
  if id -u postgres >/dev/null 2>&1; then
    owner=postgres
  else
    owner=liaison-pg
    if ! id -u "$owner" >/dev/null 2>&1; then
      say "creating system user $owner to run the test cluster (PostgreSQL refuses root)"
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        "$owner" || die "could not create the system user $owner"
    fi
  fi
}

# as_owner CMD...: run CMD as the cluster's owner.
as_owner() {
  if [ -n "$owner" ]; then
    runuser -u "$owner" -- "$@"
  else
    "$@"
  fi
}

# The URL of the running cluster; status 1 if there is none.
running_url() {
  [ -f "$state/url" ] && [ -f "$state/root" ] || return 1
  local bin root
  bin=$(find_bin)
  root=$(cat "$state/root")
  [ -f "$root/data/PG_VERSION" ] || return 1
  pick_owner
  as_owner "$bin/pg_ctl" status -D "$root/data" >/dev/null 2>&1 || return 1
  cat "$state/url"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_stop() {
  if [ -f "$state/root" ]; then
    local bin root
    bin=$(find_bin)
    root=$(cat "$state/root")
    case "$root" in
    */liaison-pg.*) ;;
    *) die "refusing to touch $root (named in $state/root): not a folder this script made" ;;
    esac
    pick_owner
    if as_owner "$bin/pg_ctl" status -D "$root/data" >/dev/null 2>&1; then
      # fast: roll back open transactions and disconnect clients (a test may have left one).
      as_owner "$bin/pg_ctl" stop -D "$root/data" -m fast -w -t 60 >/dev/null ||
        say "pg_ctl stop failed (log: $root/server.log); removing its data anyway"
    fi
    rm -rf -- "$root"
  fi
  rm -rf -- "$state"
}

cmd_start() {
  local url
  if url=$(running_url); then
    echo "$url"
    return 0
  fi
  cmd_stop # the leftovers of a cluster that is gone (a reboot, a cleaned /tmp, a kill -9)
  local bin
  bin=$(find_bin)
  pick_owner
  mkdir -p "$state"
  chmod 700 "$state"

  local base=${TMPDIR:-/tmp}
  [ -z "$owner" ] || base=/tmp # a folder the owner can reach
  local root
  root=$(mktemp -d "$base/liaison-pg.XXXXXXXX")
  echo "$root" >"$state/root"
  [ -z "$owner" ] || chown "$owner:" "$root"

  local password
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  (umask 077 && printf '%s\n' "$password" >"$root/pwfile")
  [ -z "$owner" ] || chown "$owner:" "$root/pwfile"
  if ! as_owner "$bin/initdb" -D "$root/data" -U "$superuser" --pwfile="$root/pwfile" \
    --auth-host=scram-sha-256 --auth-local=reject --encoding=UTF8 --locale=C.UTF-8 \
    >"$root/initdb.log" 2>&1; then
    cat "$root/initdb.log" >&2
    die "initdb failed (run as ${owner:-$(id -un)}; log: $root/initdb.log)"
  fi
  rm -f "$root/pwfile"
  # Loopback TCP only, no Unix socket. The durability settings are PostgreSQL's defaults,
  # written out so that no one "speeds the tests up" here: the audit log relies on fsync.
  printf '%s\n' "" "# scripts/postgres.sh" "listen_addresses = '127.0.0.1'" \
    "unix_socket_directories = ''" "fsync = on" "synchronous_commit = on" \
    "full_page_writes = on" >>"$root/data/postgresql.conf"

  local port attempt
  for attempt in 1 2 3; do
    port=$(free_port)
    if as_owner "$bin/pg_ctl" start -D "$root/data" -l "$root/server.log" -w -t 60 \
      -o "-p $port" >/dev/null; then
      break
    fi
    if [ "$attempt" -eq 3 ] || ! grep -q 'could not bind' "$root/server.log" 2>/dev/null; then
      tail -n 20 "$root/server.log" >&2 || true
      die "the server did not start (log: $root/server.log)"
    fi
    say "port $port was taken meanwhile; trying another"
  done

  export PGPASSWORD=$password
  local i
  for i in $(seq 1 100); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$superuser" -d postgres && break
    [ "$i" -lt 100 ] || die "the server on 127.0.0.1:$port does not accept connections"
    sleep 0.1
  done
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$superuser" "$database" ||
    die "could not create the database $database (log: $root/server.log)"

  url="postgresql+psycopg://$superuser:$password@127.0.0.1:$port/$database"
  (umask 077 && echo "$url" >"$state/url")
  echo "$url"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
url)
  running_url || {
    echo "postgres.sh: no test cluster is running (start one: scripts/postgres.sh start)" >&2
    exit 1
  }
  ;;
*)
  echo "usage: scripts/postgres.sh start|stop|url" >&2
  exit 2
  ;;
esac
