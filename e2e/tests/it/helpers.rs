//! A whole Herald stack per test, and a receiver that records what arrives.

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
use herald_shared::config::{DelivererSettings, IngestSettings, RouterSettings, Source};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "test-admin-token-0123456789";

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vhost of its own, deleted on drop (even when the test fails).
pub struct Vhost(pub String);

impl Vhost {
    pub fn new() -> Self {
        let name = format!("herald-test-{}", herald_shared::ids::random_base62(10));
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self(name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

/// One running service and its own stop switch.
struct Service {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(40), self.task).await;
    }
}

/// Ingest, router and deliverer on port 0 in their own vhost and Redis prefix.
pub struct Stack {
    api: Api,
    pub prefix: String,
    source: Source,
    ingest: Option<Service>,
    router: Option<Service>,
    deliverer: Option<Service>,
    /// More replicas started by a test.
    replicas: Vec<Service>,
    _vhost: Vhost,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a stack with extra settings (e.g. `HERALD_RETRY_SCHEDULE`).
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        let vhost = Vhost::new();
        let prefix = format!("herald-test-{}", herald_shared::ids::random_base62(10));
        let mut pairs: Vec<(String, String)> = vec![
            (
                "HERALD_AMQP_URL".into(),
                format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.0),
            ),
            ("HERALD_REDIS_PREFIX".into(), prefix.clone()),
            ("HERALD_INGEST_ADDR".into(), "127.0.0.1:0".into()),
            ("HERALD_ROUTER_ADDR".into(), "127.0.0.1:0".into()),
            ("HERALD_DELIVERER_ADDR".into(), "127.0.0.1:0".into()),
            ("HERALD_ADMIN_TOKEN".into(), ADMIN.into()),
            ("HERALD_ALLOW_HTTP".into(), "true".into()),
            ("HERALD_ALLOW_PRIVATE_DESTINATIONS".into(), "true".into()),
            ("HERALD_CONFIG_REFRESH".into(), "100ms".into()),
            ("HERALD_DRAIN_TIMEOUT".into(), "5s".into()),
        ];
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k.to_string(), v.to_string()));
        }
        let source = Source::from_pairs(pairs);
        let mut stack = Self {
            api: Api::new(String::new()),
            prefix,
            source,
            ingest: None,
            router: None,
            deliverer: None,
            replicas: Vec::new(),
            _vhost: vhost,
        };
        stack.start_ingest().await;
        stack.start_router().await;
        stack.start_deliverer().await;
        stack.wait_ready().await;
        stack
    }

    /// The settings this stack's services read (to start another replica beside them).
    pub fn source(&self) -> &Source {
        &self.source
    }

    async fn start_ingest(&mut self) {
        let settings = IngestSettings::from_source(&self.source).expect("settings");
        let cancel = CancellationToken::new();
        let running = herald_ingest::start(settings, cancel.clone())
            .await
            .expect("ingest starts");
        self.api = Api::new(format!("http://{}", running.addr));
        let task = tokio::spawn(async move {
            let _ = running.wait().await;
        });
        self.ingest = Some(Service { cancel, task });
    }

    pub async fn start_router(&mut self) {
        self.router = Some(self.router_service().await);
    }

    /// Starts one more router beside the first (replicas share the events queue).
    pub async fn add_router(&mut self) {
        let r = self.router_service().await;
        self.replicas.push(r);
    }

    async fn router_service(&self) -> Service {
        let settings = RouterSettings::from_source(&self.source).expect("settings");
        let cancel = CancellationToken::new();
        let running = herald_router::start(settings, cancel.clone())
            .await
            .expect("router starts");
        let task = tokio::spawn(async move {
            let _ = running.wait().await;
        });
        Service { cancel, task }
    }

    /// The broker URL of the stack's own vhost.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self._vhost.0)
    }

    pub async fn start_deliverer(&mut self) {
        let settings = DelivererSettings::from_source(&self.source).expect("settings");
        let cancel = CancellationToken::new();
        let running = herald_deliverer::start(settings, cancel.clone())
            .await
            .expect("deliverer starts");
        let task = tokio::spawn(async move {
            let _ = running.wait().await;
        });
        self.deliverer = Some(Service { cancel, task });
    }

    /// Stops the deliverer (as a rolling restart would).
    pub async fn stop_deliverer(&mut self) {
        if let Some(d) = self.deliverer.take() {
            d.stop().await;
        }
    }

    async fn wait_ready(&self) {
        self.api.wait_ready().await;
    }

    pub async fn stop(mut self) {
        for s in [
            self.deliverer.take(),
            self.router.take(),
            self.ingest.take(),
        ]
        .into_iter()
        .flatten()
        .chain(self.replicas.drain(..))
        {
            s.stop().await;
        }
        drop_redis_prefix("redis://127.0.0.1:6379", &self.prefix).await;
    }
}

impl std::ops::Deref for Stack {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Deletes every Redis key under `prefix` (a test's own namespace).
pub async fn drop_redis_prefix(url: &str, prefix: &str) {
    if let Ok(client) = redis::Client::open(url) {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut c).await;
            }
        }
    }
}

/// Herald's HTTP API, as a client sees it.
pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(url: String) -> Self {
        Self {
            url,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually("ingest ready", Duration::from_secs(30), || async {
            let r = self
                .http
                .get(format!("{}/readyz", self.url))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// A call to the API with a bearer token.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates a workspace; returns (id, secret key, publishable key).
    pub async fn workspace(&self) -> (String, String, String) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/workspaces",
                ADMIN,
                Some(json!({"name": "acme"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().expect("id").into(),
            body["secret_key"].as_str().expect("sk").into(),
            body["publishable_key"].as_str().expect("pk").into(),
        )
    }

    /// Creates a connection; returns (id, secret).
    pub async fn connection(&self, sk: &str, url: &str, extra: Value) -> (String, String) {
        let mut body = json!({"name": "receiver", "url": url});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, body) = self.call("POST", "/v1/connections", sk, Some(body)).await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().expect("id").into(),
            body["secret"].as_str().expect("secret").into(),
        )
    }

    /// Creates a rule; returns its id.
    pub async fn rule(&self, sk: &str, event: &str, resource: &str, connection_id: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/v1/rules",
                sk,
                Some(json!({"event": event, "resource": resource, "connection_id": connection_id, "action": "send_webhook"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").into()
    }

    /// Sends one event; returns its uuid.
    pub async fn send(&self, key: &str, event: &str, resource: &str, payload: Value) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/v1/events",
                key,
                Some(json!({"event": event, "resource": resource, "resource_id": "r_1", "payload": payload})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["uuid"].as_str().expect("uuid").into()
    }

    /// Waits until the event's history satisfies `check`, and returns it.
    pub async fn event_when(
        &self,
        sk: &str,
        uuid: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, Duration::from_secs(30), || async {
            let (status, body) = self
                .call("GET", &format!("/v1/events/{uuid}"), sk, None)
                .await;
            (status == 200 && check(&body)).then_some(body)
        })
        .await
    }
}

/// Polls `probe` until it yields, or fails the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
    #[allow(dead_code)] // used by the fault tests, which share these helpers
    Slow(Duration),
}

/// A request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub method: String,
    pub headers: HeaderMap,
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
pub struct TestReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl TestReceiver {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.inner
            .lock()
            .expect("lock")
            .behaviours
            .insert(path.into(), behaviour);
    }

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
