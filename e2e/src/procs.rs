//! Herald's built binaries as processes of their own, so that a test can SIGKILL or SIGTERM
//! them and the load tool can measure them: spawned with their settings, each logging to
//! `<label>.log`, waited for until ready, and stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::api::{eventually, Api};
use crate::prefix::{RedisPrefix, REDIS_URL};
use crate::settings::{self, Settings};
use crate::vhost::Vhost;

/// The intake service's binary.
pub const INGEST: &str = "herald-ingest";
/// The router's binary.
pub const ROUTER: &str = "herald-router";
/// The deliverer's binary.
pub const DELIVERER: &str = "herald-deliverer";

/// The setting that holds a service's listening address.
fn addr_setting(binary: &str) -> &'static str {
    match binary {
        INGEST => "HERALD_INGEST_ADDR",
        ROUTER => "HERALD_ROUTER_ADDR",
        _ => "HERALD_DELIVERER_ADDR",
    }
}

/// A free port on loopback (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where cargo put the service binaries for the running test: beside its `deps` folder.
pub fn built_binaries() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf()
}

/// How to start the services.
pub struct Launch {
    /// Folder holding `herald-ingest`, `herald-router`, `herald-deliverer`.
    pub bin_dir: PathBuf,
    /// Where each service's output goes (`<label>.log`).
    pub log_dir: PathBuf,
    /// `HERALD_*` (and `RUST_LOG`) settings given to every service.
    pub env: Settings,
    /// How long a dropped process has between SIGTERM and SIGKILL (zero: SIGKILL at once).
    pub grace: Duration,
}

impl Launch {
    /// Checks the binaries exist and makes the log folder.
    pub fn check(&self) -> anyhow::Result<()> {
        for name in [INGEST, ROUTER, DELIVERER] {
            let path = self.bin_dir.join(name);
            if !path.exists() {
                bail!("{} is missing", path.display());
            }
        }
        std::fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("creating {}", self.log_dir.display()))?;
        Ok(())
    }

    /// Starts `binary` listening on `addr`; a first start begins its log afresh, a restart
    /// appends to it.
    fn spawn(&self, binary: &str, label: &str, addr: &str, restart: bool) -> anyhow::Result<Child> {
        let log = self.log_dir.join(format!("{label}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(restart)
            .truncate(!restart)
            .open(&log)
            .with_context(|| format!("{}", log.display()))?;
        Command::new(self.bin_dir.join(binary))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(addr_setting(binary), addr)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {binary}"))
    }
}

/// One service process; stopped when dropped (see [`Launch::grace`]).
pub struct Proc {
    /// Its label, e.g. `herald-deliverer#2`.
    pub label: String,
    /// Its binary, e.g. [`DELIVERER`].
    pub binary: &'static str,
    /// Its health address (router, deliverer) or API address (ingest).
    pub addr: String,
    child: Child,
    grace: Duration,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: no cleanup, no drain, unacknowledged messages go back to their queue.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for the process to exit; returns how long it took.
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let (status, took) = self.term_and_wait(limit)?;
        assert!(status.success(), "{} exited with {status}", self.label);
        Some(took)
    }

    fn term_and_wait(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        while started.elapsed() < limit {
            if let Some(status) = self.exited() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.grace.is_zero() || self.term_and_wait(self.grace).is_none() {
            self.kill();
        }
    }
}

/// Ingest, routers and deliverers as processes, in a vhost and Redis prefix of their own
/// (removed after the processes stop).
pub struct Processes {
    api: Api,
    launch: Launch,
    /// Every service process, ingest first.
    procs: Vec<Proc>,
    // Dropped after the processes, so nothing writes into them again.
    _redis: RedisPrefix,
    _vhost: Vhost,
}

impl Processes {
    /// Starts ingest, `routers` routers and `deliverers` deliverers with `launch`'s settings,
    /// in `vhost` and `redis` (which the settings name), and waits until each is ready.
    pub async fn start(
        launch: Launch,
        vhost: Vhost,
        redis: RedisPrefix,
        routers: usize,
        deliverers: usize,
    ) -> anyhow::Result<Self> {
        launch.check()?;
        let mut stack = Self {
            api: Api::new(String::new()),
            launch,
            procs: Vec::new(),
            _redis: redis,
            _vhost: vhost,
        };
        stack.add(INGEST, 1)?;
        stack.api = Api::new(format!("http://{}", stack.procs[0].addr));
        stack.add(ROUTER, routers)?;
        stack.add(DELIVERER, deliverers)?;
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// The three services from the test build (`cargo build --workspace --bins`), with the
    /// test settings and `extra` over them; logs in `<target>/fault-logs/<test>/`.
    pub async fn start_for_test(test: &str, extra: &[(&str, &str)]) -> Self {
        let defaults = [
            ("RUST_LOG", "info,lapin=warn,hyper=warn"),
            ("HERALD_REDIS_URL", REDIS_URL),
            ("HERALD_DRAIN_TIMEOUT", "10s"),
            ("HERALD_RETRY_SCHEDULE", "1s,1s,2s,2s,4s,4s,8s,8s"),
        ];
        let (vhost, redis, env) = settings::isolated(&defaults, extra);
        let bin_dir = built_binaries();
        let log_dir = bin_dir.join("fault-logs").join(test);
        let _ = std::fs::remove_dir_all(&log_dir);
        let launch = Launch {
            bin_dir,
            log_dir,
            env,
            grace: Duration::ZERO,
        };
        Self::start(launch, vhost, redis, 1, 1)
            .await
            .context("run `cargo build --workspace --bins` first")
            .unwrap_or_else(|e| panic!("the services start: {e:#}"))
    }

    /// Starts `n` more processes of `binary` (not yet waited for).
    fn add(&mut self, binary: &'static str, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let same = self.procs.iter().filter(|p| p.binary == binary).count();
            let label = if binary == DELIVERER {
                format!("{binary}#{}", same + 1)
            } else {
                binary.to_string()
            };
            let addr = format!("127.0.0.1:{}", free_port()?);
            let child = self.launch.spawn(binary, &label, &addr, false)?;
            self.procs.push(Proc {
                label,
                binary,
                addr,
                child,
                grace: self.launch.grace,
            });
        }
        Ok(())
    }

    /// Starts `n` more deliverers and waits until they are ready.
    pub async fn add_deliverers(&mut self, n: usize) -> anyhow::Result<()> {
        self.add(DELIVERER, n)?;
        self.wait_ready().await
    }

    /// The first process of `binary`.
    pub fn proc(&self, binary: &str) -> &Proc {
        self.procs
            .iter()
            .find(|p| p.binary == binary)
            .unwrap_or_else(|| panic!("no {binary} process"))
    }

    /// The first process of `binary`, to kill or terminate.
    pub fn proc_mut(&mut self, binary: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.binary == binary)
            .unwrap_or_else(|| panic!("no {binary} process"))
    }

    /// Every process, ingest first.
    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    /// Starts the first process of `binary` again on its address (SIGKILLed first if it still
    /// runs); its log goes on in the same file. Not waited for: the test decides what to wait on.
    pub fn restart(&mut self, binary: &str) {
        let launch = &self.launch;
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.binary == binary)
            .unwrap_or_else(|| panic!("no {binary} process"));
        p.kill();
        p.child = launch
            .spawn(p.binary, &p.label, &p.addr, true)
            .unwrap_or_else(|e| panic!("restarting {binary}: {e:#}"));
    }

    /// Waits until every process answers `/readyz`, failing early if one exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for p in &mut self.procs {
            loop {
                if let Some(status) = p.exited() {
                    bail!(
                        "{} exited with {status} while starting; see {}",
                        p.label,
                        self.launch
                            .log_dir
                            .join(format!("{}.log", p.label))
                            .display()
                    );
                }
                let ok = self
                    .api
                    .http
                    .get(format!("http://{}/readyz", p.addr))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ok {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("{} did not become ready within 30 s", p.label);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Fails if a service has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.exited() {
                bail!("{} exited during the run with {status}", p.label);
            }
        }
        Ok(())
    }

    /// A setting every service was given.
    pub fn setting(&self, name: &str) -> Option<&str> {
        settings::get(&self.launch.env, name)
    }

    /// The broker URL of the stack's own vhost.
    pub fn amqp_url(&self) -> String {
        self.setting("HERALD_AMQP_URL").unwrap_or_default().into()
    }

    /// Where the logs are.
    pub fn log_dir(&self) -> &Path {
        &self.launch.log_dir
    }

    /// SIGTERMs every process, deliverers first, waiting up to 15 s for each; then the
    /// Redis keys and the vhost go.
    pub async fn stop(mut self) {
        for p in self.procs.iter_mut().rev() {
            p.terminate(Duration::from_secs(15));
        }
    }
}

impl std::ops::Deref for Processes {
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
