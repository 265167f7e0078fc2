//! Herald's HTTP API as a client sees it, with the calls a test arranges its world with.

use std::time::Duration;

use serde_json::{json, Value};

use crate::receiver::Receiver;

/// The operator token every test stack accepts.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// Herald's HTTP API, as a client sees it.
pub struct Api {
    /// Base URL of ingest, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The client every call goes through.
    pub http: reqwest::Client,
}

/// A workspace whose every connection points at a receiver path, with a rule for all events.
pub struct Wired {
    /// The workspace id.
    pub workspace: String,
    /// Its secret key.
    pub sk: String,
    /// Its publishable key.
    pub pk: String,
    /// One (id, signing secret) per receiver path, in the order given.
    pub connections: Vec<(String, String)>,
}

impl Api {
    /// A client of the API at `url`.
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

    /// A new workspace with one connection per path of `receiver`, each with a rule taking
    /// every event; returns once the services have seen the rules.
    pub async fn wired(&self, receiver: &Receiver, paths: &[&str]) -> Wired {
        let (workspace, sk, pk) = self.workspace().await;
        let mut connections = Vec::new();
        for path in paths {
            let (id, secret) = self.connection(&sk, &receiver.url(path), json!({})).await;
            self.rule(&sk, "*", "*", &id).await;
            connections.push((id, secret));
        }
        // The services see configuration changes within their refresh interval (100 ms in
        // tests); this covers it even for processes on a busy machine.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Wired {
            workspace,
            sk,
            pk,
            connections,
        }
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

    /// Sends `events` (envelopes) in one bulk request, which must be accepted whole; returns
    /// the answer's body.
    pub async fn send_bulk(&self, key: &str, events: Vec<Value>) -> Value {
        let (status, body) = self
            .call(
                "POST",
                "/v1/events/bulk",
                key,
                Some(json!({ "events": events })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body
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
