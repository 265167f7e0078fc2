//! The connection the store talks through: one Redis server, or a Redis Cluster
//! (`HERALD_REDIS_MODE`). Both are multiplexed, cheap to clone, and reconnect by themselves;
//! every command and pipeline the store sends goes through [`RedisConn`] unchanged.
//!
//! Every call is bounded by [`CALL_LIMIT`]. The client's own response timeout starts only once
//! a request is written: when the server stops reading (wedged, or the network between holds
//! the bytes), the requests behind fill the client's queue and wait for a place in it for ever.
//! A call that gets no answer in time fails, and the connection is replaced in the background.
//!
//! In a cluster a command is routed by the slot of its first key, and a pipeline or script by
//! the slot of its keys: every pipeline and script the store sends touches one slot (see the
//! key layout in `store`), so a pipeline is one round trip to one node in both modes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisMode;

/// How long a connection attempt to one node may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command waits for its answer once sent.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may take in all, queueing included.
pub const CALL_LIMIT: Duration = Duration::from_secs(6);

/// A connection to Redis that never keeps a caller waiting longer than [`CALL_LIMIT`].
#[derive(Clone)]
pub struct RedisConn {
    shared: Arc<Shared>,
}

struct Shared {
    link: RwLock<Link>,
    mode: RedisMode,
    url: String,
    replacing: AtomicBool,
}

impl RedisConn {
    /// Connects once (the caller retries): `url` is one URL, or in cluster mode a
    /// comma-separated list of seed nodes, of which one answering is enough.
    pub async fn open(mode: RedisMode, url: &str) -> RedisResult<Self> {
        let link = Link::open(mode, url).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                link: RwLock::new(link),
                mode,
                url: url.to_string(),
                replacing: AtomicBool::new(false),
            }),
        })
    }

    /// True for a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.shared.mode, RedisMode::Cluster)
    }

    fn link(&self) -> Link {
        match self.shared.link.read() {
            Ok(link) => link.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A call got no answer in time: the connection is replaced (once, in the background),
    /// and the caller gets an I/O error like any lost connection's.
    fn wedged(&self) -> redis::RedisError {
        metrics::counter!("herald_redis_calls_timed_out_total").increment(1);
        if !self.shared.replacing.swap(true, Ordering::SeqCst) {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tracing::warn!(
                    "a Redis call got no answer within {} s; replacing the connection",
                    CALL_LIMIT.as_secs()
                );
                match Link::open(shared.mode, &shared.url).await {
                    Ok(fresh) => {
                        if let Ok(mut link) = shared.link.write() {
                            *link = fresh;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot replace the Redis connection yet"),
                }
                shared.replacing.store(false, Ordering::SeqCst);
            });
        }
        redis::RedisError::from((
            redis::ErrorKind::IoError,
            "no answer from Redis in time",
            format!("{} s, queueing included", CALL_LIMIT.as_secs()),
        ))
    }
}

/// A multiplexed connection to a Redis server or a Redis Cluster.
// Cloned for every command (a clone is a handle, not a connection): boxing the larger variant
// would add an allocation to each clone to save 200 bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Link {
    /// One server.
    Standalone(ConnectionManager),
    /// A cluster: commands go to the node that owns their slot.
    Cluster(ClusterConnection),
}

impl Link {
    async fn open(mode: RedisMode, url: &str) -> RedisResult<Self> {
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
}

impl RedisConn {
    /// Waits for `answer` at most [`CALL_LIMIT`].
    async fn bounded<T>(&self, answer: RedisFuture<'_, T>) -> RedisResult<T> {
        match tokio::time::timeout(CALL_LIMIT, answer).await {
            Ok(answer) => answer,
            Err(_) => Err(self.wedged()),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let mut link = self.link();
        Box::pin(async move { self.bounded(link.req_packed_command(cmd)).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let mut link = self.link();
        Box::pin(async move {
            self.bounded(link.req_packed_commands(cmd, offset, count))
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.link().get_db()
    }
}

impl ConnectionLike for Link {
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
