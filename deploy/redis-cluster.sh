#!/usr/bin/env bash
# Starts a local Redis Cluster for Herald's cluster tests: three masters and a replica each, on
# ports 7000-7005 (HERALD_CLUSTER_PORT moves the first), each node with a directory of its own
# under HERALD_CLUSTER_DIR (default /tmp/herald-redis-cluster), no persistence, and
# cluster-node-timeout 2000 ms so that a replica takes over within seconds of its master's death.
#
# Safe to run again: nodes already running are left alone, and a node that is down (killed by a
# fault test) is started again from its nodes.conf, so it rejoins the cluster (as a replica, if
# its replica was promoted meanwhile). Waits until every node sees the cluster as ok.
set -euo pipefail
first="${HERALD_CLUSTER_PORT:-7000}"
dir="${HERALD_CLUSTER_DIR:-/tmp/herald-redis-cluster}"
ports=()
for i in 0 1 2 3 4 5; do ports+=($((first + i))); done
for port in "${ports[@]}"; do
  if redis-cli -p "$port" ping >/dev/null 2>&1; then continue; fi
  echo "==> starting Redis Cluster node 127.0.0.1:$port"
  mkdir -p "$dir/$port"
  # nodes.conf stays between runs: a node started again knows its cluster and rejoins it.
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
    --dir "$dir/$port" --logfile "$dir/$port/redis.log" --pidfile "$dir/$port/redis.pid" \
    --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --cluster-replica-validity-factor 0
done
for port in "${ports[@]}"; do
  for _ in $(seq 1 50); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null
done
if ! redis-cli -p "$first" cluster info | grep -q '^cluster_slots_assigned:16384'; then
  echo "==> creating the Redis Cluster (3 masters, 3 replicas)"
  nodes=()
  for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
fi
for _ in $(seq 1 100); do
  ok=0
  for port in "${ports[@]}"; do
    if redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok'; then ok=$((ok + 1)); fi
  done
  if [ "$ok" -eq "${#ports[@]}" ]; then break; fi
  sleep 0.2
done
redis-cli -p "$first" cluster info | grep -q '^cluster_state:ok'
echo "==> Redis Cluster is running on 127.0.0.1:${ports[0]}-${ports[5]}"
