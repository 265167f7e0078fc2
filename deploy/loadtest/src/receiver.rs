//! The receiving end: an HTTP server on loopback that verifies every request's Standard
//! Webhooks signature with the reference library (one HMAC-SHA256 of a few hundred bytes, a few
//! microseconds), records when each `webhook-id` first arrived, counts duplicates and failures,
//! and optionally takes a fixed time per request like a slow destination.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// What the receiver has seen so far.
pub struct Receiver {
    clock: Instant,
    delay: Duration,
    webhook: std::sync::OnceLock<standardwebhooks::Webhook>,
    /// First arrival of each webhook-id, microseconds on the run's clock.
    first: Mutex<HashMap<String, u64>>,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests whose webhook-id had arrived before.
    pub duplicates: AtomicU64,
    /// Requests that did not verify (answered 401).
    pub failures: AtomicU64,
    in_flight: AtomicU64,
    /// Most requests in flight at once.
    pub max_in_flight: AtomicU64,
    /// The URL to configure as the destination.
    pub url: String,
}

struct InFlight<'a>(&'a Receiver);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Receiver {
    /// Starts the server on a free loopback port. `clock` is the run's time origin.
    pub async fn start(clock: Instant, delay: Duration) -> anyhow::Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let receiver = Arc::new(Self {
            clock,
            delay,
            webhook: std::sync::OnceLock::new(),
            first: Mutex::new(HashMap::with_capacity(1 << 20)),
            requests: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            url: format!("http://{addr}/hook"),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("receiver stopped: {e}");
            }
        });
        Ok(receiver)
    }

    /// Sets the connection's signing secret once it is known (before any event is sent).
    pub fn set_secret(&self, secret: &str) -> anyhow::Result<()> {
        let wh = standardwebhooks::Webhook::new(secret)
            .map_err(|e| anyhow::anyhow!("the connection's secret does not parse: {e:?}"))?;
        let _ = self.webhook.set(wh);
        Ok(())
    }

    /// Distinct webhook-ids received.
    pub fn unique(&self) -> usize {
        self.lock().len()
    }

    /// Takes the arrival times recorded so far (and starts afresh).
    pub fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.lock())
    }

    /// Zeroes the counters (between phases of one scenario).
    pub fn reset(&self) {
        self.take();
        for c in [
            &self.requests,
            &self.duplicates,
            &self.failures,
            &self.max_in_flight,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.first.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = r.clock.elapsed().as_micros() as u64;
    let now = r.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = InFlight(&r);
    r.max_in_flight.fetch_max(now, Ordering::Relaxed);
    r.requests.fetch_add(1, Ordering::Relaxed);
    let verified = r
        .webhook
        .get()
        .is_some_and(|wh| wh.verify(&body, &headers).is_ok());
    if !verified {
        r.failures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let seen_before = {
        let mut first = r.lock();
        if first.contains_key(id) {
            true
        } else {
            first.insert(id.to_string(), at);
            false
        }
    };
    if seen_before {
        r.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    StatusCode::OK
}
