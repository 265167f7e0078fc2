#!/usr/bin/env bash
# Builds the release binaries and runs herald-load's main scenarios one after another, each with
# its own raw broker hop measured in the same run. Reports go to stdout and, as JSON, to
# $OUT (default target/load-reports/). Needs RabbitMQ (with rabbitmqctl) and Redis on localhost:
# ./deploy/services.sh starts them.
#
#   ./deploy/load.sh                 # all scenarios, throughput for 60 s
#   DURATION=20 ./deploy/load.sh     # shorter throughput run
#   ./deploy/load.sh latency memory  # only these
#   EXTRA="--queue-type quorum" ./deploy/load.sh throughput
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$TARGET/load-reports}"
DURATION="${DURATION:-60}"
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"

echo "==> cargo build --release"
cargo build --release -q -p herald-ingest -p herald-router -p herald-deliverer -p herald-loadtest

mkdir -p "$OUT"
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  scenarios=(throughput intake-single e2e-single latency scaleout memory)
fi
for s in "${scenarios[@]}"; do
  args=()
  case "$s" in
    throughput) args=(--duration "$DURATION") ;;
    intake-single | e2e-single) args=(--duration 20) ;;
    latency) args=(--duration 30 --rate 1000) ;;
  esac
  echo "==> herald-load $s ${args[*]} ${EXTRA_ARGS[*]}"
  "$TARGET/release/herald-load" "$s" --bin-dir "$TARGET/release" \
    --json "$OUT/$s.json" "${args[@]}" "${EXTRA_ARGS[@]}"
done
echo "==> reports in $OUT/"
