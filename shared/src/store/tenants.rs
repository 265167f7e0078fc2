//! Workspaces, their API keys, connections and rules: what operators and tenants manage. Every
//! write bumps the configuration version the caches poll.

use std::collections::HashMap;
use std::sync::Arc;

use redis::AsyncCommands;

use super::cache::WorkspaceConfig;
use super::{parse, to_json, Store, StoreError};
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
    /// Tells the caches that configuration changed. Always after the change is written (a
    /// cache that reloads on the new version must find it), and as a command of its own: the
    /// version key and a workspace's keys are in different slots of a cluster.
    pub(super) async fn bump_version(&self) -> Result<(), StoreError> {
        let _: i64 = self.conn().incr(self.key("config:ver"), 1).await?;
        Ok(())
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
        // The workspace and the set of its keys first (one slot, one transaction), then each
        // key (a slot of its own), then the list of workspaces: a failure part way leaves at
        // worst a workspace nobody holds a key to, never a key to no workspace.
        let mut hashes = Vec::new();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.set(self.ws_root_key(&workspace.id), to_json(&workspace))
            .ignore();
        for (key, scope) in [
            (&secret_key, KeyScope::Secret),
            (&publishable_key, KeyScope::Publishable),
        ] {
            let hash = hash_key(key);
            pipe.sadd(self.ws_key(&workspace.id, "keys"), &hash)
                .ignore();
            hashes.push((hash, scope));
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        for (hash, scope) in hashes {
            let record = ApiKey {
                workspace_id: workspace.id.clone(),
                scope,
                created_at: now,
            };
            let _: () = self
                .conn()
                .set(self.key(&format!("apikey:{hash}")), to_json(&record))
                .await?;
        }
        let _: () = self
            .conn()
            .zadd(self.key("workspaces"), &workspace.id, now)
            .await?;
        self.bump_version().await?;
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
        let mut old_keys = Vec::new();
        for old in hashes {
            let record: Option<String> = conn.get(self.key(&format!("apikey:{old}"))).await?;
            let Some(record) = record else { continue };
            let record: ApiKey = parse(&old, &record)?;
            if record.scope == scope {
                old_keys.push(old);
            }
        }
        // The new key exists before the old ones go (each key is a slot of its own in a
        // cluster, apart from the workspace's set of them).
        let record = ApiKey {
            workspace_id: workspace_id.to_string(),
            scope,
            created_at: crate::now_ms(),
        };
        let _: () = conn
            .set(self.key(&format!("apikey:{hash}")), to_json(&record))
            .await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.sadd(self.ws_key(workspace_id, "keys"), &hash).ignore();
        for old in &old_keys {
            pipe.srem(self.ws_key(workspace_id, "keys"), old).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        for old in &old_keys {
            let _: () = conn.del(self.key(&format!("apikey:{old}"))).await?;
        }
        self.bump_version().await?;
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
        super::paging::scan_newest(&mut conn, &key, cursor, None, limit, limit, |ids| {
            let this = this.clone();
            async move {
                // In a cluster, MGET over workspaces of several slots is split by slot (by
                // redis-rs) and put back in order.
                let keys: Vec<String> = ids.iter().map(|id| this.ws_root_key(id)).collect();
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
        let key = self.ws_root_key(id);
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
        let _: () = self
            .conn()
            .hset(
                self.ws_key(&c.workspace_id, "conns"),
                &c.id,
                self.seal_connection(c),
            )
            .await?;
        self.bump_version().await
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
        pipe.del(self.ws_key(ws, &format!("failing:{id}"))).ignore();
        for r in rules.iter().filter(|r| r.connection_id == id) {
            pipe.hdel(self.ws_key(ws, "rules"), &r.id).ignore();
        }
        let (removed,): (i64,) = pipe.query_async(&mut self.conn()).await?;
        self.bump_version().await?;
        Ok(removed > 0)
    }

    /// Creates or replaces a rule.
    pub async fn put_rule(&self, r: &Rule) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(self.ws_key(&r.workspace_id, "rules"), &r.id, to_json(r))
            .await?;
        self.bump_version().await
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
        let (removed,): (i64,) = pipe.query_async(&mut self.conn()).await?;
        self.bump_version().await?;
        Ok(removed > 0)
    }

    /// A workspace's whole configuration, read in one round trip.
    pub async fn load_workspace_config(&self, ws: &str) -> Result<WorkspaceConfig, StoreError> {
        let conns_key = self.ws_key(ws, "conns");
        let rules_key = self.ws_key(ws, "rules");
        let (exists, conns, rules): (bool, HashMap<String, String>, HashMap<String, String>) =
            redis::pipe()
                .exists(self.ws_root_key(ws))
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
        let ordered = connections.values().any(|c| c.ordering.is_ordered());
        Ok(WorkspaceConfig {
            exists,
            connections,
            rules,
            ordered,
        })
    }
}
