//! `herald-load`: measures the built Herald binaries on this machine.
//!
//! It starts its own installation (a fresh vhost and Redis prefix, `herald-ingest`,
//! `herald-router` and N `herald-deliverer` processes from `target/release/`), a receiver that
//! verifies every signature, and a producer; runs one scenario; and reports rates, latency
//! percentiles, and CPU and peak RSS per process, beside a raw RabbitMQ hop measured in the same
//! run so that figures from a noisy machine compare as ratios.
//!
//! This file is the command line: the arguments, and which scenario runs.
//!
//! - [`setup`]: the services' settings, the report's header, the broker hop, and the started and
//!   configured installation a scenario runs against.
//! - [`scenarios`]: one module per scenario, and what they measure in common.
//! - [`stack`]: vhost, Redis prefix and service processes (from `herald-e2e`, cleaned up on drop
//!   and Ctrl-C), and the run's workspace.
//! - [`receiver`]: the verifying receiver.
//! - [`produce`]: bulk and single-event producers, closed and open loop.
//! - [`hop`]: the raw broker hop.
//! - [`procstat`]: CPU and memory from `/proc`.
//! - [`redisstat`]: Redis's `used_memory` and a census of the run's own keys.
//! - [`report`]: the table and the JSON.

mod hop;
mod procstat;
mod produce;
mod receiver;
mod redisstat;
mod report;
mod scenarios;
mod setup;
mod stack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use crate::report::Report;
use crate::setup::Setup;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Bulk intake as fast as possible for --duration, then every accepted event delivered:
    /// intake events/s and deliveries/s end to end and sustained.
    Throughput,
    /// Many clients sending one event per request for --duration: events/s accepted.
    IntakeSingle,
    /// Many clients sending one event per request as fast as the stack takes them for
    /// --duration, then every accepted event delivered: deliveries/s end to end and sustained,
    /// and the time from each 202 to the receiver.
    E2eSingle,
    /// A steady --rate of single events: time from intake's 202 to arrival at the receiver.
    Latency,
    /// A receiver taking 50 ms per request: --events with one deliverer, then with
    /// --scaleout-deliverers; the ratio of the two rates.
    Scaleout,
    /// A receiver taking 2 s per request and a burst of --events, so about a thousand
    /// deliveries are in flight: the deliverer's peak RSS.
    Memory,
    /// A steady --rate (bulk requests of --batch, default 50) for --duration (default 180 s):
    /// every --sample-every s Redis's used_memory, bytes per event, each service's RSS and
    /// deliveries/s; at the end a census of the run's Redis keys. --connections and
    /// --fail-first give the cost of each further connection and attempt.
    Soak,
    /// --events dead letters (default 10,000) replayed by one `POST /v1/dead-letters/replay`
    /// with an event filter: ingest's RSS before, at its peak, and after.
    Replay,
    /// --events events (default 100,000) delivered, then their list walked page by page by
    /// cursor (the workspace's, or with --list-console the console's search): page 1, page 50
    /// and the last page timed, and each event checked to be listed once.
    Paging,
    /// One connection delivering in order (`"ordering": "per_resource"`) over --keys
    /// resources (default 1,000): --events (default 20,000) sent in bulk requests one after
    /// the other (so intake's order is the order sent), the receiver taking
    /// --receiver-delay-ms (default 5) per request. Deliveries/s end to end, and every key
    /// checked at the receiver to arrive complete and in order.
    Ordered,
    /// Only the raw broker hop.
    Hop,
}

/// How the run's connections reach the receiver, beside the HMAC signature every request has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Security {
    /// Plain HTTP, signed (`v1`).
    Hmac,
    /// Plus an OAuth2 client-credentials bearer token from a local token endpoint (tokens
    /// living --token-lifetime seconds); the receiver refuses requests without one.
    Oauth2,
    /// HTTPS with mutual TLS: a client certificate from a CA made for the run, demanded by
    /// the receiver, whose own certificate the connection trusts through its `ca_pem`.
    Mtls,
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
    /// Events per bulk request (soak 50, else 500).
    #[arg(long)]
    batch: Option<usize>,
    /// Concurrent clients for intake-single and e2e-single; most requests in flight for latency.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Events per second: latency and soak (default 1000); throughput (default: as fast as
    /// possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Events per single request in the latency scenario (1: `/v1/events`; more: bulk).
    #[arg(long, default_value_t = 1)]
    latency_batch: usize,
    /// Events sent (scaleout 20000 per phase, memory 2000, replay 10000, paging 100000).
    #[arg(long)]
    events: Option<u64>,
    /// Resources the ordered scenario's events are spread over (each its own ordered key).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// The ordered scenario's connection's `ordering` (`none` gives the same traffic
    /// unordered, to compare; its arrivals out of order are counted, not warned about).
    #[arg(long, default_value = "per_resource")]
    ordering: String,
    /// Deliverer processes (the first phase of scaleout always uses one).
    #[arg(long, default_value_t = 1)]
    deliverers: usize,
    /// Deliverer processes in scaleout's second phase.
    #[arg(long, default_value_t = 3)]
    scaleout_deliverers: usize,
    /// Milliseconds the receiver takes per request (scaleout 50, memory 2000, else 0).
    #[arg(long)]
    receiver_delay_ms: Option<u64>,
    /// Connections (each with a rule for every event, all to the receiver): each event is
    /// delivered this many times.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// The receiver answers 500 to the first K attempts of each delivery (the retry schedule
    /// becomes K+1 times 1 s and the circuit breaker opens only after a million failures,
    /// unless --set says otherwise).
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Rows per page in the paging scenario (the API's limit, 1 to 250).
    #[arg(long, default_value_t = 50)]
    page_size: usize,
    /// A filter of the paging scenario's list, e.g. --list-filter status=delivered (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    list_filter: Vec<String>,
    /// The paging scenario walks the console's search (`GET /v1/admin/events`, which also
    /// takes connection_id, since and until filters) instead of `GET /v1/events`.
    #[arg(long)]
    list_console: bool,
    /// Seconds between the soak's samples.
    #[arg(long, default_value_t = 10.0)]
    sample_every: f64,
    /// Approximate bytes of each event's payload (the delivered body is about 170 more).
    #[arg(long, default_value_t = 240)]
    payload_bytes: usize,
    /// Destination security of the run's connections (delivery throughput with each).
    #[arg(long, value_enum, default_value = "hmac")]
    destination_security: Security,
    /// Seconds the OAuth2 tokens live (--destination-security oauth2): a token is used for
    /// 30 s less, or half as long when it lives a minute or less.
    #[arg(long, default_value_t = 60.0)]
    token_lifetime: f64,
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

impl Scenario {
    /// Seconds of load and milliseconds the receiver takes per request, when not given.
    fn defaults(self) -> (f64, u64) {
        match self {
            Scenario::Throughput => (60.0, 0),
            Scenario::IntakeSingle | Scenario::E2eSingle => (20.0, 0),
            Scenario::Scaleout => (30.0, 50),
            Scenario::Memory => (30.0, 2000),
            Scenario::Soak => (180.0, 0),
            Scenario::Replay | Scenario::Paging => (0.0, 0),
            Scenario::Latency | Scenario::Hop => (30.0, 0),
            Scenario::Ordered => (0.0, 5),
        }
    }
}

impl Args {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.unwrap_or(self.scenario.defaults().0))
    }

    /// Events per bulk request.
    fn batch(&self) -> usize {
        let default = if self.scenario == Scenario::Soak {
            50
        } else {
            500
        };
        self.batch.unwrap_or(default).max(1)
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.receiver_delay_ms.unwrap_or(self.scenario.defaults().1))
    }

    fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone().unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
                .join("release")
        })
    }

    /// Whether only ingest runs: --intake-only counts for the scenarios that measure intake.
    fn only_ingest(&self) -> bool {
        self.intake_only && matches!(self.scenario, Scenario::Throughput | Scenario::IntakeSingle)
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

async fn run(args: &Args) -> anyhow::Result<Report> {
    let clock = Instant::now();
    let mut setup = Setup::new(args)?;
    setup.broker_hop().await?;
    if args.scenario == Scenario::Hop {
        return Ok(setup.report);
    }
    let (mut ctx, mut stack, producer) = setup.start(clock).await?;
    match args.scenario {
        Scenario::Throughput => scenarios::throughput::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::IntakeSingle => scenarios::intake::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::E2eSingle => scenarios::e2e_single::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Latency => scenarios::latency::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Scaleout => scenarios::scaleout::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Memory => scenarios::memory::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Soak => scenarios::soak::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Replay => scenarios::replay::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Paging => scenarios::paging::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Ordered => scenarios::ordered::run(&mut ctx, &mut stack, &producer).await?,
        Scenario::Hop => {}
    }
    stack.check_alive()?;
    if let Some(tokens) = &ctx.tokens {
        let issued = tokens.issued();
        eprintln!("herald-load: the token endpoint issued {issued} tokens");
        if let Some(phase) = ctx.report.phases.last_mut() {
            phase.counts.push(("oauth2 tokens issued".into(), issued));
        }
    }
    eprintln!("herald-load: logs in {}", stack.log_dir().display());
    drop(stack);
    Ok(ctx.report)
}
