//! Building, signing and sending one request, and turning what happened into an [`Attempt`].
//!
//! Destination safety: the HTTP client resolves names through [`GuardedResolver`], which drops
//! every address the [`DestinationPolicy`] forbids, so the address checked is the address
//! connected to (no second lookup an attacker's DNS could answer differently). Literal IPs never
//! reach a resolver, so they are checked here before sending.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use herald_shared::model::connection::mask_header_value;
use herald_shared::model::connection::OAuth2;
use herald_shared::model::{Attempt, Auth, Connection, Event};
use herald_shared::netguard::DestinationPolicy;
use herald_shared::signing::{signatures, Signer};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::identity::{ClientConfig, Identities};
use crate::oauth::{TokenError, TokenRequest, Tokens};
use crate::outcome::{classify_status, Verdict};

/// How much of a response body is kept in the history.
pub const EXCERPT_BYTES: usize = 1024;

/// A resolver that refuses addresses the policy forbids.
pub struct GuardedResolver {
    /// The policy.
    pub policy: DestinationPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = if all.is_empty() {
                    format!("{host} did not resolve").into()
                } else {
                    format!("{host} resolves only to forbidden (private or special) addresses")
                        .into()
                };
                return Err(err);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Sends signed requests.
#[derive(Clone)]
pub struct Dispatcher {
    client: reqwest::Client,
    policy: DestinationPolicy,
    /// OAuth2 tokens, once the store is connected.
    tokens: Option<Arc<Tokens>>,
    /// Clients of connections with a client certificate (mutual TLS).
    identities: Arc<Identities>,
}

impl Dispatcher {
    /// A client that never follows redirects and resolves through the guard. Proxy variables
    /// of the environment are ignored: a proxy resolves the destination itself, past the guard.
    /// With `egress_proxy` (`HERALD_EGRESS_PROXY`) every request goes through that proxy, which
    /// must then enforce the destination policy; literal addresses are still checked here.
    pub fn new(policy: DestinationPolicy, egress_proxy: Option<String>) -> anyhow::Result<Self> {
        let config = ClientConfig {
            policy: policy.clone(),
            egress_proxy,
        };
        let client = config.builder()?.build()?;
        Ok(Self {
            client,
            policy,
            tokens: None,
            identities: Arc::new(Identities::new(config)),
        })
    }

    /// The same dispatcher, fetching and sharing OAuth2 tokens through `store`.
    pub fn with_tokens(mut self, store: herald_shared::store::Store) -> Self {
        self.tokens = Some(Arc::new(Tokens::new(store)));
        self
    }

    /// Whether `url` names a literal address the policy forbids (names are checked by the
    /// resolver, at connection time).
    fn forbidden_literal(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let ip = literal.parse::<IpAddr>().ok()?;
        (!self.policy.allows(ip))
            .then(|| format!("destination {ip} is a forbidden (private or special) address"))
    }

    /// The bearer token of an OAuth2 connection (`refused`: the one the destination just
    /// answered 401 to).
    async fn oauth_token(
        &self,
        conn: &Connection,
        oauth: &OAuth2,
        client: &reqwest::Client,
        timeout: Duration,
        refused: Option<&str>,
    ) -> Result<String, TokenError> {
        let tokens = self
            .tokens
            .as_ref()
            .ok_or_else(|| TokenError("no token store to share OAuth2 tokens through".into()))?;
        match reqwest::Url::parse(&oauth.token_url) {
            Ok(u) => {
                if let Some(e) = self.forbidden_literal(&u) {
                    return Err(TokenError(format!("token endpoint: {e}")));
                }
            }
            Err(e) => return Err(TokenError(format!("invalid token URL: {e}"))),
        }
        let req = TokenRequest {
            workspace_id: &conn.workspace_id,
            connection_id: &conn.id,
            oauth,
            client,
            timeout,
        };
        tokens.token(&req, refused).await
    }

    /// Sends the event to the connection once. Never fails: every problem is an attempt with
    /// an error.
    pub async fn send(
        &self,
        conn: &Connection,
        event: &Event,
        timeout: Duration,
    ) -> (Attempt, Verdict) {
        let sent_ms = herald_shared::now_ms();
        let started = Instant::now();
        let attempt = |headers: &BTreeMap<String, String>| Attempt {
            at: sent_ms,
            status_code: None,
            latency_ms: started.elapsed().as_millis() as u64,
            error: None,
            response_excerpt: None,
            url: conn.url.clone(),
            request_headers: headers.clone(),
        };
        let fail = |error: String, headers: &BTreeMap<String, String>| {
            (
                Attempt {
                    error: Some(error.clone()),
                    ..attempt(headers)
                },
                Verdict::Failed {
                    error,
                    retry_after: None,
                },
            )
        };
        let none = BTreeMap::new();
        let url = match reqwest::Url::parse(&conn.url) {
            Ok(u) => u,
            Err(e) => return fail(format!("invalid URL: {e}"), &none),
        };
        if let Some(e) = self.forbidden_literal(&url) {
            return fail(e, &none);
        }
        // A connection with a client certificate has a client of its own (which the token
        // endpoint is called through too).
        let own;
        let client = match &conn.tls {
            None => &self.client,
            Some(tls) => match self.identities.client(&conn.id, tls) {
                Ok(c) => {
                    own = c;
                    &own
                }
                Err(e) => return fail(e, &none),
            },
        };

        // An operational webhook's notice is the whole body; every other event is sent in its
        // envelope.
        let body = if conn.kind == herald_shared::opwebhooks::KIND {
            event.payload.get().as_bytes().to_vec()
        } else {
            event.body(sent_ms)
        };
        let timestamp = sent_ms / 1000;
        let keys: Vec<Signer> = conn
            .signing_secrets(sent_ms)
            .filter_map(|s| Signer::parse(s).ok())
            .collect();
        let signature = signatures(&keys, &event.uuid, timestamp, &body);
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            ("user-agent".into(), herald_shared::USER_AGENT.into()),
            ("webhook-id".into(), event.uuid.clone()),
            ("webhook-timestamp".into(), timestamp.to_string()),
            ("webhook-signature".into(), signature),
        ];
        headers.extend(conn.headers.iter().map(|(n, v)| (n.clone(), v.clone())));
        match &conn.auth {
            Some(Auth::Bearer { token }) => {
                headers.push(("authorization".into(), format!("Bearer {token}")));
            }
            Some(Auth::Basic { username, password }) => {
                let raw = format!("{username}:{password}");
                let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
                headers.push(("authorization".into(), format!("Basic {b64}")));
            }
            Some(Auth::OAuth2ClientCredentials(_)) | None => {}
        }
        let oauth = match &conn.auth {
            Some(Auth::OAuth2ClientCredentials(o)) => Some(o),
            _ => None,
        };
        if oauth.is_some() {
            // Shown (masked) as it is sent; the token itself is added to each request below.
            headers.push(("authorization".into(), "Bearer ".into()));
        }
        let shown: BTreeMap<String, String> = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), mask_header_value(n, v)))
            .collect();
        if oauth.is_some() {
            headers.pop();
        }
        let method = reqwest::Method::from_bytes(conn.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let body = bytes::Bytes::from(body);
        let request = |token: Option<&str>| {
            let mut request = client.request(method.clone(), url.clone()).timeout(timeout);
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            request.body(body.clone())
        };

        let mut token = None;
        if let Some(o) = oauth {
            match self.oauth_token(conn, o, client, timeout, None).await {
                Ok(t) => token = Some(t),
                Err(e) => return fail(e.0, &shown),
            }
        }
        let mut response = match request(token.as_deref()).send().await {
            Ok(r) => r,
            Err(e) => return fail(describe(&e, timeout), &shown),
        };
        // A 401 may mean the token was revoked before its time: one new token, one more try,
        // within the same attempt.
        if let (Some(o), Some(refused), 401) = (oauth, &token, response.status().as_u16()) {
            let fresh = match self
                .oauth_token(conn, o, client, timeout, Some(refused))
                .await
            {
                Ok(t) => t,
                Err(e) => return fail(format!("status 401, then {}", e.0), &shown),
            };
            metrics::counter!("herald_oauth_refreshed_after_401_total").increment(1);
            response = match request(Some(&fresh)).send().await {
                Ok(r) => r,
                Err(e) => return fail(describe(&e, timeout), &shown),
            };
        }
        let latency_ms = started.elapsed().as_millis() as u64;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Only the first bytes are read; the rest of a large body is never downloaded.
        let mut excerpt = Vec::new();
        while excerpt.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt
                    .extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - excerpt.len())]),
                _ => break,
            }
        }
        let verdict = classify_status(status, retry_after.as_deref());
        let error = match &verdict {
            Verdict::Success => None,
            Verdict::Failed { error, .. } | Verdict::Stop { error } => Some(error.clone()),
        };
        (
            Attempt {
                status_code: Some(status),
                latency_ms,
                error,
                response_excerpt: (!excerpt.is_empty())
                    .then(|| String::from_utf8_lossy(&excerpt).into_owned()),
                ..attempt(&shown)
            },
            verdict,
        )
    }
}

/// A reqwest error in words support staff understand, with its root cause.
pub(crate) fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    if e.is_timeout() {
        format!("timed out after {} ms", timeout.as_millis())
    } else if e.is_connect() {
        format!("connection failed: {root}")
    } else {
        format!("request failed: {root}")
    }
}
