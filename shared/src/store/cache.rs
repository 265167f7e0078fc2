//! The configuration cache the router and deliverer read workspaces through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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
    /// Whether any connection delivers in order (its events then go through the ordered
    /// events queue), worked out once when loaded.
    pub ordered: bool,
}

/// Whose turn it is to load a workspace, and how the last load went.
#[derive(Default)]
struct Loader {
    turn: tokio::sync::Mutex<()>,
    finished: AtomicU64,
    failed: std::sync::atomic::AtomicBool,
}

struct Cached {
    config: Arc<WorkspaceConfig>,
    stale: bool,
}

/// Configuration as the router and deliverer read it: from memory, reloaded after any change
/// (a version key polled every `HERALD_CONFIG_REFRESH`), and still served from memory while
/// Redis is down. A workspace is loaded by one caller at a time: the thousands of jobs that
/// find it stale at once wait for that load instead of each reading (and opening the sealed
/// secrets of) every connection again.
pub struct ConfigCache {
    store: Store,
    entries: RwLock<HashMap<String, Cached>>,
    /// One a workspace: its load is made by one caller at a time.
    loaders: Mutex<HashMap<String, Arc<Loader>>>,
    /// Bumped by every invalidation: a load that started before one is stored as stale.
    generation: AtomicU64,
    loads: AtomicU64,
}

impl ConfigCache {
    /// An empty cache over the store.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            entries: RwLock::new(HashMap::new()),
            loaders: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            loads: AtomicU64::new(0),
        })
    }

    /// How many times a workspace was read from Redis.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn cached(&self, ws: &str) -> Option<(Arc<WorkspaceConfig>, bool)> {
        self.entries
            .read()
            .ok()
            .and_then(|e| e.get(ws).map(|c| (c.config.clone(), c.stale)))
    }

    /// A workspace's configuration: cached, or loaded. When Redis fails and a stale copy is
    /// at hand, the stale copy is used.
    pub async fn workspace(&self, ws: &str) -> Result<Arc<WorkspaceConfig>, StoreError> {
        if let Some((config, false)) = self.cached(ws) {
            return Ok(config);
        }
        let loader = self
            .loaders
            .lock()
            .map(|mut l| l.entry(ws.to_string()).or_default().clone())
            .unwrap_or_default();
        let seen = loader.finished.load(Ordering::SeqCst);
        let _turn = loader.turn.lock().await;
        // Whoever held the turn before may have loaded it meanwhile, or failed to: a caller
        // does not wait out another Redis timeout right after one.
        let cached = self.cached(ws);
        let just_failed =
            loader.finished.load(Ordering::SeqCst) != seen && loader.failed.load(Ordering::SeqCst);
        let loaded = match &cached {
            Some((config, false)) => return Ok(config.clone()),
            _ if just_failed => Err(StoreError::Redis(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "the configuration could not be read just now",
            )))),
            _ => self.load(ws).await,
        };
        if !just_failed {
            loader.failed.store(loaded.is_err(), Ordering::SeqCst);
            loader.finished.fetch_add(1, Ordering::SeqCst);
        }
        match (loaded, cached) {
            (Ok(fresh), _) => Ok(fresh),
            (Err(e), Some((stale, _))) => {
                tracing::warn!(error = %e, workspace_id = ws, "using cached configuration");
                Ok(stale)
            }
            (Err(e), None) => Err(e),
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
        let generation = self.generation.load(Ordering::SeqCst);
        self.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_config_loads_total").increment(1);
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
        self.generation.fetch_add(1, Ordering::SeqCst);
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
