//! The receiving end: an HTTP server on loopback that verifies every request's Standard
//! Webhooks signature with the reference library (one HMAC-SHA256 of a few hundred bytes, a few
//! microseconds), records when each `webhook-id` first arrived, counts duplicates and failures,
//! and optionally takes a fixed time per request like a slow destination.
//!
//! Connection `i` of a run posts to `/hook/{i}` (the first to `/hook`), so one event delivered
//! to several connections counts once per connection. The receiver can answer `500` to the
//! first K attempts of each delivery (`--fail-first`), or to every request while
//! [`Receiver::set_failing`] holds, to make retries and dead letters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// What the receiver has seen so far.
pub struct Receiver {
    clock: Instant,
    delay: Duration,
    fail_first: u32,
    failing: AtomicBool,
    webhook: std::sync::OnceLock<standardwebhooks::Webhook>,
    /// First successful arrival of each delivery (webhook-id, prefixed with the connection's
    /// number after the first), microseconds on the run's clock.
    first: Mutex<HashMap<String, u64>>,
    /// Attempts answered 500 so far, per delivery, while --fail-first is on.
    refused_attempts: Mutex<HashMap<String, u32>>,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests whose webhook-id had arrived before.
    pub duplicates: AtomicU64,
    /// Requests that did not verify (answered 401).
    pub failures: AtomicU64,
    /// Requests answered 500 on purpose (--fail-first, or while failing).
    pub refused: AtomicU64,
    in_flight: AtomicU64,
    /// Most requests in flight at once.
    pub max_in_flight: AtomicU64,
    /// Requests without `Authorization: Bearer` are refused (answered 401, counted as
    /// failures): the OAuth2 runs.
    require_bearer: bool,
    /// The URL to configure as the destination.
    pub url: String,
    /// Whether each key's events are checked to arrive in order (the ordered scenario).
    check_order: AtomicBool,
    /// Per key, the number of the next event expected.
    next_seq: Mutex<HashMap<String, u64>>,
    /// Arrivals that were neither the next event of their key nor the last one again.
    pub out_of_order: AtomicU64,
}

struct InFlight<'a>(&'a Receiver);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Receiver {
    /// Starts the server on a free loopback port. `clock` is the run's time origin; each
    /// delivery's first `fail_first` attempts are answered 500.
    /// With `tls` it serves HTTPS (mutual TLS runs) at `https://localhost:<port>/hook`.
    pub async fn start(
        clock: Instant,
        delay: Duration,
        fail_first: u32,
        tls: Option<Arc<rustls::ServerConfig>>,
        require_bearer: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let receiver = Arc::new(Self {
            clock,
            delay,
            fail_first,
            failing: AtomicBool::new(false),
            webhook: std::sync::OnceLock::new(),
            first: Mutex::new(HashMap::with_capacity(1 << 20)),
            refused_attempts: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            require_bearer,
            check_order: AtomicBool::new(false),
            next_seq: Mutex::new(HashMap::new()),
            out_of_order: AtomicU64::new(0),
            url: match tls {
                Some(_) => format!("https://localhost:{}/hook", addr.port()),
                None => format!("http://{addr}/hook"),
            },
        });
        let app = Router::new()
            .route("/hook", post(receive_first))
            .route("/hook/{connection}", post(receive))
            .with_state(receiver.clone());
        match tls {
            Some(config) => herald_e2e::tls::serve_tls(listener, config, app),
            None => {
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        eprintln!("receiver stopped: {e}");
                    }
                });
            }
        }
        Ok(receiver)
    }

    /// Sets the connection's signing secret once it is known (before any event is sent).
    pub fn set_secret(&self, secret: &str) -> anyhow::Result<()> {
        let wh = standardwebhooks::Webhook::new(secret)
            .map_err(|e| anyhow::anyhow!("the connection's secret does not parse: {e:?}"))?;
        let _ = self.webhook.set(wh);
        Ok(())
    }

    /// The URL connection `i` (from 0) of the run posts to.
    pub fn url_of(&self, i: usize) -> String {
        if i == 0 {
            self.url.clone()
        } else {
            format!("{}/{i}", self.url)
        }
    }

    /// Answers 500 to every request while `on` (dead letters for the replay scenario).
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::Relaxed);
    }

    /// From now on each key's events (`{"key", "seq"}` payloads) are checked to arrive in
    /// order, counting those that do not in [`Receiver::out_of_order`].
    pub fn check_order(&self) {
        self.check_order.store(true, Ordering::Relaxed);
    }

    /// Notes an arrival of the ordered scenario: the next of its key, or its last again (a
    /// head sent twice), or out of order.
    fn note_order(&self, body: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Tagged {
            key: String,
            seq: u64,
        }
        #[derive(serde::Deserialize)]
        struct Envelope {
            payload: Tagged,
        }
        let Ok(e) = serde_json::from_slice::<Envelope>(body) else {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut next = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let expected = next.entry(e.payload.key).or_insert(0);
        if e.payload.seq == *expected {
            *expected += 1;
        } else if e.payload.seq + 1 != *expected {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Distinct deliveries received with a 2xx answer.
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
            &self.refused,
            &self.max_in_flight,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Whether this attempt of delivery `key` is one of its first --fail-first (and notes it).
    fn refuse_attempt(&self, key: &str) -> bool {
        if self.fail_first == 0 {
            return false;
        }
        let mut refused = self
            .refused_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = refused.entry(key.to_string()).or_insert(0);
        if *n < self.fail_first {
            *n += 1;
            true
        } else {
            // Its attempts are over: the delivery is let through and forgotten here.
            refused.remove(key);
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.first.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn receive_first(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    receive(State(r), Path(0), headers, body).await
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    Path(connection): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = r.clock.elapsed().as_micros() as u64;
    let now = r.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = InFlight(&r);
    r.max_in_flight.fetch_max(now, Ordering::Relaxed);
    r.requests.fetch_add(1, Ordering::Relaxed);
    let bearer_ok = !r.require_bearer
        || headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    let verified = bearer_ok
        && r.webhook
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
    let key = if connection == 0 {
        id.to_string()
    } else {
        format!("{connection}/{id}")
    };
    if r.failing.load(Ordering::Relaxed) || r.refuse_attempt(&key) {
        r.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if r.check_order.load(Ordering::Relaxed) {
        r.note_order(&body);
    }
    let seen_before = match r.lock().entry(key) {
        std::collections::hash_map::Entry::Occupied(_) => true,
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(at);
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
