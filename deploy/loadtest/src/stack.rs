//! The run's own Herald installation, from `herald-e2e`: a fresh vhost and Redis prefix (both
//! removed when dropped, also on error or Ctrl-C), the built `herald-*` binaries as child
//! processes; and here, a workspace with one connection and one rule pointing at the receiver.

use anyhow::{bail, Context};
use herald_e2e::procs::{Launch, DELIVERER};
use herald_e2e::{Processes, RedisPrefix, Vhost};
use serde_json::{json, Value};

use crate::procstat::Watched;

/// The running services.
pub type Stack = Processes;

/// The operator token the run's ingest accepts.
pub const ADMIN_TOKEN: &str = "herald-load-admin-token-0123456789";

/// A short random name part (no extra dependency: the clock and the pid are unique enough).
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), nanos % 0xffff_ffff)
}

/// Starts ingest, a router and `deliverers` deliverers (none and none with `intake_only`) in
/// `vhost` and `redis`, and waits until each answers `/readyz`.
pub async fn start(
    launch: Launch,
    vhost: Vhost,
    redis: RedisPrefix,
    deliverers: usize,
    intake_only: bool,
) -> anyhow::Result<Stack> {
    let (routers, deliverers) = if intake_only { (0, 0) } else { (1, deliverers) };
    Processes::start(launch, vhost, redis, routers, deliverers)
        .await
        .context("starting the services (`cargo build --release` first, or pass --bin-dir)")
}

/// The processes to watch, with the service labels.
pub fn watched(stack: &Stack) -> Vec<Watched> {
    stack
        .procs()
        .iter()
        .map(|p| Watched {
            name: p.label.clone(),
            pid: p.pid(),
            ours: true,
        })
        .collect()
}

/// The process ids of the deliverers.
pub fn deliverer_pids(stack: &Stack) -> Vec<u32> {
    stack
        .procs()
        .iter()
        .filter(|p| p.binary == DELIVERER)
        .map(|p| p.pid())
        .collect()
}

async fn call(stack: &Stack, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
    let resp = stack
        .http
        .post(format!("{}{path}", stack.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("POST {path}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// The run's workspace as configured.
pub struct Configured {
    /// The key events are sent with.
    pub publishable_key: String,
    /// The key that reads history and dead letters and replays them.
    pub secret_key: String,
    /// The signing secret every connection shares (so one receiver verifies them all).
    pub signing_secret: String,
}

/// Creates a workspace, one connection per URL in `urls` (all with the first one's signing
/// secret and the fields of `extra`: auth, tls) and for each a rule for `load.*`.
pub async fn configure(
    stack: &Stack,
    urls: &[String],
    timeout_ms: u64,
    extra: &Value,
) -> anyhow::Result<Configured> {
    let ws = call(
        stack,
        "/v1/workspaces",
        ADMIN_TOKEN,
        json!({"name": "herald-load"}),
    )
    .await?;
    let sk = str_field(&ws, "secret_key")?;
    let pk = str_field(&ws, "publishable_key")?;
    let mut signing_secret: Option<String> = None;
    for (i, url) in urls.iter().enumerate() {
        let mut body =
            json!({"name": format!("load receiver {i}"), "url": url, "timeout_ms": timeout_ms});
        if let Some(secret) = &signing_secret {
            body["secret"] = json!(secret);
        }
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let con = call(stack, "/v1/connections", &sk, body).await?;
        if signing_secret.is_none() {
            signing_secret = Some(str_field(&con, "secret")?);
        }
        let con_id = str_field(&con, "id")?;
        call(
            stack,
            "/v1/rules",
            &sk,
            json!({"event": "load.*", "resource": "order", "connection_id": con_id, "action": "send_webhook"}),
        )
        .await?;
    }
    Ok(Configured {
        publishable_key: pk,
        secret_key: sk,
        signing_secret: signing_secret.context("no connection to configure")?,
    })
}

fn str_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no {name:?} in {v}"))
}
