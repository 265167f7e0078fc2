//! OAuth2 access tokens of connections, shared by every deliverer so the token endpoint issues
//! one token per lifetime, not one per replica or delivery. Keys:
//! ```text
//! {p}:ws:{<ws>}:oauth:{conn}:{fp}       the token, sealed like a secret; expires when it should
//!                                       no longer be used (bound: one per connection and
//!                                       OAuth2 settings, each with its TTL)
//! {p}:ws:{<ws>}:oauth-lock:{conn}:{fp}  a deliverer is fetching it (expires after 30 s)
//! ```
//! `fp` is the fingerprint of the connection's OAuth2 settings: changed settings never read
//! a token issued for the old ones. Tokens are sealed with the connection id as context.

use std::time::Duration;

use redis::AsyncCommands;

use super::{Store, StoreError};

/// How long a deliverer may hold the fetch lock before another fetches anyway.
pub const FETCH_LOCK: Duration = Duration::from_secs(30);

impl Store {
    fn token_key(&self, ws: &str, conn: &str, fingerprint: &str) -> String {
        self.ws_key(ws, &format!("oauth:{conn}:{fingerprint}"))
    }

    fn token_lock_key(&self, ws: &str, conn: &str, fingerprint: &str) -> String {
        self.ws_key(ws, &format!("oauth-lock:{conn}:{fingerprint}"))
    }

    /// The cached token and how long it may still be used, if any.
    pub async fn cached_token(
        &self,
        ws: &str,
        conn: &str,
        fingerprint: &str,
    ) -> Result<Option<(String, Duration)>, StoreError> {
        let key = self.token_key(ws, conn, fingerprint);
        let mut c = self.conn();
        let (sealed, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut c)
            .await?;
        let (Some(sealed), true) = (sealed, ttl_ms > 0) else {
            return Ok(None);
        };
        let token = self
            .secrets()
            .open(&sealed, conn)
            .map_err(|source| StoreError::Secret { key, source })?;
        Ok(Some((token, Duration::from_millis(ttl_ms as u64))))
    }

    /// Caches a token for `usable` (its TTL: no token outlives the time it may be used).
    pub async fn cache_token(
        &self,
        ws: &str,
        conn: &str,
        fingerprint: &str,
        token: &str,
        usable: Duration,
    ) -> Result<(), StoreError> {
        let ms = usable.as_millis().max(1) as u64;
        let sealed = self.secrets().seal(token, conn);
        let mut c = self.conn();
        let () = c
            .pset_ex(self.token_key(ws, conn, fingerprint), sealed, ms)
            .await?;
        Ok(())
    }

    /// Forgets a cached token the endpoint refused, unless another deliverer replaced it
    /// meanwhile.
    pub async fn drop_token(
        &self,
        ws: &str,
        conn: &str,
        fingerprint: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        if let Some((cached, _)) = self.cached_token(ws, conn, fingerprint).await? {
            if cached == token {
                let mut c = self.conn();
                let () = c.del(self.token_key(ws, conn, fingerprint)).await?;
            }
        }
        Ok(())
    }

    /// Takes the right to fetch the connection's token (for [`FETCH_LOCK`]); false when
    /// another deliverer holds it.
    pub async fn lock_token_fetch(
        &self,
        ws: &str,
        conn: &str,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let got: Option<String> = redis::cmd("SET")
            .arg(self.token_lock_key(ws, conn, fingerprint))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(FETCH_LOCK.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(got.is_some())
    }

    /// Gives the fetch right back.
    pub async fn unlock_token_fetch(
        &self,
        ws: &str,
        conn: &str,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn();
        let () = c.del(self.token_lock_key(ws, conn, fingerprint)).await?;
        Ok(())
    }
}
