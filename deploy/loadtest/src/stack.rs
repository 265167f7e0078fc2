//! A Herald installation of the run's own: a fresh vhost and Redis prefix (both removed when
//! dropped, also on error or Ctrl-C), the built `herald-*` binaries as child processes, and a
//! workspace with one connection and one rule pointing at the receiver.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::procstat::Watched;

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

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl (is RabbitMQ installed on this machine?)")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A vhost of the run's own, deleted on drop.
pub struct Vhost {
    /// Its name.
    pub name: String,
}

impl Vhost {
    /// Adds the vhost and gives `guest` every permission on it.
    pub fn create(name: String) -> anyhow::Result<Self> {
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }

    /// The broker URL of this vhost.
    pub fn amqp_url(&self, base: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("warning: could not delete vhost {}: {e:#}", self.name);
        }
    }
}

/// A Redis key prefix of the run's own; every key under it is deleted on drop.
pub struct RedisPrefix {
    /// Redis URL.
    pub url: String,
    /// The prefix (keys are `<prefix>:...`).
    pub prefix: String,
}

impl RedisPrefix {
    /// Deletes every key under the prefix; returns how many.
    pub fn clear(&self) -> anyhow::Result<usize> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(5))?;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut c)?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for chunk in keys.chunks(1000) {
            redis::cmd("UNLINK").arg(chunk).query::<()>(&mut c)?;
        }
        Ok(keys.len())
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!(
                "warning: could not delete Redis keys {}:*: {e:#}",
                self.prefix
            );
        }
    }
}

/// A free port on loopback (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One service process; stopped (SIGTERM, then SIGKILL after 5 s) on drop.
pub struct Service {
    /// Its label, e.g. `herald-deliverer#2`.
    pub label: String,
    /// Its health address (router, deliverer) or API address (ingest).
    pub addr: String,
    child: Child,
}

impl Service {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start the services.
pub struct Launch {
    /// Folder holding `herald-ingest`, `herald-router`, `herald-deliverer`.
    pub bin_dir: PathBuf,
    /// Where each service's output goes (`<label>.log`).
    pub log_dir: PathBuf,
    /// `HERALD_*` (and `RUST_LOG`) settings given to every service.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// Checks the binaries exist, with a hint when they do not.
    pub fn check(&self) -> anyhow::Result<()> {
        for name in ["herald-ingest", "herald-router", "herald-deliverer"] {
            let path = self.bin_dir.join(name);
            if !path.exists() {
                bail!(
                    "{} is missing: run `cargo build --release` first (or pass --bin-dir)",
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("creating {}", self.log_dir.display()))?;
        Ok(())
    }

    fn spawn(&self, binary: &str, label: &str, extra: &[(&str, String)]) -> anyhow::Result<Child> {
        let log = self.log_dir.join(format!("{label}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        Command::new(self.bin_dir.join(binary))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {binary}"))
    }
}

/// The running services.
pub struct Stack {
    launch: Launch,
    /// Base URL of ingest's API.
    pub api_url: String,
    /// Every service process, ingest first.
    pub services: Vec<Service>,
    http: reqwest::Client,
}

impl Stack {
    /// Starts ingest, a router and `deliverers` deliverers (none and none with `intake_only`),
    /// and waits until each answers `/readyz`.
    pub async fn start(
        launch: Launch,
        deliverers: usize,
        intake_only: bool,
    ) -> anyhow::Result<Self> {
        launch.check()?;
        let ingest_addr = format!("127.0.0.1:{}", free_port()?);
        let child = launch.spawn(
            "herald-ingest",
            "herald-ingest",
            &[("HERALD_INGEST_ADDR", ingest_addr.clone())],
        )?;
        let mut stack = Self {
            launch,
            api_url: format!("http://{ingest_addr}"),
            services: vec![Service {
                label: "herald-ingest".into(),
                addr: ingest_addr,
                child,
            }],
            http: reqwest::Client::new(),
        };
        if !intake_only {
            stack.add("herald-router", "HERALD_ROUTER_ADDR").await?;
            stack.add_deliverers(deliverers).await?;
        }
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// Starts `n` more deliverers and waits until they are ready.
    pub async fn add_deliverers(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.add("herald-deliverer", "HERALD_DELIVERER_ADDR")
                .await?;
        }
        self.wait_ready().await
    }

    async fn add(&mut self, binary: &str, addr_var: &'static str) -> anyhow::Result<()> {
        let same = self
            .services
            .iter()
            .filter(|s| s.label.starts_with(binary))
            .count();
        let label = if binary == "herald-deliverer" {
            format!("{binary}#{}", same + 1)
        } else {
            binary.to_string()
        };
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = self
            .launch
            .spawn(binary, &label, &[(addr_var, addr.clone())])?;
        self.services.push(Service { label, addr, child });
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for i in 0..self.services.len() {
            loop {
                let s = &mut self.services[i];
                if let Some(status) = s.exited() {
                    bail!(
                        "{} exited with {status} while starting; see {}",
                        s.label,
                        self.launch
                            .log_dir
                            .join(format!("{}.log", s.label))
                            .display()
                    );
                }
                let ok = self
                    .http
                    .get(format!("http://{}/readyz", s.addr))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ok {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("{} did not become ready within 30 s", s.label);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Fails if a service died during the run.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for s in &mut self.services {
            if let Some(status) = s.exited() {
                bail!("{} exited during the run with {status}", s.label);
            }
        }
        Ok(())
    }

    /// The processes to watch, with the service labels.
    pub fn watched(&self) -> Vec<Watched> {
        self.services
            .iter()
            .map(|s| Watched {
                name: s.label.clone(),
                pid: s.pid(),
                ours: true,
            })
            .collect()
    }

    /// Where the logs are.
    pub fn log_dir(&self) -> &Path {
        &self.launch.log_dir
    }

    async fn call(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.api_url))
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

    /// Creates a workspace, a connection to `url` and a rule for `load.*`; returns the
    /// publishable key and the connection's signing secret.
    pub async fn configure(&self, url: &str, timeout_ms: u64) -> anyhow::Result<(String, String)> {
        let ws = self
            .call(
                "/v1/workspaces",
                ADMIN_TOKEN,
                json!({"name": "herald-load"}),
            )
            .await?;
        let sk = str_field(&ws, "secret_key")?;
        let pk = str_field(&ws, "publishable_key")?;
        let con = self
            .call(
                "/v1/connections",
                &sk,
                json!({"name": "load receiver", "url": url, "timeout_ms": timeout_ms}),
            )
            .await?;
        let secret = str_field(&con, "secret")?;
        let con_id = str_field(&con, "id")?;
        self.call(
            "/v1/rules",
            &sk,
            json!({"event": "load.*", "resource": "order", "connection_id": con_id, "action": "send_webhook"}),
        )
        .await?;
        Ok((pk, secret))
    }
}

fn str_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no {name:?} in {v}"))
}
