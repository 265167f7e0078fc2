//! Renames, once, the keys a single Redis holds from versions before workspace keys were
//! hash-tagged: `{p}:ws:<ws>[:rest]` becomes `{p}:ws:{<ws>}[:rest]`, keeping its value and TTL.
//! Every service runs it on start until it is done (`{p}:keys:tagged` is set), so an upgraded
//! installation keeps its workspaces, keys, configuration and history. A Redis Cluster is never
//! migrated: Herald has only ever run on one with tagged keys.

use redis::AsyncCommands;

use super::{Store, StoreError};

/// Renames KEYS[1] to KEYS[2] unless it is gone (another service renamed it first) or the new
/// name exists already (written since: it is kept, the old value is left to expire).
const RENAME: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('RENAMENX', KEYS[1], KEYS[2])
";

impl Store {
    /// Renames every untagged workspace key under the prefix (one SCAN of the keyspace, the
    /// first time only). Returns how many keys were renamed.
    pub(super) async fn tag_workspace_keys(&self) -> Result<usize, StoreError> {
        if self.conn.is_cluster() {
            return Ok(0);
        }
        let marker = self.key("keys:tagged");
        let mut conn = self.conn();
        if conn.exists(&marker).await? {
            return Ok(0);
        }
        // A new installation (no workspace yet) has nothing to rename: no scan.
        let workspaces: i64 = conn.zcard(self.key("workspaces")).await?;
        if workspaces == 0 {
            let _: () = conn.set(&marker, 1).await?;
            return Ok(0);
        }
        let script = redis::Script::new(RENAME);
        let mut renamed = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:ws:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            let moves: Vec<(String, String)> = keys
                .into_iter()
                .filter_map(|k| tagged_name(&self.prefix, &k).map(|new| (k, new)))
                .collect();
            if !moves.is_empty() {
                // Loaded once here, so the pipeline below finds it by hash.
                script.prepare_invoke().load_async(&mut conn).await?;
                let mut pipe = redis::pipe();
                for (old, new) in &moves {
                    pipe.invoke_script(script.key(old).key(new));
                }
                let done: Vec<i64> = pipe.query_async(&mut conn).await?;
                renamed += done.into_iter().sum::<i64>() as usize;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let _: () = conn.set(&marker, 1).await?;
        if renamed > 0 {
            tracing::info!(renamed, "workspace keys renamed to their hash-tagged names");
        }
        Ok(renamed)
    }
}

/// The hash-tagged name of an untagged workspace key, None for a key already tagged (or not a
/// workspace key). Workspace ids hold no `:`, so the id is the part up to the next one.
fn tagged_name(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(":ws:")?;
    if rest.starts_with('{') || rest.is_empty() {
        return None;
    }
    Some(match rest.split_once(':') {
        Some((ws, tail)) => format!("{prefix}:ws:{{{ws}}}:{tail}"),
        None => format!("{prefix}:ws:{{{rest}}}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_workspace_keys_get_the_tag_and_keep_the_rest() {
        let t = |k| tagged_name("herald", k);
        assert_eq!(t("herald:ws:ws_1").as_deref(), Some("herald:ws:{ws_1}"));
        assert_eq!(
            t("herald:ws:ws_1:history").as_deref(),
            Some("herald:ws:{ws_1}:history")
        );
        assert_eq!(
            t("herald:ws:ws_1:lease:a:b{c}").as_deref(),
            Some("herald:ws:{ws_1}:lease:a:b{c}")
        );
        assert_eq!(t("herald:ws:{ws_1}:history"), None, "already tagged");
        assert_eq!(t("herald:ws:{ws_1}"), None);
        assert_eq!(t("herald:apikey:abc"), None);
        assert_eq!(t("heraldx:ws:ws_1"), None, "another prefix");
    }

    #[tokio::test]
    async fn an_upgraded_store_finds_its_workspace_under_the_tagged_names() {
        let prefix = format!("herald-test-{}", crate::ids::random_base62(10));
        let settings = crate::config::CommonSettings::from_source(
            &crate::config::Source::from_pairs([("HERALD_REDIS_PREFIX", prefix.clone())]),
        )
        .expect("settings");
        let cancel = tokio_util::sync::CancellationToken::new();
        let store = Store::connect(&settings, &cancel).await.expect("redis");
        let created = store.create_workspace("old").await.expect("workspace");
        let ws = created.workspace.id.clone();
        // As an earlier version left it: untagged names, one with a TTL, no marker.
        let mut conn = store.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:ws:*"))
            .query_async(&mut conn)
            .await
            .expect("keys");
        for key in &keys {
            let old = key.replace(&format!("{{{ws}}}"), &ws);
            let _: () = conn.rename(key, &old).await.expect("rename");
        }
        let old_dl = format!("{prefix}:ws:{ws}:dl:evt_1.con_1");
        let _: () = conn.set_ex(&old_dl, "{}", 600).await.expect("dl");
        let _: () = conn.del(store.key("keys:tagged")).await.expect("marker");
        assert!(store.get_workspace(&ws).await.expect("read").is_none());

        let upgraded = Store::connect(&settings, &cancel).await.expect("redis");
        let found = upgraded.get_workspace(&ws).await.expect("read");
        assert_eq!(found.map(|w| w.name).as_deref(), Some("old"));
        let key = upgraded
            .lookup_key(&created.secret_key)
            .await
            .expect("lookup");
        assert_eq!(key.map(|k| k.workspace_id), Some(ws.clone()));
        let ttl: i64 = conn
            .ttl(upgraded.ws_key(&ws, "dl:evt_1.con_1"))
            .await
            .expect("ttl");
        assert!(
            (1..=600).contains(&ttl),
            "the TTL moves with the key: {ttl}"
        );
        assert_eq!(upgraded.tag_workspace_keys().await.expect("again"), 0);

        let all: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .expect("keys");
        for key in all {
            let _: () = conn.del(key).await.expect("cleanup");
        }
    }
}
