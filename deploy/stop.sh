#!/usr/bin/env bash
# Stops the services and demo receiver that deploy/start.sh started (SIGTERM: they drain).
cd "$(dirname "$0")/.."
for f in deploy/.run/*.pid; do
  [ -f "$f" ] || continue
  kill "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
done
echo "stopped"
