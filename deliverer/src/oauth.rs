//! OAuth 2.0 client credentials (RFC 6749 section 4.4): the bearer token a connection's
//! requests carry, fetched from its token endpoint and shared by every deliverer through Redis
//! (see `herald_shared::store::tokens`), so the endpoint issues one token per lifetime.
//!
//! A token is used until 30 s before it expires; a token too short-lived for that margin is used
//! for half its lifetime (a 5 s token is reused for 2.5 s, a 60 s one for 30 s). Each deliverer also keeps it in memory for as long,
//! and fetches it at most once at a time per connection; across deliverers a short Redis lock
//! makes the others wait for the first one's token. The token endpoint is called through the
//! connection's own client (the destination guard, no redirects, its client certificate when it
//! has one) with the connection's timeout. Tokens are never logged nor put in the history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use herald_shared::model::connection::{ClientAuth, OAuth2};
use herald_shared::store::Store;
use serde::Deserialize;
use tokio::time::Instant;

/// A token is given up this long before it expires...
const MARGIN: Duration = Duration::from_secs(30);
/// ...and used for how long when the endpoint does not say `expires_in`.
const UNSTATED_LIFETIME: Duration = Duration::from_secs(60);
/// The most of a token response that is read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long a deliverer waits for another's fetch before fetching itself.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(5);

/// How long a token that lives `expires_in` is used: until 30 s before it expires, or half its
/// lifetime when it lives a minute or less (the margin would leave too little, or nothing).
pub fn usable_for(expires_in: Option<Duration>) -> Duration {
    match expires_in {
        None => UNSTATED_LIFETIME,
        Some(life) => life.saturating_sub(MARGIN).max(life / 2),
    }
}

/// Why no token could be had: the attempt's error, in words support staff understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// A token endpoint's successful answer (RFC 6749 section 5.1).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Reads a token endpoint's answer: the token and its lifetime, or what went wrong (for an
/// error answer, its RFC 6749 section 5.2 `error` code).
pub fn read_answer(status: u16, body: &[u8]) -> Result<(String, Option<Duration>), TokenError> {
    if !(200..300).contains(&status) {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .filter(|c| !c.is_empty() && c.len() <= 100 && !c.chars().any(char::is_control));
        return Err(TokenError(match code {
            Some(code) => format!("token endpoint answered {status}: {code}"),
            None => format!("token endpoint answered {status}"),
        }));
    }
    let answer: TokenResponse = serde_json::from_slice(body).map_err(|_| {
        TokenError("token endpoint's answer is not a token response (no access_token)".into())
    })?;
    if let Some(kind) = &answer.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(TokenError(format!(
                "token endpoint issued a token of type {kind:?}, not Bearer"
            )));
        }
    }
    if answer.access_token.is_empty()
        || answer
            .access_token
            .bytes()
            .any(|b| !(0x21..=0x7e).contains(&b))
    {
        return Err(TokenError(
            "token endpoint issued an empty or malformed access_token".into(),
        ));
    }
    // Some servers send the number as a string.
    let expires_in = match answer.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s >= 0.0)
    .map(|s| Duration::from_secs_f64(s.min(1e9)));
    Ok((answer.access_token, expires_in))
}

/// One connection's token as this deliverer holds it.
#[derive(Default)]
struct Held {
    token: Option<(String, Instant)>,
}

impl Held {
    fn current(&self) -> Option<String> {
        self.token
            .as_ref()
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| t.clone())
    }
}

/// One connection's token slot, locked while it is fetched.
type Slot = Arc<tokio::sync::Mutex<Held>>;

/// Connections' tokens: in memory, in Redis, or fetched.
pub struct Tokens {
    store: Store,
    /// One slot per connection and OAuth2 settings (bound: pruned of expired slots when it
    /// passes 10,000).
    held: Mutex<HashMap<(String, String), Slot>>,
}

/// What a token is for: the connection, its OAuth2 settings, the client and timeout to fetch
/// it with.
pub struct TokenRequest<'a> {
    /// The connection's workspace.
    pub workspace_id: &'a str,
    /// The connection.
    pub connection_id: &'a str,
    /// Its OAuth2 settings.
    pub oauth: &'a OAuth2,
    /// The connection's HTTP client.
    pub client: &'a reqwest::Client,
    /// The connection's timeout.
    pub timeout: Duration,
}

impl Tokens {
    /// Tokens cached in `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, conn: &str, fingerprint: &str) -> Slot {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() > 10_000 {
            held.retain(|_, slot| slot.try_lock().map_or(true, |h| h.current().is_some()));
        }
        held.entry((conn.to_string(), fingerprint.to_string()))
            .or_default()
            .clone()
    }

    /// A token to send, from memory, Redis or the endpoint. `refused`: the token the
    /// destination just answered 401 to, which is not used again.
    pub async fn token(
        &self,
        req: &TokenRequest<'_>,
        refused: Option<&str>,
    ) -> Result<String, TokenError> {
        let fp = req.oauth.fingerprint();
        let slot = self.slot(req.connection_id, &fp);
        let mut held = slot.lock().await;
        let fresh = |t: &str| refused != Some(t);
        if let Some(t) = held.current().filter(|t| fresh(t)) {
            return Ok(t);
        }
        if let Some(refused) = refused {
            held.token = None;
            if let Err(e) = self
                .store
                .drop_token(req.workspace_id, req.connection_id, &fp, refused)
                .await
            {
                tracing::warn!(error = %e, "cannot drop a refused token from Redis");
            }
        }
        if let Some((t, left)) = self.cached(req, &fp).await.filter(|(t, _)| fresh(t)) {
            held.token = Some((t.clone(), Instant::now() + left));
            return Ok(t);
        }
        // Another deliverer may be fetching it: wait for its token rather than ask for a
        // second one.
        let locked = match self
            .store
            .lock_token_fetch(req.workspace_id, req.connection_id, &fp)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the token fetch lock; fetching");
                true
            }
        };
        if !locked {
            let deadline = Instant::now() + WAIT_FOR_OTHERS.min(req.timeout);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some((t, left)) = self.cached(req, &fp).await.filter(|(t, _)| fresh(t)) {
                    held.token = Some((t.clone(), Instant::now() + left));
                    return Ok(t);
                }
            }
        }
        // The deliverer that held the lock a moment ago may have shared its token just before
        // this one took it (after this one last looked): look once more before asking for
        // another.
        let shared = if locked {
            self.cached(req, &fp).await.filter(|(t, _)| fresh(t))
        } else {
            None
        };
        if let Some((t, left)) = shared {
            held.token = Some((t.clone(), Instant::now() + left));
            let _ = self
                .store
                .unlock_token_fetch(req.workspace_id, req.connection_id, &fp)
                .await;
            return Ok(t);
        }
        let fetched = fetch(req).await;
        if let Ok((token, expires_in)) = &fetched {
            let usable = usable_for(*expires_in);
            metrics::counter!("herald_oauth_tokens_fetched_total", "outcome" => "issued")
                .increment(1);
            if !usable.is_zero() {
                held.token = Some((token.clone(), Instant::now() + usable));
                if let Err(e) = self
                    .store
                    .cache_token(req.workspace_id, req.connection_id, &fp, token, usable)
                    .await
                {
                    tracing::warn!(error = %e, "cannot share a token through Redis");
                }
            }
        } else {
            metrics::counter!("herald_oauth_tokens_fetched_total", "outcome" => "failed")
                .increment(1);
        }
        if locked {
            let _ = self
                .store
                .unlock_token_fetch(req.workspace_id, req.connection_id, &fp)
                .await;
        }
        fetched.map(|(t, _)| t)
    }

    async fn cached(&self, req: &TokenRequest<'_>, fp: &str) -> Option<(String, Duration)> {
        match self
            .store
            .cached_token(req.workspace_id, req.connection_id, fp)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shared token; fetching one");
                None
            }
        }
    }
}

/// Asks the token endpoint for a token (never follows a redirect: the client does not).
async fn fetch(req: &TokenRequest<'_>) -> Result<(String, Option<Duration>), TokenError> {
    let o = req.oauth;
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(scope) = &o.scope {
        form.push(("scope", scope));
    }
    if let Some(audience) = &o.audience {
        form.push(("audience", audience));
    }
    let mut request = req
        .client
        .post(&o.token_url)
        .timeout(req.timeout)
        .header("accept", "application/json");
    match o.client_auth {
        ClientAuth::Basic => {
            // RFC 6749 section 2.3.1: each part form-urlencoded before the Basic encoding.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let raw = format!("{}:{}", enc(&o.client_id), enc(&o.client_secret));
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            request = request.header("authorization", format!("Basic {b64}"));
        }
        ClientAuth::Post => {
            form.push(("client_id", &o.client_id));
            form.push(("client_secret", &o.client_secret));
        }
    }
    let mut response = request.form(&form).send().await.map_err(|e| {
        TokenError(format!(
            "token endpoint: {}",
            crate::dispatch::describe(&e, req.timeout)
        ))
    })?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                return Err(TokenError(format!(
                    "token endpoint: {}",
                    crate::dispatch::describe(&e, req.timeout)
                )))
            }
        }
    }
    read_answer(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_until_30_s_before_it_expires_or_half_its_life() {
        let s = Duration::from_secs;
        assert_eq!(usable_for(Some(s(3600))), s(3570));
        assert_eq!(usable_for(Some(s(5))), Duration::from_millis(2500));
        assert_eq!(usable_for(Some(s(60))), s(30));
        assert_eq!(usable_for(Some(s(100))), s(70));
        assert_eq!(usable_for(Some(s(0))), s(0));
        assert_eq!(usable_for(None), s(60));
    }

    #[test]
    fn answers_are_read_as_rfc_6749_says() {
        let ok = br#"{"access_token":"abc.def","token_type":"bearer","expires_in":5}"#;
        assert_eq!(
            read_answer(200, ok),
            Ok(("abc.def".to_string(), Some(Duration::from_secs(5))))
        );
        let as_string = br#"{"access_token":"t","expires_in":"3600"}"#;
        assert_eq!(
            read_answer(200, as_string).map(|(_, e)| e),
            Ok(Some(Duration::from_secs(3600)))
        );
        assert_eq!(
            read_answer(
                401,
                br#"{"error":"invalid_client","error_description":"x"}"#
            ),
            Err(TokenError(
                "token endpoint answered 401: invalid_client".into()
            ))
        );
        assert_eq!(
            read_answer(502, b"<html>bad gateway</html>"),
            Err(TokenError("token endpoint answered 502".into()))
        );
        assert!(read_answer(200, br#"{"access_token":"t","token_type":"mac"}"#).is_err());
        assert!(read_answer(200, br#"{"token":"t"}"#).is_err());
        assert!(read_answer(200, br#"{"access_token":"a b"}"#).is_err());
    }
}
