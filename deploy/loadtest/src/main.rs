//! `herald-load`: measures the built Herald binaries on this machine.
//!
//! It starts its own installation (a fresh vhost and Redis prefix, `herald-ingest`,
//! `herald-router` and N `herald-deliverer` processes from `target/release/`), a receiver that
//! verifies every signature, and a producer; runs one scenario; and reports rates, latency
//! percentiles, and CPU and peak RSS per process, beside a raw RabbitMQ hop measured in the same
//! run so that figures from a noisy machine compare as ratios.
//!
//! - [`stack`]: vhost, Redis prefix and service processes (from `herald-e2e`, cleaned up on drop
//!   and Ctrl-C), and the run's workspace.
//! - [`receiver`]: the verifying receiver.
//! - [`produce`]: bulk and single-event producers, closed and open loop.
//! - [`hop`]: the raw broker hop.
//! - [`procstat`]: CPU and memory from `/proc`.
//! - [`report`]: the table and the JSON.

mod hop;
mod procstat;
mod produce;
mod receiver;
mod report;
mod stack;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use herald_e2e::procs::Launch;
use herald_e2e::{settings, RedisPrefix, Vhost};
use serde_json::json;

use crate::produce::{Producer, Sent};
use crate::receiver::Receiver;
use crate::report::{percentile, Figure, Phase, Report};
use crate::stack::{Stack, ADMIN_TOKEN};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Bulk intake as fast as possible for --duration, then every accepted event delivered:
    /// intake events/s and deliveries/s end to end and sustained.
    Throughput,
    /// Many clients sending one event per request for --duration: events/s accepted.
    IntakeSingle,
    /// A steady --rate of single events: time from intake's 202 to arrival at the receiver.
    Latency,
    /// A receiver taking 50 ms per request: --events with one deliverer, then with
    /// --scaleout-deliverers; the ratio of the two rates.
    Scaleout,
    /// A receiver taking 2 s per request and a burst of --events, so about a thousand
    /// deliveries are in flight: the deliverer's peak RSS.
    Memory,
    /// Only the raw broker hop.
    Hop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum QueueType {
    Classic,
    Quorum,
}

/// Measures Herald's built binaries (run `cargo build --release` first).
#[derive(Debug, Parser)]
#[command(name = "herald-load", version)]
struct Args {
    /// The scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Seconds of load (throughput 60, intake-single 20, latency 30).
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent bulk producers (throughput, scaleout, memory).
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Events per bulk request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent clients for intake-single; most requests in flight for latency.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Events per second: latency (default 1000); throughput (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Events per single request in the latency scenario (1: `/v1/events`; more: bulk).
    #[arg(long, default_value_t = 1)]
    latency_batch: usize,
    /// Events sent (scaleout 20000 per phase, memory 2000).
    #[arg(long)]
    events: Option<u64>,
    /// Deliverer processes (the first phase of scaleout always uses one).
    #[arg(long, default_value_t = 1)]
    deliverers: usize,
    /// Deliverer processes in scaleout's second phase.
    #[arg(long, default_value_t = 3)]
    scaleout_deliverers: usize,
    /// Milliseconds the receiver takes per request (scaleout 50, memory 2000, else 0).
    #[arg(long)]
    receiver_delay_ms: Option<u64>,
    /// Approximate bytes of each event's payload (the delivered body is about 170 more).
    #[arg(long, default_value_t = 240)]
    payload_bytes: usize,
    /// Queue type for Herald (HERALD_QUEUE_TYPE) and for the broker hop.
    #[arg(long, value_enum, default_value = "classic")]
    queue_type: QueueType,
    /// Messages through the raw broker hop (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    hop_messages: u64,
    /// Unconfirmed publishes the hop's producer keeps in flight.
    #[arg(long, default_value_t = 1000)]
    hop_window: usize,
    /// Folder of the service binaries [default: $CARGO_TARGET_DIR/release or target/release].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Folder for the services' logs [default: <bin-dir>/load-logs/<scenario>].
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Broker URL without the vhost (the run adds a fresh one).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672")]
    amqp_base: String,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Extra service setting, e.g. --set HERALD_DELIVERER_PREFETCH=256 (repeatable; wins over
    /// the scenario's own).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Start ingest only (throughput, intake-single): intake measured without the router and
    /// deliverer competing for CPU; nothing is delivered.
    #[arg(long)]
    intake_only: bool,
    /// Give up waiting for deliveries after this many seconds without progress.
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    fn duration(&self) -> Duration {
        let default = match self.scenario {
            Scenario::Throughput => 60.0,
            Scenario::IntakeSingle => 20.0,
            _ => 30.0,
        };
        Duration::from_secs_f64(self.duration.unwrap_or(default))
    }

    fn delay(&self) -> Duration {
        let default = match self.scenario {
            Scenario::Scaleout => 50,
            Scenario::Memory => 2000,
            _ => 0,
        };
        Duration::from_millis(self.receiver_delay_ms.unwrap_or(default))
    }

    fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone().unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
                .join("release")
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropping `run` (on a signal) drops its guards: the services stop, the vhost and the Redis
    // keys are deleted.
    let outcome = tokio::select! {
        r = run(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    match outcome {
        Ok(report) => {
            report.print();
            if let Some(path) = &args.json {
                let written = serde_json::to_vec_pretty(&report)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| std::fs::write(path, b).map_err(Into::into));
                if let Err(e) = written {
                    eprintln!("error: writing {}: {e:#}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("report written to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every scenario shares.
struct Ctx<'a> {
    args: &'a Args,
    receiver: Arc<Receiver>,
    report: Report,
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let clock = Instant::now();
    let id = stack::run_id();
    let name = format!("herald-load-{id}");
    eprintln!("herald-load: vhost and Redis prefix {name}");
    let vhost = Vhost::create(name.clone())?;
    let redis = RedisPrefix {
        url: args.redis_url.clone(),
        prefix: name.clone(),
    };
    let amqp_url = vhost.amqp_url(&args.amqp_base);
    let quorum = args.queue_type == QueueType::Quorum;

    let mut env: Vec<(String, String)> = vec![
        ("RUST_LOG".into(), "warn".into()),
        ("HERALD_LOG_FORMAT".into(), "json".into()),
        ("HERALD_AMQP_URL".into(), amqp_url.clone()),
        ("HERALD_REDIS_URL".into(), args.redis_url.clone()),
        ("HERALD_REDIS_PREFIX".into(), name.clone()),
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
    for s in &args.settings {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
        settings::set(&mut env, k, v);
    }

    let mut report = Report {
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
        ratios: Vec::new(),
        warnings: Vec::new(),
    };

    if args.hop_messages > 0 {
        eprintln!(
            "herald-load: broker hop, {} messages ({})",
            args.hop_messages,
            if quorum { "quorum" } else { "classic v2" }
        );
        let window = procstat::Window::start(infrastructure_and_self());
        let hop = hop::run(&amqp_url, quorum, args.hop_messages, args.hop_window).await?;
        report.broker_hop_usage = Some(window.finish());
        report.broker_hop = Some(hop);
    }
    if args.scenario == Scenario::Hop {
        return Ok(report);
    }

    let receiver = Receiver::start(clock, args.delay()).await?;
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
    let intake_only =
        args.intake_only && matches!(args.scenario, Scenario::Throughput | Scenario::IntakeSingle);
    let first_deliverers = if args.scenario == Scenario::Scaleout {
        1
    } else {
        args.deliverers
    };
    eprintln!(
        "herald-load: starting the services from {}",
        launch.bin_dir.display()
    );
    let mut stack = stack::start(launch, vhost, redis, first_deliverers, intake_only).await?;
    let timeout_ms = (args.delay().as_millis() as u64 + 10_000).min(120_000);
    let (pk, secret) = stack::configure(&stack, &receiver.url, timeout_ms).await?;
    receiver.set_secret(&secret)?;
    // Services see configuration changes within HERALD_CONFIG_REFRESH (250 ms by default).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let producer = Producer::new(&stack.url, &pk, clock)?;
    let mut ctx = Ctx {
        args,
        receiver,
        report,
    };
    match args.scenario {
        Scenario::Throughput => throughput(&mut ctx, &mut stack, &producer, intake_only).await?,
        Scenario::IntakeSingle => intake_single(&mut ctx, &mut stack, &producer).await?,
        Scenario::Latency => latency(&mut ctx, &mut stack, &producer).await?,
        Scenario::Scaleout => scaleout(&mut ctx, &mut stack, &producer).await?,
        Scenario::Memory => memory(&mut ctx, &mut stack, &producer).await?,
        Scenario::Hop => {}
    }
    stack.check_alive()?;
    eprintln!("herald-load: logs in {}", stack.log_dir().display());
    drop(stack);
    Ok(ctx.report)
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

fn infrastructure_and_self() -> Vec<procstat::Watched> {
    let mut w = vec![procstat::Watched {
        name: "herald-load (producers, receiver)".into(),
        pid: std::process::id(),
        ours: false,
    }];
    w.extend(procstat::infrastructure());
    w
}

fn window(stack: &Stack) -> procstat::Window {
    let mut w = stack::watched(stack);
    w.extend(infrastructure_and_self());
    procstat::Window::start(w)
}

/// Waits until every accepted event arrived at the receiver, or until nothing new arrived for
/// --stall-timeout; returns false in that case.
async fn wait_delivered(ctx: &Ctx<'_>, stack: &mut Stack, expected: usize) -> anyhow::Result<bool> {
    let mut last = (0, Instant::now());
    loop {
        let got = ctx.receiver.unique();
        if got >= expected {
            return Ok(true);
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(ctx.args.stall_timeout) {
            return Ok(false);
        }
        stack.check_alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// Intake figures of a producer run.
fn intake_figures(ctx: &Ctx<'_>, sent: &Sent, seconds: f64, name: &str) -> Vec<Figure> {
    let mut req: Vec<f64> = sent.request_us.iter().map(|&u| u as f64).collect();
    req.sort_by(f64::total_cmp);
    vec![
        ctx.report.rate(name, sent.accepted.len() as f64 / seconds),
        Figure {
            name: "intake request time p50".into(),
            value: ms(percentile(&req, 0.5)),
            unit: "ms",
            vs_broker_hop: None,
        },
        Figure {
            name: "intake request time p99".into(),
            value: ms(percentile(&req, 0.99)),
            unit: "ms",
            vs_broker_hop: None,
        },
    ]
}

/// Delivery figures: rates end to end and sustained, and time from 202 to arrival.
struct Delivered {
    figures: Vec<Figure>,
    counts: Vec<(String, u64)>,
    per_second: Vec<u64>,
    sustained: f64,
}

fn delivery_figures(ctx: &Ctx<'_>, sent: &Sent) -> Delivered {
    let arrivals: HashMap<String, u64> = ctx.receiver.take();
    let first_accept = sent.accepted.iter().map(|(_, t)| *t).min().unwrap_or(0);
    let mut times: Vec<u64> = Vec::with_capacity(sent.accepted.len());
    let mut latencies_ms: Vec<f64> = Vec::with_capacity(sent.accepted.len());
    for (uuid, accepted_at) in &sent.accepted {
        if let Some(&at) = arrivals.get(uuid) {
            times.push(at);
            latencies_ms.push(ms(at as f64 - *accepted_at as f64));
        }
    }
    times.sort_unstable();
    latencies_ms.sort_by(f64::total_cmp);
    let n = times.len();
    let last = times.last().copied().unwrap_or(first_accept);
    let end_to_end = n as f64 / ((last.saturating_sub(first_accept)) as f64 / 1e6).max(1e-9);
    // Sustained: the middle 80 % of deliveries over the time they took, which leaves out the
    // ramp-up at the start and the tail at the end.
    let sustained = if n >= 10 {
        let (a, b) = (times[n / 10], times[n * 9 / 10]);
        (n * 9 / 10 - n / 10) as f64 / ((b - a) as f64 / 1e6).max(1e-9)
    } else {
        f64::NAN
    };
    let mut per_second = Vec::new();
    for t in &times {
        let s = (t.saturating_sub(first_accept) / 1_000_000) as usize;
        if per_second.len() <= s {
            per_second.resize(s + 1, 0);
        }
        per_second[s] += 1;
    }
    let lat = |q: f64, name: &str| Figure {
        name: name.into(),
        value: percentile(&latencies_ms, q),
        unit: "ms",
        vs_broker_hop: None,
    };
    let figures = vec![
        ctx.report
            .rate("deliveries/s end to end (first 202..last)", end_to_end),
        ctx.report
            .rate("deliveries/s sustained (middle 80 %)", sustained),
        lat(0.5, "202 to receiver p50"),
        lat(0.9, "202 to receiver p90"),
        lat(0.99, "202 to receiver p99"),
        lat(0.999, "202 to receiver p99.9"),
        lat(1.0, "202 to receiver max"),
    ];
    let r = &ctx.receiver;
    let counts = vec![
        ("events accepted".into(), sent.accepted.len() as u64),
        ("delivered".into(), n as u64),
        (
            "missing".into(),
            (sent.accepted.len() as u64).saturating_sub(n as u64),
        ),
        ("requests".into(), r.requests.load(Ordering::Relaxed)),
        ("duplicates".into(), r.duplicates.load(Ordering::Relaxed)),
        (
            "signature failures".into(),
            r.failures.load(Ordering::Relaxed),
        ),
        (
            "receiver max in flight".into(),
            r.max_in_flight.load(Ordering::Relaxed),
        ),
        ("failed requests".into(), sent.failed_requests),
        ("rejected events".into(), sent.rejected_events),
    ];
    Delivered {
        figures,
        counts,
        per_second,
        sustained,
    }
}

fn note_failures(ctx: &mut Ctx<'_>, sent: &Sent, complete: bool) {
    if let Some(e) = &sent.first_error {
        ctx.report.warnings.push(format!(
            "{} requests failed; first: {e}",
            sent.failed_requests
        ));
    }
    if !complete {
        ctx.report.warnings.push(format!(
            "not every accepted event arrived within --stall-timeout {} s",
            ctx.args.stall_timeout
        ));
    }
    let failures = ctx.receiver.failures.load(Ordering::Relaxed);
    if failures > 0 {
        ctx.report
            .warnings
            .push(format!("{failures} requests did not verify"));
    }
}

async fn throughput(
    ctx: &mut Ctx<'_>,
    stack: &mut Stack,
    producer: &Producer,
    intake_only: bool,
) -> anyhow::Result<()> {
    let args = ctx.args;
    let body = produce::body(args.batch, args.payload_bytes);
    eprintln!(
        "herald-load: throughput: {} producers, {} events per request, {:.0} s",
        args.producers,
        args.batch,
        args.duration().as_secs_f64()
    );
    let usage = window(stack);
    let started = Instant::now();
    let until = started + args.duration();
    let sent = match args.rate {
        Some(rate) => {
            let period = Duration::from_secs_f64(args.batch as f64 / rate);
            produce::open_loop(producer, period, args.producers * 4, true, body, until).await
        }
        None => produce::closed_loop(producer, args.producers, true, body, until, None).await,
    };
    let intake_seconds = started.elapsed().as_secs_f64();
    let mut figures = intake_figures(ctx, &sent, intake_seconds, "intake events/s (bulk)");
    let mut complete = true;
    let mut counts = vec![("events accepted".to_string(), sent.accepted.len() as u64)];
    let mut per_second = Vec::new();
    if !intake_only {
        eprintln!(
            "herald-load: {} events accepted in {intake_seconds:.1} s; waiting for deliveries",
            sent.accepted.len()
        );
        complete = wait_delivered(ctx, stack, sent.accepted.len()).await?;
        let d = delivery_figures(ctx, &sent);
        figures.extend(d.figures);
        counts = d.counts;
        per_second = d.per_second;
    }
    note_failures(ctx, &sent, complete);
    ctx.report.phases.push(Phase {
        name: if intake_only {
            "throughput (ingest only)".into()
        } else {
            "throughput".into()
        },
        figures,
        counts,
        usage: usage.finish(),
        deliveries_per_second: per_second,
    });
    Ok(())
}

async fn intake_single(
    ctx: &mut Ctx<'_>,
    stack: &mut Stack,
    producer: &Producer,
) -> anyhow::Result<()> {
    let args = ctx.args;
    eprintln!(
        "herald-load: intake-single: {} clients, {:.0} s",
        args.clients,
        args.duration().as_secs_f64()
    );
    let usage = window(stack);
    let started = Instant::now();
    let sent = produce::closed_loop(
        producer,
        args.clients,
        false,
        produce::body(0, args.payload_bytes),
        started + args.duration(),
        None,
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let figures = intake_figures(ctx, &sent, seconds, "intake events/s (single)");
    note_failures(ctx, &sent, true);
    ctx.report.phases.push(Phase {
        name: format!("intake-single ({} clients)", args.clients),
        figures,
        counts: vec![
            ("events accepted".into(), sent.accepted.len() as u64),
            ("failed requests".into(), sent.failed_requests),
        ],
        usage: usage.finish(),
        deliveries_per_second: Vec::new(),
    });
    Ok(())
}

async fn latency(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let rate = args.rate.unwrap_or(1000.0);
    let batch = args.latency_batch.max(1);
    let period = Duration::from_secs_f64(batch as f64 / rate);
    eprintln!(
        "herald-load: latency: {rate:.0} events/s, {batch} per request, {:.0} s",
        args.duration().as_secs_f64()
    );
    let usage = window(stack);
    let started = Instant::now();
    let body = if batch == 1 {
        produce::body(0, args.payload_bytes)
    } else {
        produce::body(batch, args.payload_bytes)
    };
    let sent = produce::open_loop(
        producer,
        period,
        args.clients.max(256),
        batch > 1,
        body,
        started + args.duration(),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut figures = intake_figures(ctx, &sent, seconds, "intake events/s (paced)");
    let complete = wait_delivered(ctx, stack, sent.accepted.len()).await?;
    let d = delivery_figures(ctx, &sent);
    figures.extend(d.figures);
    note_failures(ctx, &sent, complete);
    ctx.report.phases.push(Phase {
        name: format!("latency at {rate:.0} events/s"),
        figures,
        counts: d.counts,
        usage: usage.finish(),
        deliveries_per_second: d.per_second,
    });
    Ok(())
}

/// Sends `events` in bulk requests as fast as the producers go and waits for them all.
async fn burst_phase(
    ctx: &mut Ctx<'_>,
    stack: &mut Stack,
    producer: &Producer,
    name: String,
    events: u64,
) -> anyhow::Result<Delivered> {
    let args = ctx.args;
    let batch = args.batch.max(1) as u64;
    ctx.receiver.reset();
    let usage = window(stack);
    let sent = produce::closed_loop(
        producer,
        args.producers,
        true,
        produce::body(batch as usize, args.payload_bytes),
        Instant::now() + Duration::from_secs(3600),
        Some(events.div_ceil(batch)),
    )
    .await;
    eprintln!(
        "herald-load: {name}: {} events accepted; waiting for deliveries",
        sent.accepted.len()
    );
    let complete = wait_delivered(ctx, stack, sent.accepted.len()).await?;
    // The last requests are still being answered: keep them inside the measured window.
    tokio::time::sleep(args.delay()).await;
    let d = delivery_figures(ctx, &sent);
    note_failures(ctx, &sent, complete);
    ctx.report.phases.push(Phase {
        name,
        figures: d.figures.clone(),
        counts: d.counts.clone(),
        usage: usage.finish(),
        deliveries_per_second: d.per_second.clone(),
    });
    Ok(d)
}

async fn scaleout(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let events = args.events.unwrap_or(20_000);
    let delay = args.delay().as_millis();
    let one = burst_phase(
        ctx,
        stack,
        producer,
        format!("scaleout: 1 deliverer, receiver {delay} ms"),
        events,
    )
    .await?;
    let n = args.scaleout_deliverers.max(2);
    stack.add_deliverers(n - 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let many = burst_phase(
        ctx,
        stack,
        producer,
        format!("scaleout: {n} deliverers, receiver {delay} ms"),
        events,
    )
    .await?;
    ctx.report.ratios.push((
        format!("scale-out, sustained: {n} deliverers / 1"),
        many.sustained / one.sustained,
    ));
    let e2e = |d: &Delivered| d.figures.first().map(|f| f.value).unwrap_or(f64::NAN);
    ctx.report.ratios.push((
        format!("scale-out, end to end: {n} deliverers / 1"),
        e2e(&many) / e2e(&one),
    ));
    Ok(())
}

async fn memory(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let events = ctx.args.events.unwrap_or(2_000);
    let deliverers = stack::deliverer_pids(stack);
    let before: f64 = deliverers
        .iter()
        .filter_map(|&pid| procstat::status_mib(pid, "VmRSS"))
        .sum();
    let delay = ctx.args.delay().as_millis();
    burst_phase(
        ctx,
        stack,
        producer,
        format!("memory: {events} events, receiver {delay} ms"),
        events,
    )
    .await?;
    if let Some(phase) = ctx.report.phases.last_mut() {
        phase.figures.push(Figure {
            name: "deliverer RSS before the burst".into(),
            value: before,
            unit: "MiB",
            vs_broker_hop: None,
        });
        for u in phase
            .usage
            .processes
            .iter()
            .filter(|u| u.name.starts_with("herald-deliverer"))
        {
            phase.figures.push(Figure {
                name: format!("{} peak RSS (VmHWM)", u.name),
                value: u.vm_hwm_mib.unwrap_or(f64::NAN),
                unit: "MiB",
                vs_broker_hop: None,
            });
        }
        let in_flight = ctx.receiver.max_in_flight.load(Ordering::Relaxed);
        if in_flight < 900 {
            ctx.report.warnings.push(format!(
                "only {in_flight} deliveries were in flight at once (aim: about 1000)"
            ));
        }
    } else {
        bail!("the memory phase reported nothing");
    }
    Ok(())
}
