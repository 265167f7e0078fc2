#!/usr/bin/env bash
# Starts the whole stack on localhost (installing RabbitMQ and Redis if missing), then runs the
# demo: one event in, a signed webhook out at a local receiver that verifies it, and the event's
# history. Stop everything with deploy/stop.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=deploy/.run
mkdir -p "$RUN"

if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust is not installed: install it from https://rustup.rs (rustup), then run this again." >&2
  exit 1
fi

./deploy/services.sh

echo "==> building Herald (first build takes a few minutes)"
cargo build -q --bin herald-ingest --bin herald-router --bin herald-deliverer -p herald-ingest -p herald-router -p herald-deliverer
cargo build -q -p herald-e2e --example receiver

./deploy/stop.sh >/dev/null 2>&1 || true

if [ ! -f "$RUN/admin-token" ]; then
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$RUN/admin-token"
fi
export HERALD_ADMIN_TOKEN="$(cat "$RUN/admin-token")"
# A key of this machine's own for the secrets kept in Redis (kept across restarts: losing it
# makes the stored signing secrets unreadable).
if [ ! -f "$RUN/secrets-key" ]; then
  (umask 077; head -c 32 /dev/urandom | base64 > "$RUN/secrets-key")
fi
export HERALD_SECRETS_KEY="${HERALD_SECRETS_KEY:-$(cat "$RUN/secrets-key")}"
# Development settings: the demo's receiver is plain http on 127.0.0.1.
export HERALD_ALLOW_HTTP=true
export HERALD_ALLOW_PRIVATE_DESTINATIONS=true
export HERALD_RETRY_SCHEDULE="${HERALD_RETRY_SCHEDULE:-5s,30s,2m,10m,1h,5h,10h}"

for svc in ingest router deliverer; do
  nohup "target/debug/herald-$svc" >"$RUN/$svc.log" 2>&1 &
  echo $! >"$RUN/$svc.pid"
done

API=http://127.0.0.1:8080
for _ in $(seq 1 60); do
  if curl -fsS "$API/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fsS "$API/readyz" >/dev/null || { echo "ingest did not become ready; see $RUN/ingest.log" >&2; exit 1; }
echo "==> Herald is running: API on $API (admin token in $RUN/admin-token), logs in $RUN/"

./deploy/demo.sh
