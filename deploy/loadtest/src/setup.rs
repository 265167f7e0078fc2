//! Before a scenario runs: the services' settings, the report's header (date, commit, machine,
//! settings), the raw broker hop, and then the installation started, given a workspace that
//! points at the verifying receiver, and a producer for its API key.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use herald_e2e::procs::Launch;
use herald_e2e::{oauth, settings, RedisPrefix, TestPki, TokenServer, Vhost};
use serde_json::json;

use crate::produce::Producer;
use crate::receiver::Receiver;
use crate::report::Report;
use crate::scenarios::Ctx;
use crate::stack::{self, Stack, ADMIN_TOKEN};
use crate::{hop, procstat, Args, QueueType, Scenario, Security};

/// A run's vhost, Redis prefix and service settings, and its report so far.
pub struct Setup<'a> {
    args: &'a Args,
    vhost: Vhost,
    redis: RedisPrefix,
    amqp_url: String,
    env: Vec<(String, String)>,
    /// The report: its header, and the broker hop once measured.
    pub report: Report,
}

impl<'a> Setup<'a> {
    /// Creates the vhost and names the Redis prefix; settles the services' environment.
    pub fn new(args: &'a Args) -> anyhow::Result<Self> {
        let id = stack::run_id();
        let name = format!("herald-load-{id}");
        eprintln!("herald-load: vhost and Redis prefix {name}");
        let vhost = Vhost::create(name.clone())?;
        let redis = RedisPrefix {
            url: args.redis_url.clone(),
            prefix: name.clone(),
        };
        let amqp_url = vhost.amqp_url(&args.amqp_base);
        let env = service_env(args, &amqp_url, &name)?;
        let report = header(args, &env);
        Ok(Self {
            args,
            vhost,
            redis,
            amqp_url,
            env,
            report,
        })
    }

    /// Measures the raw broker hop in the run's vhost (unless --hop-messages is 0).
    pub async fn broker_hop(&mut self) -> anyhow::Result<()> {
        let args = self.args;
        if args.hop_messages == 0 {
            return Ok(());
        }
        let quorum = args.queue_type == QueueType::Quorum;
        eprintln!(
            "herald-load: broker hop, {} messages ({})",
            args.hop_messages,
            if quorum { "quorum" } else { "classic v2" }
        );
        let window = procstat::Window::start(procstat::infrastructure_and_self());
        let hop = hop::run(&self.amqp_url, quorum, args.hop_messages, args.hop_window).await?;
        self.report.broker_hop_usage = Some(window.finish());
        self.report.broker_hop = Some(hop);
        Ok(())
    }

    /// Starts the receiver and the services, configures the workspace, and returns what a
    /// scenario runs with.
    pub async fn start(self, clock: Instant) -> anyhow::Result<(Ctx<'a>, Stack, Producer)> {
        let Self {
            args,
            vhost,
            redis,
            amqp_url: _,
            env,
            report,
        } = self;
        // Destination security: the receiver's TLS and the connections' extra fields.
        let mut tokens = None;
        let (tls, extra) = match args.destination_security {
            Security::Hmac => (None, json!({})),
            Security::Oauth2 => {
                let server = TokenServer::start(args.token_lifetime).await;
                let extra = json!({"auth": {"type": "oauth2_client_credentials",
                    "token_url": server.token_url(), "client_id": oauth::CLIENT_ID,
                    "client_secret": oauth::CLIENT_SECRET}});
                tokens = Some(server);
                (None, extra)
            }
            Security::Mtls => {
                let pki = TestPki::new("herald-load CA");
                let (cert, key) = pki.issue("herald-load", &["herald-load.test"], -1, 30);
                let config = herald_e2e::tls::server_config(&pki, &pki.ca_pem);
                let extra = json!({"tls": {"client_cert_pem": cert, "client_key_pem": key,
                    "ca_pem": pki.ca_pem}});
                (Some(config), extra)
            }
        };
        let mut extra = extra;
        if args.scenario == Scenario::Ordered {
            extra["ordering"] = json!(args.ordering);
        }
        let require_bearer = tokens.is_some();
        let receiver =
            Receiver::start(clock, args.delay(), args.fail_first, tls, require_bearer).await?;
        let redis_prefix = redis.prefix.clone();
        let bin_dir = args.bin_dir();
        let launch = Launch {
            log_dir: args
                .log_dir
                .clone()
                .unwrap_or_else(|| bin_dir.join("load-logs").join(&report.scenario)),
            bin_dir,
            env,
            // Each service drains, as in production, before it is killed.
            grace: Duration::from_secs(5),
        };
        let first_deliverers = if args.scenario == Scenario::Scaleout {
            1
        } else {
            args.deliverers
        };
        eprintln!(
            "herald-load: starting the services from {}",
            launch.bin_dir.display()
        );
        let only_ingest = args.only_ingest();
        let stack = stack::start(launch, vhost, redis, first_deliverers, only_ingest).await?;
        let timeout_ms = (args.delay().as_millis() as u64 + 10_000).min(120_000);
        let urls: Vec<String> = (0..args.connections.max(1))
            .map(|i| receiver.url_of(i))
            .collect();
        let workspace = stack::configure(&stack, &urls, timeout_ms, &extra).await?;
        receiver.set_secret(&workspace.signing_secret)?;
        // Services see configuration changes within HERALD_CONFIG_REFRESH (250 ms by default).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let producer = Producer::new(&stack.url, &workspace.publishable_key, clock)?;
        let ctx = Ctx {
            args,
            receiver,
            report,
            workspace,
            redis_prefix,
            tokens,
        };
        Ok((ctx, stack, producer))
    }
}

/// The services' environment: the run's broker and Redis, the scenario's own settings, then
/// every --set.
fn service_env(args: &Args, amqp_url: &str, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let quorum = args.queue_type == QueueType::Quorum;
    let mut env: Vec<(String, String)> = vec![
        ("RUST_LOG".into(), "warn".into()),
        ("HERALD_LOG_FORMAT".into(), "json".into()),
        ("HERALD_AMQP_URL".into(), amqp_url.into()),
        ("HERALD_REDIS_URL".into(), args.redis_url.clone()),
        ("HERALD_REDIS_PREFIX".into(), name.into()),
        ("HERALD_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("HERALD_ALLOW_HTTP".into(), "true".into()),
        ("HERALD_ALLOW_PRIVATE_DESTINATIONS".into(), "true".into()),
        (
            "HERALD_QUEUE_TYPE".into(),
            if quorum { "quorum" } else { "classic" }.into(),
        ),
    ];
    if args.scenario == Scenario::Memory {
        // Enough room for every held delivery to be in flight at once.
        for (k, v) in [
            ("HERALD_DELIVERER_CONCURRENCY", "1024"),
            ("HERALD_CONNECTION_CONCURRENCY", "1000"),
            ("HERALD_DELIVERER_PREFETCH", "1000"),
        ] {
            env.push((k.into(), v.into()));
        }
    }
    if args.fail_first > 0 {
        // Enough 1 s retries for the refused attempts and one more; a breaker that would
        // defer the refused deliveries would measure the ladder, not the attempts.
        let schedule = vec!["1s"; args.fail_first as usize + 1].join(",");
        env.push(("HERALD_RETRY_SCHEDULE".into(), schedule));
        env.push(("HERALD_BREAKER_FAILURES".into(), "1000000".into()));
    }
    if args.scenario == Scenario::Replay {
        // The first refused attempt makes a dead letter at once, however many there are.
        env.push(("HERALD_RETRY_SCHEDULE".into(), "none".into()));
        env.push(("HERALD_BREAKER_FAILURES".into(), "1000000".into()));
    }
    for s in &args.settings {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
        settings::set(&mut env, k, v);
    }
    Ok(env)
}

/// The report before anything is measured: what ran, when, on which commit and machine, and
/// with which settings (the admin token left out).
fn header(args: &Args, env: &[(String, String)]) -> Report {
    Report {
        scenario: args
            .scenario
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        date_utc: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        git_commit: command_line("git", &["describe", "--always", "--dirty"]),
        machine: machine(),
        settings: json!({
            "args": format!("{args:?}"),
            "bin_dir": args.bin_dir().display().to_string(),
            "receiver_delay_ms": args.delay().as_millis() as u64,
            "service_env": env
                .iter()
                .filter(|(k, _)| k != "HERALD_ADMIN_TOKEN")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        }),
        broker_hop: None,
        broker_hop_usage: None,
        phases: Vec::new(),
        timeline: Vec::new(),
        redis_keys: None,
        ratios: Vec::new(),
        warnings: Vec::new(),
    }
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_mib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    json!({
        "cores": cores,
        "cpu_model": model,
        "mem_total_mib": mem_mib,
        "summary": format!("{cores} cores, {model}, {:.0} GiB", mem_mib as f64 / 1024.0),
    })
}
