//! A test OAuth 2.0 authorization server and the endpoint it protects, on one loopback port:
//! `POST /token` issues client-credentials tokens (HTTP Basic or form credentials) and counts
//! them; `POST /hook/{path}` answers 200 to a request bearing a token it issued and has not
//! revoked, else 401, and records what arrived.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;

use crate::receiver::Received;

/// The client id the server knows.
pub const CLIENT_ID: &str = "herald-client";
/// The client secret the server knows.
pub const CLIENT_SECRET: &str = "s3cret/with:odd chars";

#[derive(Default)]
struct Inner {
    issued: HashSet<String>,
    revoked: HashSet<String>,
    /// Every token request's form body and whether it came with Basic credentials.
    token_requests: Vec<(String, bool)>,
    received: Vec<Received>,
    /// Answer every token request with this status and `error` code.
    failing: Option<(u16, String)>,
}

/// The authorization server and its protected endpoint.
#[derive(Clone)]
pub struct TokenServer {
    /// Where it listens.
    pub addr: SocketAddr,
    expires_in: f64,
    issued: Arc<AtomicU64>,
    inner: Arc<Mutex<Inner>>,
}

impl TokenServer {
    /// Starts on a free loopback port; its tokens say they expire in `expires_in` seconds.
    pub async fn start(expires_in: f64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Self {
            addr: listener.local_addr().expect("addr"),
            expires_in,
            issued: Arc::new(AtomicU64::new(0)),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = Router::new()
            .route("/token", post(token))
            .route("/hook/{path}", post(hook))
            .with_state(server.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        server
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The protected endpoint's URL for `path`.
    pub fn hook_url(&self, path: &str) -> String {
        format!("http://{}/hook/{path}", self.addr)
    }

    /// How many tokens were issued so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }

    /// Every token request so far: its form body, and whether it used HTTP Basic.
    pub fn token_requests(&self) -> Vec<(String, bool)> {
        self.lock().token_requests.clone()
    }

    /// Revokes every token issued so far (the endpoint answers 401 to them).
    pub fn revoke_all(&self) {
        let mut inner = self.lock();
        let issued: Vec<String> = inner.issued.iter().cloned().collect();
        inner.revoked.extend(issued);
    }

    /// Token requests are answered with this status and `error` code (`None`: issue again).
    pub fn set_failing(&self, failing: Option<(u16, &str)>) {
        self.lock().failing = failing.map(|(s, e)| (s, e.to_string()));
    }

    /// Every request `path` got, in order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn form_value(form: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn token(State(s): State<TokenServer>, headers: HeaderMap, body: Bytes) -> Response {
    let form = String::from_utf8_lossy(&body).into_owned();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|raw| {
            // RFC 6749 section 2.3.1: each part is form-urlencoded.
            let (id, secret) = raw.split_once(':')?;
            let dec = |s: &str| {
                form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((dec(id)?, dec(secret)?))
        });
    let failing = {
        let mut inner = s.lock();
        inner.token_requests.push((form.clone(), basic.is_some()));
        inner.failing.clone()
    };
    if let Some((status, error)) = failing {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return (status, Json(json!({"error": error}))).into_response();
    }
    let credentials = basic.or_else(|| {
        Some((
            form_value(&form, "client_id")?,
            form_value(&form, "client_secret")?,
        ))
    });
    let grant = form_value(&form, "grant_type");
    if grant.as_deref() != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if credentials != Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string())) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "unknown client"})),
        )
            .into_response();
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("tok-{n}-{}", herald_shared::ids::random_base62(16));
    s.lock().issued.insert(token.clone());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": s.expires_in}))
        .into_response()
}

async fn hook(
    State(s): State<TokenServer>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let mut inner = s.lock();
    inner.received.push(Received {
        path,
        method: "POST".into(),
        headers,
        body,
    });
    match bearer {
        Some(t) if inner.issued.contains(&t) && !inner.revoked.contains(&t) => StatusCode::OK,
        _ => StatusCode::UNAUTHORIZED,
    }
}
