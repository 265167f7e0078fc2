//! Herald's built binaries as processes of their own, so a test can SIGKILL or SIGTERM them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::helpers::{drop_redis_prefix, eventually, Api, Vhost, ADMIN};

/// Where `cargo test --workspace` put the service binaries: beside this test's `deps` folder.
/// (Each service crate has an integration test of its binary, which makes cargo build it.)
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}

/// A free port on loopback (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Sends `signal` (e.g. `-KILL`, `-TERM`) to a process.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// One running service process; killed when dropped.
pub struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, env: &[(String, String)], log: &std::path::Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(binary(name))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,lapin=warn,hyper=warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child }
    }

    /// SIGKILL: no cleanup, no drain, unacknowledged messages go back to their queue.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for the process to exit; returns how long it took.
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        signal(self.child.id(), "-TERM");
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{} exited with {status}", self.name);
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ingest, router and deliverer as processes, on their own vhost and Redis prefix.
pub struct ProcStack {
    pub api: Api,
    pub router_addr: String,
    pub deliverer_addr: String,
    pub logs: PathBuf,
    env: Vec<(String, String)>,
    prefix: String,
    pub ingest: Option<Proc>,
    pub router: Option<Proc>,
    pub deliverer: Option<Proc>,
    _vhost: Vhost,
}

impl ProcStack {
    /// Starts the three services; `extra` settings override the test defaults.
    pub async fn start(test: &str, extra: &[(&str, &str)]) -> Self {
        let vhost = Vhost::new();
        let prefix = format!("herald-test-{}", herald_shared::ids::random_base62(10));
        let ingest_addr = format!("127.0.0.1:{}", free_port());
        let router_addr = format!("127.0.0.1:{}", free_port());
        let deliverer_addr = format!("127.0.0.1:{}", free_port());
        let mut env: Vec<(String, String)> = [
            (
                "HERALD_AMQP_URL",
                format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.0),
            ),
            ("HERALD_REDIS_URL", "redis://127.0.0.1:6379".into()),
            ("HERALD_REDIS_PREFIX", prefix.clone()),
            ("HERALD_INGEST_ADDR", ingest_addr.clone()),
            ("HERALD_ROUTER_ADDR", router_addr.clone()),
            ("HERALD_DELIVERER_ADDR", deliverer_addr.clone()),
            ("HERALD_ADMIN_TOKEN", ADMIN.into()),
            ("HERALD_ALLOW_HTTP", "true".into()),
            ("HERALD_ALLOW_PRIVATE_DESTINATIONS", "true".into()),
            ("HERALD_CONFIG_REFRESH", "100ms".into()),
            ("HERALD_DRAIN_TIMEOUT", "10s".into()),
            ("HERALD_RETRY_SCHEDULE", "1s,1s,2s,2s,4s,4s,8s,8s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let logs = binary("herald-ingest")
            .parent()
            .expect("target dir")
            .join("fault-logs")
            .join(test);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("log dir");
        let mut stack = Self {
            api: Api::new(format!("http://{ingest_addr}")),
            router_addr,
            deliverer_addr,
            logs,
            env,
            prefix,
            ingest: None,
            router: None,
            deliverer: None,
            _vhost: vhost,
        };
        stack.start_ingest();
        stack.start_router();
        stack.start_deliverer();
        stack.api.wait_ready().await;
        for addr in [&stack.router_addr, &stack.deliverer_addr] {
            wait_status(&stack.api.http, &format!("http://{addr}/readyz"), 200).await;
        }
        stack
    }

    /// The broker URL of the stack's own vhost.
    pub fn amqp_url(&self) -> String {
        self.setting("HERALD_AMQP_URL")
    }

    fn setting(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn spawn(&self, name: &'static str) -> Proc {
        Proc::spawn(name, &self.env, &self.logs.join(format!("{name}.log")))
    }

    pub fn start_ingest(&mut self) {
        self.ingest = Some(self.spawn("herald-ingest"));
    }

    pub fn start_router(&mut self) {
        self.router = Some(self.spawn("herald-router"));
    }

    pub fn start_deliverer(&mut self) {
        self.deliverer = Some(self.spawn("herald-deliverer"));
    }

    /// Stops every process and removes the test's Redis keys (the vhost goes on drop).
    pub async fn stop(mut self) {
        for p in [
            self.deliverer.take(),
            self.router.take(),
            self.ingest.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut p = p;
            p.terminate(Duration::from_secs(15));
        }
        drop_redis_prefix(&self.setting("HERALD_REDIS_URL"), &self.prefix).await;
    }
}

impl std::ops::Deref for ProcStack {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Waits until `url` answers `status`.
pub async fn wait_status(http: &reqwest::Client, url: &str, status: u16) {
    eventually(
        &format!("{url} answering {status}"),
        Duration::from_secs(30),
        || async {
            let r = http
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            (r.status().as_u16() == status).then_some(())
        },
    )
    .await;
}
