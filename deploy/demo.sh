#!/usr/bin/env bash
# The demo: a workspace, a connection to a local receiver that verifies signatures with the
# Standard Webhooks library, a rule, one event, and its history.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=deploy/.run
API=http://127.0.0.1:8080
ADMIN="$(cat "$RUN/admin-token")"

ws=$(curl -fsS -X POST "$API/v1/workspaces" -H "Authorization: Bearer $ADMIN" \
  -H 'content-type: application/json' -d '{"name":"demo"}')
SK=$(echo "$ws" | jq -r .secret_key)
PK=$(echo "$ws" | jq -r .publishable_key)
echo "==> workspace $(echo "$ws" | jq -r .id) (secret key $SK)"

conn=$(curl -fsS -X POST "$API/v1/connections" -H "Authorization: Bearer $SK" \
  -H 'content-type: application/json' \
  -d '{"name":"demo receiver","url":"http://127.0.0.1:9000/webhook"}')
CON=$(echo "$conn" | jq -r .id)
SECRET=$(echo "$conn" | jq -r .secret)
echo "==> connection $CON with signing secret $SECRET"

curl -fsS -X POST "$API/v1/rules" -H "Authorization: Bearer $SK" -H 'content-type: application/json' \
  -d "{\"event\":\"order.*\",\"resource\":\"order\",\"connection_id\":\"$CON\",\"action\":\"send_webhook\"}" >/dev/null
echo "==> rule: order.* on resource order -> $CON"

if [ -f "$RUN/receiver.pid" ]; then kill "$(cat "$RUN/receiver.pid")" 2>/dev/null || true; fi
RECEIVER_SECRET="$SECRET" nohup target/debug/examples/receiver 127.0.0.1:9000 >"$RUN/receiver.log" 2>&1 &
echo $! >"$RUN/receiver.pid"
for _ in $(seq 1 40); do grep -q listening "$RUN/receiver.log" 2>/dev/null && break; sleep 0.25; done

sent=$(curl -fsS -X POST "$API/v1/events" -H "Authorization: Bearer $PK" -H 'content-type: application/json' \
  -d '{"event":"order.completed","resource":"order","resource_id":"ord_77","payload":{"order_id":"ord_77","total_cents":12900}}')
UUID=$(echo "$sent" | jq -r .uuid)
echo "==> sent event $UUID (202 from intake)"

for _ in $(seq 1 40); do grep -q "verified webhook $UUID" "$RUN/receiver.log" && break; sleep 0.25; done
echo "==> the receiver says:"
grep "$UUID" "$RUN/receiver.log" || { echo "nothing arrived; see $RUN/*.log" >&2; exit 1; }

for _ in $(seq 1 20); do
  status=$(curl -fsS "$API/v1/events/$UUID" -H "Authorization: Bearer $SK" | jq -r .status)
  [ "$status" = delivered ] && break; sleep 0.25
done
echo "==> its history (GET /v1/events/$UUID):"
curl -fsS "$API/v1/events/$UUID" -H "Authorization: Bearer $SK" | jq .
echo
echo "Try it yourself:"
echo "  export SK=$SK PK=$PK"
echo "  curl -X POST $API/v1/events -H \"Authorization: Bearer \$PK\" -d '{\"event\":\"order.completed\",\"resource\":\"order\",\"resource_id\":\"ord_78\",\"payload\":{}}'"
echo "Stop everything: deploy/stop.sh"
