//! The test receiver: an HTTP server that records every request and answers per path as a test
//! tells it to (fail first, always fail, redirect, answer slowly).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::Value;

use crate::api::eventually;

/// What a receiver path does.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200.
    Ok,
    /// This status for the first n requests, then 200.
    FailFirst(usize, u16),
    /// Always this status.
    Always(u16),
    /// 302 to another path.
    RedirectTo(String),
    /// 200 after this long (a slow receiver: requests stay in flight).
    Slow(Duration),
    /// This status after this long, every time (a slow, failing receiver).
    SlowFail(Duration, u16),
    /// This status for every n-th request (the n-th, the 2n-th ...), 200 for the others.
    FailEvery(usize, u16),
    /// This status for every request whose body contains the text, 200 for the others.
    FailWhen(String, u16),
}

/// A request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// The path without its leading `/`.
    pub path: String,
    /// The HTTP method.
    pub method: String,
    /// Every header as sent.
    pub headers: HeaderMap,
    /// The body, byte for byte (signatures are over these bytes).
    pub body: Bytes,
}

#[derive(Default)]
struct Inner {
    behaviours: HashMap<String, Behaviour>,
    seen: HashMap<String, usize>,
    received: Vec<Received>,
}

/// An HTTP server that records every request and answers per path.
#[derive(Clone)]
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Starts listening on a free loopback port.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/{path}", any(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner }
    }

    /// The URL of one path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// How `path` answers from now on (200 until told otherwise).
    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.inner
            .lock()
            .expect("lock")
            .behaviours
            .insert(path.into(), behaviour);
    }

    /// Every request `path` got so far, in order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.inner
            .lock()
            .expect("lock")
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got at least `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        eventually(
            &format!("{n} requests at /{path}"),
            Duration::from_secs(30),
            || async {
                let got = self.received(path);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(path): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bytes = body.clone();
    let (n, behaviour) = {
        let mut inner = inner.lock().expect("lock");
        inner.received.push(Received {
            path: path.clone(),
            method: method.to_string(),
            headers,
            body,
        });
        let n = {
            let seen = inner.seen.entry(path.clone()).or_insert(0);
            *seen += 1;
            *seen
        };
        let behaviour = inner
            .behaviours
            .get(&path)
            .cloned()
            .unwrap_or(Behaviour::Ok);
        (n, behaviour)
    };
    match behaviour {
        Behaviour::Ok => (StatusCode::OK, "ok").into_response(),
        Behaviour::FailFirst(k, status) if n <= k => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "not yet",
        )
            .into_response(),
        Behaviour::FailFirst(..) => (StatusCode::OK, "ok now").into_response(),
        Behaviour::Always(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "broken",
        )
            .into_response(),
        Behaviour::Slow(pause) => {
            tokio::time::sleep(pause).await;
            (StatusCode::OK, "ok, slowly").into_response()
        }
        Behaviour::SlowFail(pause, status) => {
            tokio::time::sleep(pause).await;
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "broken, slowly",
            )
                .into_response()
        }
        Behaviour::FailEvery(k, status) if n % k.max(1) == 0 => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "not this one",
        )
            .into_response(),
        Behaviour::FailWhen(needle, status)
            if std::str::from_utf8(&bytes).is_ok_and(|b| b.contains(&needle)) =>
        {
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "not this one",
            )
                .into_response()
        }
        Behaviour::FailEvery(..) | Behaviour::FailWhen(..) => {
            (StatusCode::OK, "ok").into_response()
        }
        Behaviour::RedirectTo(to) => {
            (StatusCode::FOUND, [("location", format!("/{to}"))], "moved").into_response()
        }
    }
}

/// Verifies a request with the Standard Webhooks reference library and returns its body.
pub fn verify(secret: &str, r: &Received) -> Value {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("signature must verify: {e:?}"));
    serde_json::from_slice(&r.body).expect("JSON body")
}
