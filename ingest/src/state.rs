//! What every handler can reach: settings, the store, the broker and intake's helpers.

use std::sync::Arc;

use herald_shared::amqp::Publisher;
use herald_shared::config::IngestSettings;
use herald_shared::ratelimit::RateLimiter;
use herald_shared::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Settings.
    pub settings: Arc<IngestSettings>,
    /// Redis.
    pub store: Store,
    /// RabbitMQ: every message ingest publishes goes through its typed methods.
    pub publisher: Publisher,
    /// Background work (bulk replays) that shutdown waits for.
    pub background: tokio_util::task::TaskTracker,
    /// Who runs bulk replays here, and when they stop.
    pub replays: crate::replay::Replays,
    /// API keys seen recently.
    pub keys: Arc<crate::keys::KeyCache>,
    /// Single-event intake, grouped into broker messages.
    pub batcher: crate::batcher::Batcher,
    /// The intake rate limit, shared with every other ingest through Redis.
    pub limiter: RateLimiter,
    /// Operational webhooks (a connection enabled or disabled by hand).
    pub ops: herald_shared::opwebhooks::Notifier,
    /// Workspaces' connections, cached: whether a workspace's events must keep their order.
    pub config: Arc<herald_shared::store::ConfigCache>,
}

impl AppState {
    /// Whether the workspace's events go through the ordered events queue: it has a connection
    /// that delivers in order. When its configuration cannot be read they do (the ordered path
    /// is only slower, the other could reorder).
    pub async fn ordered(&self, ws: &str) -> bool {
        match self.config.workspace(ws).await {
            Ok(config) => config.connections.values().any(|c| c.ordering.is_ordered()),
            Err(_) => true,
        }
    }
}
