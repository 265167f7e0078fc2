//! The configuration cache the router and deliverer read workspaces through.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use crate::model::{Connection, Rule};

/// A workspace's connections and rules as services use them.
#[derive(Debug, Default)]
pub struct WorkspaceConfig {
    /// False for an unknown workspace id.
    pub exists: bool,
    /// By id.
    pub connections: HashMap<String, Arc<Connection>>,
    /// All rules, enabled or not.
    pub rules: Vec<Rule>,
}

struct Cached {
    config: Arc<WorkspaceConfig>,
    stale: bool,
}

/// Configuration as the router and deliverer read it: from memory, reloaded after any change
/// (a version key polled every `HERALD_CONFIG_REFRESH`), and still served from memory while
/// Redis is down.
pub struct ConfigCache {
    store: Store,
    entries: RwLock<HashMap<String, Cached>>,
    /// Bumped by every invalidation: a load that started before one is stored as stale.
    generation: std::sync::atomic::AtomicU64,
}

impl ConfigCache {
    /// An empty cache over the store.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            entries: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A workspace's configuration: cached, or loaded. When Redis fails and a stale copy is
    /// at hand, the stale copy is used.
    pub async fn workspace(&self, ws: &str) -> Result<Arc<WorkspaceConfig>, StoreError> {
        let cached = self
            .entries
            .read()
            .ok()
            .and_then(|e| e.get(ws).map(|c| (c.config.clone(), c.stale)));
        match cached {
            Some((config, false)) => Ok(config),
            Some((stale, true)) => match self.load(ws).await {
                Ok(fresh) => Ok(fresh),
                Err(e) => {
                    tracing::warn!(error = %e, workspace_id = ws, "using cached configuration");
                    Ok(stale)
                }
            },
            None => self.load(ws).await,
        }
    }

    /// A workspace's configuration read from Redis now, past the cache (and cached). For a
    /// decision that cannot be taken back on a copy up to `HERALD_CONFIG_REFRESH` old, such as
    /// dead-lettering a job because its connection seems gone or disabled.
    pub async fn reload(&self, ws: &str) -> Result<Arc<WorkspaceConfig>, StoreError> {
        self.load(ws).await
    }

    /// Reads a workspace from Redis and caches it; fresh only if no change was announced while
    /// it was being read (otherwise the next use reads again).
    async fn load(&self, ws: &str) -> Result<Arc<WorkspaceConfig>, StoreError> {
        use std::sync::atomic::Ordering;
        let generation = self.generation.load(Ordering::SeqCst);
        let config = Arc::new(self.store.load_workspace_config(ws).await?);
        if let Ok(mut e) = self.entries.write() {
            e.insert(
                ws.to_string(),
                Cached {
                    config: config.clone(),
                    stale: self.generation.load(Ordering::SeqCst) != generation,
                },
            );
        }
        Ok(config)
    }

    /// Marks every entry stale (they reload on next use).
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut e) = self.entries.write() {
            e.values_mut().for_each(|c| c.stale = true);
        }
    }

    /// Polls the configuration version and invalidates the cache when it moves.
    pub async fn refresh(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let mut seen: Option<i64> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.store.config_version().await {
                Ok(v) if seen != Some(v) => {
                    self.invalidate();
                    seen = Some(v);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "config version poll failed"),
            }
        }
    }
}
