//! Portal sessions and a workspace's portal settings.
//!
//! A session token (`sess_` + 32 base62 characters) is shown once, to the SaaS backend that
//! minted it; Redis keeps only its SHA-256, with a TTL equal to the session's life, so an
//! expired session is gone rather than merely marked. Keys:
//! ```text
//! {p}:session:{sha256}            session JSON (workspace, role, expiry, epoch), expires with it
//! {p}:refreshed:{sha256}          the token was refreshed once already (as long as it lives)
//! {p}:ws:{ws}:session-epoch       bumped to revoke every session of the workspace
//! {p}:ws:{ws}:portal              portal settings JSON (frame_ancestors)
//! ```

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{parse, Store, StoreError};
use crate::model::workspace::hash_key;

/// The prefix that makes a session token recognisable.
pub const TOKEN_PREFIX: &str = "sess_";

/// What a portal session may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
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
    /// The workspace's session epoch when it was minted: revoking every session of the
    /// workspace moves the epoch on, and sessions of an older one are no sessions.
    #[serde(default)]
    pub epoch: i64,
}

/// Portal settings of a workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PortalSettings {
    /// Origins allowed to embed the portal in a frame (`frame-ancestors` of its pages), e.g.
    /// `https://app.example.com`. Empty: the portal cannot be framed.
    pub frame_ancestors: Vec<String>,
    /// Where the workspace's operational webhooks go (about its own connections only); its
    /// signing secret is the target connection's in Herald's workspace (see `opwebhooks`).
    #[serde(default)]
    pub operational_webhook_url: Option<String>,
}

/// A session or the portal settings could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Redis failed, or what it holds did not parse.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The value could not be written as JSON: nothing was stored (never an empty value).
    #[error("cannot serialise the {what}: {source}")]
    Serialise {
        /// What was being written.
        what: &'static str,
        /// The serialiser's error.
        source: serde_json::Error,
    },
}

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        SessionError::Store(e.into())
    }
}

fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, SessionError> {
    serde_json::to_string(value).map_err(|source| SessionError::Serialise { what, source })
}

impl Store {
    fn session_key(&self, token: &str) -> String {
        self.key(&format!("session:{}", hash_key(token)))
    }

    fn portal_key(&self, ws: &str) -> String {
        self.ws_key(ws, "portal")
    }

    fn epoch_key(&self, ws: &str) -> String {
        self.ws_key(ws, "session-epoch")
    }

    /// Stores a new session (of the workspace's current epoch) and returns its token. The key
    /// expires with the session.
    pub async fn create_session(&self, session: &Session) -> Result<String, SessionError> {
        let token = format!("{TOKEN_PREFIX}{}", crate::ids::random_base62(32));
        let ttl = (session.expires_at - crate::now_ms()).max(1) as u64;
        let epoch: Option<i64> = self
            .conn()
            .get(self.epoch_key(&session.workspace_id))
            .await?;
        let session = Session {
            epoch: epoch.unwrap_or(0),
            ..session.clone()
        };
        let json = to_json("session", &session)?;
        let _: () = self
            .conn()
            .pset_ex(self.session_key(&token), json, ttl)
            .await?;
        Ok(token)
    }

    /// The live session of a token, if any. A value that does not parse is no session: the
    /// caller is refused as with an unknown token.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, SessionError> {
        let raw: Option<String> = self.conn().get(self.session_key(token)).await?;
        let now = crate::now_ms();
        let Some(session) = raw
            .and_then(|r| serde_json::from_str::<Session>(&r).ok())
            .filter(|s| s.expires_at > now)
        else {
            return Ok(None);
        };
        let epoch: Option<i64> = self
            .conn()
            .get(self.epoch_key(&session.workspace_id))
            .await?;
        Ok((session.epoch == epoch.unwrap_or(0)).then_some(session))
    }

    /// Claims the one refresh a token allows: true the first time, false ever after (for as
    /// long as the token could be presented).
    pub async fn claim_refresh(&self, token: &str) -> Result<bool, SessionError> {
        let key = self.key(&format!("refreshed:{}", hash_key(token)));
        let ttl: i64 = self.conn().pttl(self.session_key(token)).await?;
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.max(1000))
            .query_async(&mut self.conn())
            .await?;
        Ok(claimed.is_some())
    }

    /// Ends one session now.
    pub async fn revoke_session(&self, token: &str) -> Result<(), SessionError> {
        let _: () = self.conn().del(self.session_key(token)).await?;
        Ok(())
    }

    /// Ends every session of a workspace now (sessions minted after this are not affected).
    pub async fn revoke_sessions(&self, ws: &str) -> Result<(), SessionError> {
        let _: () = self.conn().incr(self.epoch_key(ws), 1).await?;
        Ok(())
    }

    /// Shortens a token's life to at most `left` (used when it was refreshed).
    pub async fn retire_session(&self, token: &str, left: Duration) -> Result<(), SessionError> {
        let key = self.session_key(token);
        let ttl: i64 = self.conn().pttl(&key).await?;
        if ttl > left.as_millis() as i64 {
            let _: () = self.conn().pexpire(&key, left.as_millis() as i64).await?;
        }
        Ok(())
    }

    /// The workspace's portal settings (defaults when never set).
    pub async fn portal_settings(&self, ws: &str) -> Result<PortalSettings, SessionError> {
        let key = self.portal_key(ws);
        let raw: Option<String> = self.conn().get(&key).await?;
        match raw {
            Some(r) => Ok(parse(&key, &r)?),
            None => Ok(PortalSettings::default()),
        }
    }

    /// Replaces the workspace's portal settings (one small value per workspace).
    pub async fn put_portal_settings(
        &self,
        ws: &str,
        settings: &PortalSettings,
    ) -> Result<(), SessionError> {
        let json = to_json("portal settings", settings)?;
        let _: () = self.conn().set(self.portal_key(ws), json).await?;
        Ok(())
    }
}
