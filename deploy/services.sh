#!/usr/bin/env bash
# Makes sure RabbitMQ, Redis and PostgreSQL are installed (from Debian's packages) and running on
# localhost, and that the browser test has Chromium, Node and its one npm package. PostgreSQL is
# only the archive's (optional) disk tier; its tests connect as `postgres` over 127.0.0.1 without
# a password, so a fresh install is given a `trust` line for 127.0.0.1 (a development machine's
# setting, never a production one).
# Safe to run again: it installs and starts only what is missing.
#
# `deploy/services.sh cluster` (or HERALD_REDIS_CLUSTER=1) also starts the local Redis Cluster
# the cluster tests use (see deploy/redis-cluster.sh).
set -euo pipefail

want_cluster="${HERALD_REDIS_CLUSTER:-0}"
for arg in "$@"; do
  case "$arg" in
    cluster) want_cluster=1 ;;
    *) echo "usage: $0 [cluster]" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
# The browser test (e2e/browser): Debian's Chromium, driven by playwright-core under Node.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "==> starting Redis"
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

if ! $SUDO rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  echo "==> starting RabbitMQ"
  $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
fi
# The node may be up with the app stopped (after `rabbitmqctl stop_app`): start it.
for _ in $(seq 1 60); do
  if $SUDO rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then break; fi
  $SUDO rabbitmqctl start_app >/dev/null 2>&1 || true
  sleep 1
done
$SUDO rabbitmq-diagnostics -q check_running >/dev/null
for _ in $(seq 1 30); do
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then break; fi
  sleep 0.5
done
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
echo "==> RabbitMQ and Redis are running on 127.0.0.1"

# PostgreSQL: Debian's package makes one cluster; start it if it is down.
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
if ! pg_up; then
  read -r pg_ver pg_name _ < <(pg_lsclusters -h | head -n1)
  if [ -n "${pg_ver:-}" ]; then
    echo "==> starting PostgreSQL $pg_ver/$pg_name"
    $SUDO pg_ctlcluster "$pg_ver" "$pg_name" start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  read -r pg_ver pg_name _ < <(pg_lsclusters -h | head -n1)
  hba="/etc/postgresql/$pg_ver/$pg_name/pg_hba.conf"
  echo "==> letting postgres connect from 127.0.0.1 without a password ($hba)"
  $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
  $SUDO pg_ctlcluster "$pg_ver" "$pg_name" reload
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null
echo "==> PostgreSQL is running on 127.0.0.1:5432"

if [ "$want_cluster" = 1 ]; then "$(dirname "$0")/redis-cluster.sh"; fi

# playwright-core for the browser test, installed again only when the lock file changed.
browser="$(cd "$(dirname "$0")/.." && pwd)/e2e/browser"
stamp="$browser/node_modules/.herald-lock.sha256"
want=$(sha256sum "$browser/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$browser/node_modules/playwright-core" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing the browser test's packages (npm ci)"
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
fi
