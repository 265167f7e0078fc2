//! The connection the store talks through: one Redis server, or a Redis Cluster
//! (`HERALD_REDIS_MODE`). Both are multiplexed, cheap to clone, and reconnect by themselves;
//! every command and pipeline the store sends goes through [`RedisConn`] unchanged.
//!
//! In a cluster a command is routed by the slot of its first key, and a pipeline or script by
//! the slot of its keys: every pipeline and script the store sends touches one slot (see the
//! key layout in `store`), so a pipeline is one round trip to one node in both modes.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisMode;

/// How long a connection attempt to one node may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command waits for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A multiplexed connection to a Redis server or a Redis Cluster.
// Cloned for every command (a clone is a handle, not a connection): boxing the larger variant
// would add an allocation to each clone to save 200 bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Standalone(ConnectionManager),
    /// A cluster: commands go to the node that owns their slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connects once (the caller retries): `url` is one URL, or in cluster mode a
    /// comma-separated list of seed nodes, of which one answering is enough.
    pub async fn open(mode: RedisMode, url: &str) -> RedisResult<Self> {
        match mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(url)?;
                // redis-rs hands `factor` to its backoff as the growth per retry (from a 1 s
                // floor), so its default of 100 would wait a minute and more between
                // reconnects after an outage: grow by 2, at most 1 s apart, so a request
                // fails within a few seconds while Redis is away and the connection is back
                // within a second of Redis.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECTION_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_factor(2)
                    .set_max_delay(1000)
                    .set_number_of_retries(2);
                Ok(Self::Standalone(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            RedisMode::Cluster => {
                let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
                // The cluster client's defaults never time a response out and retry 16 times
                // at least 1.3 s apart. A request here is retried (after the slot map is read
                // again) for about 3 s, 100 ms to 1 s apart: long enough to ride out a
                // replica's promotion after its master failed (a few seconds with
                // `cluster-node-timeout` at 2 s), short enough that a request fails within
                // seconds, as in standalone mode, while the cluster cannot serve its slot.
                let client = ClusterClient::builder(seeds)
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(8)
                    .min_retry_wait(100)
                    .max_retry_wait(1000)
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// True for a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
