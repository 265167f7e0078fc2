//! Soak: a steady --rate of events (bulk requests of --batch) for --duration, sampled every
//! --sample-every seconds: Redis's `used_memory`, bytes per delivered event, each service's RSS
//! and deliveries/s. Once every accepted event arrived, a last sample and a census of the run's
//! Redis keys give the state each event leaves behind, split by structure.
//!
//! Whether state stays bounded shows in the last half of the run against its middle: under a
//! retention shorter than the run, `used_memory` stops growing. Runs with --fail-first K and
//! --connections N beside a plain one give the cost of each further attempt and connection.
//!
//! With the archive on (`--set HERALD_ARCHIVE_URL=postgres://...`), the router's
//! `herald_archive_lag_seconds` is read twice a second (its p50, p99 and max are reported), and
//! once delivery finished, the archive's rows and PostgreSQL bytes per archived event.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::measure::{note_failures, wait_delivered, window};
use super::Ctx;
use crate::procstat;
use crate::produce::{self, Producer};
use crate::redisstat::RedisStat;
use crate::report::{Figure, Phase, Tick};
use crate::stack::{self, Stack};
use herald_e2e::procs::ROUTER;

/// Requests the open loop keeps outstanding before it counts one as refused.
const MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// Runs the soak scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let rate = args.rate.unwrap_or(1000.0);
    let batch = args.batch();
    let connections = args.connections.max(1) as u64;
    let every = Duration::from_secs_f64(args.sample_every.max(1.0));
    eprintln!(
        "herald-load: soak: {rate:.0} events/s in requests of {batch}, {} connection(s), \
         {} refused attempt(s) per delivery, {:.0} s",
        connections,
        args.fail_first,
        args.duration().as_secs_f64()
    );
    let mut redis = RedisStat::connect(&args.redis_url, &ctx.redis_prefix).await?;
    let census_before = redis.census().await?;
    let others_before = redis.dbsize().await?.saturating_sub(census_before.keys);
    ctx.receiver.reset();
    let usage = window(stack);
    let baseline = redis.used_memory().await?;

    let started = Instant::now();
    let mut load = {
        let producer = producer.clone();
        let body = produce::body(batch, args.payload_bytes);
        let period = Duration::from_secs_f64(batch as f64 / rate);
        let until = started + args.duration();
        tokio::spawn(async move {
            produce::open_loop(&producer, period, MAX_REQUESTS_IN_FLIGHT, true, body, until).await
        })
    };
    let mut sampler = Sampler {
        started,
        baseline,
        connections,
        last: (0.0, 0),
    };
    let lag = stack
        .setting("HERALD_ARCHIVE_URL")
        .map(|_| LagSampler::start(format!("http://{}/metrics", stack.proc(ROUTER).addr)));
    let mut ticks = Vec::new();
    let mut interval = tokio::time::interval(every);
    // Samples while the load runs; the one after delivery is taken apart.
    let sent = loop {
        tokio::select! {
            sent = &mut load => break sent?,
            _ = interval.tick() => {}
        }
        let t = sampler.sample(ctx, stack, &mut redis).await?;
        eprintln!(
            "herald-load: soak: {:>5.0} s  {:>8} events delivered  {:>6.0}/s  used_memory {:.1} MiB",
            t.t_s,
            t.delivered_events,
            t.deliveries_per_s,
            t.used_memory as f64 / (1024.0 * 1024.0)
        );
        ticks.push(t);
        stack.check_alive()?;
    };
    let load_seconds = started.elapsed().as_secs_f64();
    let expected = sent.accepted.len() * connections as usize;
    eprintln!(
        "herald-load: {} events accepted in {load_seconds:.1} s; waiting for {expected} deliveries",
        sent.accepted.len()
    );
    let complete = wait_delivered(ctx, stack, expected).await?;
    // An attempt's outcome is written a moment after its answer: let the last ones land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drained = sampler.sample(ctx, stack, &mut redis).await?;
    let census = redis.census().await?;
    let others_after = redis.dbsize().await?.saturating_sub(census.keys);

    let mut figures = summary(ctx, &ticks, args.duration().as_secs_f64());
    if let Some(lag) = lag {
        figures.extend(lag.finish().await);
        if let Some(url) = stack.setting("HERALD_ARCHIVE_URL") {
            figures.extend(archive_figures(url).await?);
        }
    }
    // Every accepted event leaves its state, delivered or not (a shortfall is warned about).
    let events = sent.accepted.len().max(1) as f64;
    figures.push(figure(
        "used_memory added per event, after delivery",
        drained.used_memory as f64 - baseline as f64,
        events,
        "B",
    ));
    figures.push(figure(
        "run's keys (MEMORY USAGE) per event",
        census.bytes as f64 - census_before.bytes as f64,
        events,
        "B",
    ));
    figures.push(figure(
        "run's keys per event",
        census.keys as f64 - census_before.keys as f64,
        events,
        "keys",
    ));
    // The shapes that grow with events (the configuration's few keys are in the census table).
    for k in census.kinds.iter().filter(|k| k.bytes as f64 >= events) {
        figures.push(figure(
            &format!("  {} ({})", k.pattern, k.kind),
            k.bytes as f64,
            events,
            "B",
        ));
    }

    note_failures(ctx, &sent, complete);
    if others_before != others_after {
        ctx.report.warnings.push(format!(
            "keys of other installations changed during the run ({others_before} -> \
             {others_after}): used_memory includes their writes; the census of the run's keys \
             does not"
        ));
    }
    let r = &ctx.receiver;
    let delivered = r.unique() as u64;
    let counts = vec![
        ("events accepted".to_string(), sent.accepted.len() as u64),
        ("deliveries".into(), delivered),
        ("events delivered".into(), drained.delivered_events),
        (
            "missing deliveries".into(),
            (expected as u64).saturating_sub(delivered),
        ),
        (
            "attempts refused (500)".into(),
            r.refused.load(Ordering::Relaxed),
        ),
        ("duplicates".into(), r.duplicates.load(Ordering::Relaxed)),
        (
            "signature failures".into(),
            r.failures.load(Ordering::Relaxed),
        ),
        ("failed requests".into(), sent.failed_requests),
        ("run's Redis keys".into(), census.keys),
    ];
    ticks.push(drained);
    ctx.report.phases.push(Phase {
        name: format!(
            "soak: {rate:.0} events/s for {load_seconds:.0} s, {connections} connection(s), \
             {} refused attempt(s) per delivery",
            args.fail_first
        ),
        figures,
        counts,
        usage: usage.finish(),
        deliveries_per_second: Vec::new(),
    });
    ctx.report.timeline = ticks;
    ctx.report.redis_keys = Some(census);
    Ok(())
}

/// Takes the samples: the rate since the previous one, Redis, and every service's RSS.
struct Sampler {
    started: Instant,
    baseline: u64,
    connections: u64,
    /// Seconds and deliveries at the previous sample.
    last: (f64, u64),
}

impl Sampler {
    async fn sample(
        &mut self,
        ctx: &Ctx<'_>,
        stack: &Stack,
        redis: &mut RedisStat,
    ) -> anyhow::Result<Tick> {
        let t_s = self.started.elapsed().as_secs_f64();
        let deliveries = ctx.receiver.unique() as u64;
        let used_memory = redis.used_memory().await?;
        let delivered_events = deliveries / self.connections;
        let rate = (deliveries - self.last.1) as f64 / (t_s - self.last.0).max(1e-3);
        self.last = (t_s, deliveries);
        let rss_mib = stack::watched(stack)
            .into_iter()
            .map(|w| {
                (
                    w.name,
                    procstat::status_mib(w.pid, "VmRSS").unwrap_or(f64::NAN),
                )
            })
            .collect();
        Ok(Tick {
            t_s,
            delivered_events,
            deliveries_per_s: rate,
            used_memory,
            bytes_per_event: (delivered_events > 0)
                .then(|| (used_memory as f64 - self.baseline as f64) / delivered_events as f64),
            rss_mib,
        })
    }
}

/// `total / per` as a figure.
fn figure(name: &str, total: f64, per: f64, unit: &'static str) -> Figure {
    Figure {
        name: name.into(),
        value: total / per,
        unit,
        vs_broker_hop: None,
    }
}

/// Min, max and last of each series over the load, and the last half against the middle.
fn summary(ctx: &Ctx<'_>, ticks: &[Tick], duration: f64) -> Vec<Figure> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    // The first sample is taken as the load starts: it has no rate yet.
    let loaded = ticks.get(1..).unwrap_or_default();
    let mut out = Vec::new();
    let rates: Vec<f64> = loaded.iter().map(|t| t.deliveries_per_s).collect();
    out.extend(spread(ctx, "deliveries/s", "/s", &rates));
    let used: Vec<f64> = loaded.iter().map(|t| mib(t.used_memory)).collect();
    out.extend(spread(ctx, "Redis used_memory", "MiB", &used));
    let per_event: Vec<f64> = loaded.iter().filter_map(|t| t.bytes_per_event).collect();
    out.extend(spread(ctx, "used_memory added per event", "B", &per_event));
    if let Some(first) = ticks.first() {
        for (i, (name, _)) in first.rss_mib.iter().enumerate() {
            let rss: Vec<f64> = loaded
                .iter()
                .filter_map(|t| Some(t.rss_mib.get(i)?.1))
                .collect();
            out.extend(spread(ctx, &format!("{name} RSS"), "MiB", &rss));
        }
    }
    let middle = ticks.iter().min_by(|a, b| {
        (a.t_s - duration / 2.0)
            .abs()
            .total_cmp(&(b.t_s - duration / 2.0).abs())
    });
    if let (Some(first), Some(mid), Some(last)) = (ticks.first(), middle, ticks.last()) {
        let growth = |a: &Tick, b: &Tick| {
            (b.used_memory as f64 - a.used_memory as f64)
                / (b.delivered_events as f64 - a.delivered_events as f64).max(1.0)
        };
        // Against what the run had added by the middle, not against the whole server's memory,
        // which other installations may hold: about 100 % while state grows with every event,
        // near 0 once it is bounded.
        let added_by_middle = mid.used_memory as f64 - first.used_memory as f64;
        out.push(Figure {
            name: "used_memory added in the last half, vs by the middle".into(),
            value: (last.used_memory as f64 - mid.used_memory as f64) / added_by_middle.max(1.0)
                * 100.0,
            unit: "%",
            vs_broker_hop: None,
        });
        out.push(figure(
            "used_memory added per event, first half",
            growth(first, mid),
            1.0,
            "B",
        ));
        out.push(figure(
            "used_memory added per event, last half",
            growth(mid, last),
            1.0,
            "B",
        ));
    }
    out
}

/// Min, max and last of a series.
fn spread(ctx: &Ctx<'_>, name: &str, unit: &'static str, values: &[f64]) -> Vec<Figure> {
    let Some(&last) = values.last() else {
        return Vec::new();
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    [("min", min), ("max", max), ("last", last)]
        .into_iter()
        .map(|(which, value)| {
            if unit == "/s" {
                ctx.report.rate(&format!("{name} {which}"), value)
            } else {
                Figure {
                    name: format!("{name} {which}"),
                    value,
                    unit,
                    vs_broker_hop: None,
                }
            }
        })
        .collect()
}

/// Reads the router's `herald_archive_lag_seconds` twice a second until finished.
struct LagSampler {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl LagSampler {
    fn start(url: String) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut seen = Vec::new();
                let mut every = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return seen,
                        _ = every.tick() => {}
                    }
                    let Ok(r) = http.get(&url).send().await else {
                        continue;
                    };
                    let Ok(text) = r.text().await else { continue };
                    if let Some(v) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("herald_archive_lag_seconds "))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                    {
                        seen.push(v);
                    }
                }
            })
        };
        Self { stop, task }
    }

    async fn finish(self) -> Vec<Figure> {
        self.stop.cancel();
        let mut seen = self.task.await.unwrap_or_default();
        if seen.is_empty() {
            return Vec::new();
        }
        seen.sort_by(f64::total_cmp);
        let at = |q: f64| seen[((seen.len() - 1) as f64 * q).round() as usize];
        [("p50", at(0.5)), ("p99", at(0.99)), ("max", at(1.0))]
            .into_iter()
            .map(|(which, value)| Figure {
                name: format!("archive lag {which} ({} samples)", seen.len()),
                value,
                unit: "s",
                vs_broker_hop: None,
            })
            .collect()
    }
}

/// The archive's rows and PostgreSQL bytes (tables and indexes) per archived event.
async fn archive_figures(url: &str) -> anyhow::Result<Vec<Figure>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM herald_history", &[])
        .await?
        .get(0);
    let bytes: i64 = client
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint \
             FROM pg_inherits WHERE inhparent = 'herald_history'::regclass",
            &[],
        )
        .await?
        .get(0);
    Ok(vec![
        figure("archived events", rows as f64, 1.0, "events"),
        figure(
            "PostgreSQL bytes per archived event",
            bytes as f64,
            (rows as f64).max(1.0),
            "B",
        ),
    ])
}
