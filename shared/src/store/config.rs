//! Workspaces, API keys, connections and rules, and the cache services read them through.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::{parse, to_json, Store, StoreError};
use crate::model::connection::{is_sensitive_header, Auth};
use crate::model::workspace::{generate_key, hash_key};
use crate::model::{ApiKey, Connection, KeyScope, Rule, Workspace};

/// A new workspace and the keys shown to its creator once.
pub struct NewWorkspace {
    /// The workspace.
    pub workspace: Workspace,
    /// Its secret key (`sk_...`).
    pub secret_key: String,
    /// Its publishable key (`pk_...`).
    pub publishable_key: String,
}

impl Store {
    /// A connection as stored: its signing secrets and credentials sealed, the connection id
    /// as their context.
    fn seal_connection(&self, c: &Connection) -> String {
        let keys = self.secrets();
        let mut sealed = c.clone();
        sealed.secret = keys.seal(&c.secret, &c.id);
        for p in &mut sealed.previous_secrets {
            p.secret = keys.seal(&p.secret, &c.id);
        }
        match &mut sealed.auth {
            Some(Auth::Bearer { token }) => *token = keys.seal(token, &c.id),
            Some(Auth::Basic { password, .. }) => *password = keys.seal(password, &c.id),
            None => {}
        }
        for (name, value) in &mut sealed.headers {
            if is_sensitive_header(name) {
                *value = keys.seal(value, &c.id);
            }
        }
        to_json(&sealed)
    }

    /// A stored connection with its secrets opened.
    fn open_connection(&self, key: &str, json: &str) -> Result<Connection, StoreError> {
        let mut c: Connection = parse(key, json)?;
        let keys = self.secrets();
        let open = |v: &mut String, id: &str| {
            *v = keys.open(v, id).map_err(|source| StoreError::Secret {
                key: key.to_string(),
                source,
            })?;
            Ok::<_, StoreError>(())
        };
        let id = c.id.clone();
        open(&mut c.secret, &id)?;
        for p in &mut c.previous_secrets {
            open(&mut p.secret, &id)?;
        }
        match &mut c.auth {
            Some(Auth::Bearer { token }) => open(token, &id)?,
            Some(Auth::Basic { password, .. }) => open(password, &id)?,
            None => {}
        }
        for (name, value) in &mut c.headers {
            if is_sensitive_header(name) {
                open(value, &id)?;
            }
        }
        Ok(c)
    }

    /// Re-seals, with the current key, every stored connection whose secrets are plaintext or
    /// sealed with an old key (after `HERALD_SECRETS_KEY` changed). A connection changed
    /// meanwhile is left to its writer, which sealed it with the current key anyway. Returns how
    /// many were re-sealed.
    pub async fn reseal_connections(&self) -> Result<usize, StoreError> {
        const SWAP: &str = r"
            if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
                redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
                return 1
            end
            return 0";
        let swap = redis::Script::new(SWAP);
        let mut conn = self.conn();
        let workspaces: Vec<String> = conn.zrange(self.key("workspaces"), 0, -1).await?;
        let mut resealed = 0;
        for ws in workspaces {
            let key = self.ws_key(&ws, "conns");
            let all: HashMap<String, String> = conn.hgetall(&key).await?;
            for (id, stored) in all {
                let raw: Connection = parse(&key, &stored)?;
                let keys = self.secrets();
                let mut fields = vec![raw.secret.as_str()];
                fields.extend(raw.previous_secrets.iter().map(|p| p.secret.as_str()));
                match &raw.auth {
                    Some(Auth::Bearer { token }) => fields.push(token),
                    Some(Auth::Basic { password, .. }) => fields.push(password),
                    None => {}
                }
                fields.extend(
                    raw.headers
                        .iter()
                        .filter(|(n, _)| is_sensitive_header(n))
                        .map(|(_, v)| v.as_str()),
                );
                if fields.iter().all(|f| keys.is_current(f)) {
                    continue;
                }
                let opened = self.open_connection(&key, &stored)?;
                let done: i64 = swap
                    .key(&key)
                    .arg(&id)
                    .arg(&stored)
                    .arg(self.seal_connection(&opened))
                    .invoke_async(&mut conn)
                    .await?;
                resealed += done as usize;
            }
        }
        Ok(resealed)
    }

    async fn bump_version(&self, pipe: &mut redis::Pipeline) {
        pipe.incr(self.key("config:ver"), 1).ignore();
    }

    /// The configuration version (changes on every write).
    pub async fn config_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = self.conn().get(self.key("config:ver")).await?;
        Ok(v.unwrap_or(0))
    }

    /// Creates a workspace with a fresh secret and publishable key.
    pub async fn create_workspace(&self, name: &str) -> Result<NewWorkspace, StoreError> {
        let now = crate::now_ms();
        let workspace = Workspace {
            id: crate::ids::new_id("ws"),
            name: name.to_string(),
            created_at: now,
        };
        let secret_key = generate_key(KeyScope::Secret);
        let publishable_key = generate_key(KeyScope::Publishable);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.set(
            self.key(&format!("ws:{}", workspace.id)),
            to_json(&workspace),
        )
        .ignore();
        pipe.zadd(self.key("workspaces"), &workspace.id, now)
            .ignore();
        for (key, scope) in [
            (&secret_key, KeyScope::Secret),
            (&publishable_key, KeyScope::Publishable),
        ] {
            let hash = hash_key(key);
            let record = ApiKey {
                workspace_id: workspace.id.clone(),
                scope,
                created_at: now,
            };
            pipe.set(self.key(&format!("apikey:{hash}")), to_json(&record))
                .ignore();
            pipe.sadd(self.ws_key(&workspace.id, "keys"), &hash)
                .ignore();
        }
        self.bump_version(&mut pipe).await;
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(NewWorkspace {
            workspace,
            secret_key,
            publishable_key,
        })
    }

    /// Replaces the workspace's keys of a scope with a new one (the old stop working at once).
    pub async fn roll_key(
        &self,
        workspace_id: &str,
        scope: KeyScope,
    ) -> Result<String, StoreError> {
        let mut conn = self.conn();
        let hashes: Vec<String> = conn.smembers(self.ws_key(workspace_id, "keys")).await?;
        let key = generate_key(scope);
        let hash = hash_key(&key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for old in hashes {
            let record: Option<String> = conn.get(self.key(&format!("apikey:{old}"))).await?;
            let Some(record) = record else { continue };
            let record: ApiKey = parse(&old, &record)?;
            if record.scope == scope {
                pipe.del(self.key(&format!("apikey:{old}"))).ignore();
                pipe.srem(self.ws_key(workspace_id, "keys"), &old).ignore();
            }
        }
        let record = ApiKey {
            workspace_id: workspace_id.to_string(),
            scope,
            created_at: crate::now_ms(),
        };
        pipe.set(self.key(&format!("apikey:{hash}")), to_json(&record))
            .ignore();
        pipe.sadd(self.ws_key(workspace_id, "keys"), &hash).ignore();
        self.bump_version(&mut pipe).await;
        pipe.query_async::<()>(&mut conn).await?;
        Ok(key)
    }

    /// Workspaces, newest first.
    pub async fn list_workspaces(
        &self,
        cursor: Option<super::Cursor>,
        limit: usize,
    ) -> Result<(Vec<Workspace>, Option<super::Cursor>), StoreError> {
        let mut conn = self.conn();
        let key = self.key("workspaces");
        let this = self.clone();
        super::scan_newest(&mut conn, &key, cursor, limit, limit, |ids| {
            let this = this.clone();
            async move {
                let keys: Vec<String> =
                    ids.iter().map(|id| this.key(&format!("ws:{id}"))).collect();
                let values: Vec<Option<String>> = this.conn().mget(&keys).await?;
                values
                    .into_iter()
                    .zip(keys)
                    .map(|(v, k)| v.map(|v| parse(&k, &v)).transpose())
                    .collect()
            }
        })
        .await
    }

    /// One workspace.
    pub async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        let key = self.key(&format!("ws:{id}"));
        let v: Option<String> = self.conn().get(&key).await?;
        v.map(|v| parse(&key, &v)).transpose()
    }

    /// The key record for a presented token, if it is a valid key.
    pub async fn lookup_key(&self, token: &str) -> Result<Option<ApiKey>, StoreError> {
        let key = self.key(&format!("apikey:{}", hash_key(token)));
        let v: Option<String> = self.conn().get(&key).await?;
        v.map(|v| parse(&key, &v)).transpose()
    }

    /// Creates or replaces a connection.
    pub async fn put_connection(&self, c: &Connection) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hset(
            self.ws_key(&c.workspace_id, "conns"),
            &c.id,
            self.seal_connection(c),
        )
        .ignore();
        self.bump_version(&mut pipe).await;
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// One connection of a workspace.
    pub async fn get_connection(
        &self,
        ws: &str,
        id: &str,
    ) -> Result<Option<Connection>, StoreError> {
        let key = self.ws_key(ws, "conns");
        let v: Option<String> = self.conn().hget(&key, id).await?;
        v.map(|v| self.open_connection(&key, &v)).transpose()
    }

    /// Every connection of a workspace, newest first.
    pub async fn list_connections(&self, ws: &str) -> Result<Vec<Connection>, StoreError> {
        let key = self.ws_key(ws, "conns");
        let all: HashMap<String, String> = self.conn().hgetall(&key).await?;
        let mut out = all
            .values()
            .map(|v| self.open_connection(&key, v))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(out)
    }

    /// Deletes a connection and the rules that point at it, in one transaction.
    /// Returns false if there was no such connection.
    pub async fn delete_connection(&self, ws: &str, id: &str) -> Result<bool, StoreError> {
        let rules = self.list_rules(ws).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hdel(self.ws_key(ws, "conns"), id);
        for r in rules.iter().filter(|r| r.connection_id == id) {
            pipe.hdel(self.ws_key(ws, "rules"), &r.id).ignore();
        }
        self.bump_version(&mut pipe).await;
        let (removed,): (i64,) = pipe.query_async(&mut self.conn()).await?;
        Ok(removed > 0)
    }

    /// Creates or replaces a rule.
    pub async fn put_rule(&self, r: &Rule) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hset(self.ws_key(&r.workspace_id, "rules"), &r.id, to_json(r))
            .ignore();
        self.bump_version(&mut pipe).await;
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// One rule of a workspace.
    pub async fn get_rule(&self, ws: &str, id: &str) -> Result<Option<Rule>, StoreError> {
        let key = self.ws_key(ws, "rules");
        let v: Option<String> = self.conn().hget(&key, id).await?;
        v.map(|v| parse(&key, &v)).transpose()
    }

    /// Every rule of a workspace, newest first.
    pub async fn list_rules(&self, ws: &str) -> Result<Vec<Rule>, StoreError> {
        let key = self.ws_key(ws, "rules");
        let all: HashMap<String, String> = self.conn().hgetall(&key).await?;
        let mut out = all
            .values()
            .map(|v| parse::<Rule>(&key, v))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(out)
    }

    /// Deletes a rule. Returns false if there was no such rule.
    pub async fn delete_rule(&self, ws: &str, id: &str) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hdel(self.ws_key(ws, "rules"), id);
        self.bump_version(&mut pipe).await;
        let (removed,): (i64,) = pipe.query_async(&mut self.conn()).await?;
        Ok(removed > 0)
    }

    /// A workspace's whole configuration, read in one round trip.
    pub async fn load_workspace_config(&self, ws: &str) -> Result<WorkspaceConfig, StoreError> {
        let conns_key = self.ws_key(ws, "conns");
        let rules_key = self.ws_key(ws, "rules");
        let (exists, conns, rules): (bool, HashMap<String, String>, HashMap<String, String>) =
            redis::pipe()
                .exists(self.key(&format!("ws:{ws}")))
                .hgetall(&conns_key)
                .hgetall(&rules_key)
                .query_async(&mut self.conn())
                .await?;
        let connections = conns
            .into_iter()
            .map(|(id, v)| Ok((id, Arc::new(self.open_connection(&conns_key, &v)?))))
            .collect::<Result<HashMap<_, _>, StoreError>>()?;
        let mut rules = rules
            .values()
            .map(|v| parse::<Rule>(&rules_key, v))
            .collect::<Result<Vec<_>, _>>()?;
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(WorkspaceConfig {
            exists,
            connections,
            rules,
        })
    }
}

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
