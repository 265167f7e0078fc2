//! Portal sessions and portal settings, in Redis beside the workspace.
//!
//! A session token (`sess_` + 32 base62 characters) is shown once, to the SaaS backend that
//! minted it; Redis keeps only its SHA-256, with a TTL equal to the session's life, so an
//! expired session is gone rather than merely marked. Keys:
//! ```text
//! {p}:session:{sha256}   session JSON (workspace, role, expiry), expires with the session
//! {p}:ws:{ws}:portal     portal settings JSON (frame_ancestors)
//! ```

use std::time::Duration;

use herald_shared::model::workspace::hash_key;
use herald_shared::store::{Store, StoreError};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// What a portal session may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read the workspace's connections, rules, history and dead letters.
    Viewer,
    /// Also manage connections, rules and secrets, send test events and replay.
    Editor,
}

/// A stored session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The workspace the session is confined to.
    pub workspace_id: String,
    /// What it may do.
    pub role: Role,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// When the first session of this chain of refreshes was minted (Unix milliseconds).
    pub started_at: i64,
    /// The life of each token of the chain, in milliseconds.
    pub ttl_ms: i64,
}

/// Session life when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// Shortest and longest life a request may ask for, in seconds.
pub const TTL_RANGE_S: std::ops::RangeInclusive<u64> = 5..=3600;
/// A chain of refreshes ends this long after the first token was minted: an open page cannot
/// keep a session alive for ever.
pub const MAX_CHAIN: Duration = Duration::from_secs(12 * 3600);
/// A refreshed-away token keeps working this long, for requests already in flight.
pub const REFRESH_OVERLAP: Duration = Duration::from_secs(30);

/// The prefix that makes a session token recognisable.
pub const TOKEN_PREFIX: &str = "sess_";

/// Portal settings of a workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PortalSettings {
    /// Origins allowed to embed the portal in a frame (`frame-ancestors` of its pages), e.g.
    /// `https://app.example.com`. Empty: the portal cannot be framed.
    pub frame_ancestors: Vec<String>,
}

fn session_key(store: &Store, token: &str) -> String {
    store.key(&format!("session:{}", hash_key(token)))
}

/// Stores a new session and returns its token.
pub async fn create(store: &Store, session: &Session) -> Result<String, StoreError> {
    let token = format!("{TOKEN_PREFIX}{}", herald_shared::ids::random_base62(32));
    let ttl = (session.expires_at - herald_shared::now_ms()).max(1) as u64;
    let json = serde_json::to_string(session).unwrap_or_default();
    let _: () = store
        .conn()
        .pset_ex(session_key(store, &token), json, ttl)
        .await?;
    Ok(token)
}

/// The live session of a token, if any.
pub async fn lookup(store: &Store, token: &str) -> Result<Option<Session>, StoreError> {
    let key = session_key(store, token);
    let raw: Option<String> = store.conn().get(&key).await?;
    let now = herald_shared::now_ms();
    Ok(raw
        .and_then(|r| serde_json::from_str::<Session>(&r).ok())
        .filter(|s| s.expires_at > now))
}

/// Shortens a token's life to at most `left` (used when it was refreshed).
pub async fn retire(store: &Store, token: &str, left: Duration) -> Result<(), StoreError> {
    let key = session_key(store, token);
    let ttl: i64 = store.conn().pttl(&key).await?;
    if ttl > left.as_millis() as i64 {
        let _: () = store.conn().pexpire(&key, left.as_millis() as i64).await?;
    }
    Ok(())
}

fn portal_key(store: &Store, ws: &str) -> String {
    store.ws_key(ws, "portal")
}

/// The workspace's portal settings (defaults when never set).
pub async fn settings(store: &Store, ws: &str) -> Result<PortalSettings, StoreError> {
    let raw: Option<String> = store.conn().get(portal_key(store, ws)).await?;
    Ok(raw
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_default())
}

/// Replaces the workspace's portal settings.
pub async fn put_settings(
    store: &Store,
    ws: &str,
    settings: &PortalSettings,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(settings).unwrap_or_default();
    let _: () = store.conn().set(portal_key(store, ws), json).await?;
    Ok(())
}

/// Checks and normalises one origin of `frame_ancestors`: `https://host[:port]` (or `http://`),
/// nothing after the authority.
pub fn normalise_origin(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not an origin: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must start with https:// (or http://)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be an origin only (scheme, host, port), without a path".into());
    }
    if raw.ends_with('/') && !raw.ends_with("//") && raw.matches('/').count() > 2 {
        return Err("must be an origin only (scheme, host, port), without a path".into());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::normalise_origin;

    #[test]
    fn origins_are_normalised_and_anything_more_is_refused() {
        assert_eq!(
            normalise_origin("https://App.Example.com").as_deref(),
            Ok("https://app.example.com")
        );
        assert_eq!(
            normalise_origin("http://127.0.0.1:5173").as_deref(),
            Ok("http://127.0.0.1:5173")
        );
        for bad in [
            "app.example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://example.com/",
            "https://example.com?x=1",
            "https://user:pw@example.com",
            "https://example.com; script-src *",
            "*",
        ] {
            assert!(normalise_origin(bad).is_err(), "{bad} must be refused");
        }
    }
}
