//! What the scenarios measure in common: CPU and memory over a phase, waiting until every
//! accepted event arrived, the intake and delivery figures, the warnings a phase can raise, and
//! the burst phase of scaleout and memory.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Ctx;
use crate::procstat;
use crate::produce::{self, Producer, Sent};
use crate::report::{percentile, Figure, Phase};
use crate::stack::{self, Stack};

/// Starts measuring CPU and memory of the services, the broker, Redis and this process.
pub fn window(stack: &Stack) -> procstat::Window {
    let mut w = stack::watched(stack);
    w.extend(procstat::infrastructure_and_self());
    procstat::Window::start(w)
}

/// Waits until every accepted event arrived at the receiver, or until nothing new arrived for
/// --stall-timeout; returns false in that case.
pub async fn wait_delivered(
    ctx: &Ctx<'_>,
    stack: &mut Stack,
    expected: usize,
) -> anyhow::Result<bool> {
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

/// Milliseconds from microseconds.
fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// Intake figures of a producer run.
pub fn intake_figures(ctx: &Ctx<'_>, sent: &Sent, seconds: f64, name: &str) -> Vec<Figure> {
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
pub struct Delivered {
    /// Rates and latency percentiles.
    pub figures: Vec<Figure>,
    /// Events accepted, delivered, missing; receiver and producer counters.
    pub counts: Vec<(String, u64)>,
    /// Deliveries in each second after the first 202.
    pub per_second: Vec<u64>,
    /// Deliveries/s over the middle 80 %.
    pub sustained: f64,
}

/// Takes the receiver's arrivals and matches them to the accepted events.
pub fn delivery_figures(ctx: &Ctx<'_>, sent: &Sent) -> Delivered {
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

/// After a producer run of `intake_seconds`: its intake figures (the rate named
/// `intake_name`), then every accepted event waited for and the delivery figures added to
/// them. Answers the figures, the delivery counts and rates, and whether every event arrived.
pub async fn deliveries_after(
    ctx: &Ctx<'_>,
    stack: &mut Stack,
    sent: &Sent,
    intake_seconds: f64,
    intake_name: &str,
) -> anyhow::Result<(Vec<Figure>, Delivered, bool)> {
    let mut figures = intake_figures(ctx, sent, intake_seconds, intake_name);
    eprintln!(
        "herald-load: {} events accepted in {intake_seconds:.1} s; waiting for deliveries",
        sent.accepted.len()
    );
    let complete = wait_delivered(ctx, stack, sent.accepted.len()).await?;
    let mut d = delivery_figures(ctx, sent);
    figures.append(&mut d.figures);
    Ok((figures, d, complete))
}

/// Adds the phase's warnings: failed requests, events that never arrived, bad signatures.
pub fn note_failures(ctx: &mut Ctx<'_>, sent: &Sent, complete: bool) {
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

/// Sends `events` in bulk requests as fast as the producers go and waits for them all.
pub async fn burst_phase(
    ctx: &mut Ctx<'_>,
    stack: &mut Stack,
    producer: &Producer,
    name: String,
    events: u64,
) -> anyhow::Result<Delivered> {
    let args = ctx.args;
    ctx.receiver.reset();
    let usage = window(stack);
    let sent = produce::exactly(args, producer, events).await;
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

/// A counter's value in a `/metrics` page (its series summed; 0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    herald_e2e::metrics::sum(text, name, &[]) as u64
}

/// The `/metrics` page of each process of `binary`, joined (empty when none answers).
async fn metrics_of(stack: &Stack, binary: &str) -> String {
    let mut pages = String::new();
    for p in stack.procs().iter().filter(|p| p.binary == binary) {
        if let Ok(response) = reqwest::get(format!("http://{}/metrics", p.addr)).await {
            pages.push_str(&response.text().await.unwrap_or_default());
        }
    }
    pages
}

/// How the pipeline handled the run's events, from the services' `/metrics`: how many the
/// router expanded and in how many jobs messages (so how many events the intake's group
/// commit put in one broker message on average), and how many jobs the deliverers deferred or
/// scheduled for a retry instead of sending (each goes round the broker again).
pub async fn pipeline_counts(stack: &Stack) -> Vec<(String, u64)> {
    let router = metrics_of(stack, herald_e2e::procs::ROUTER).await;
    let deliverers = metrics_of(stack, herald_e2e::procs::DELIVERER).await;
    let events = metric(&router, "herald_router_events_total");
    let messages = metric(&router, "herald_router_job_messages_total");
    let mut counts = vec![
        ("router events".into(), events),
        ("router jobs messages".into(), messages),
    ];
    if let Some(per_message) = (events * 10).checked_div(messages) {
        counts.push(("events per jobs message (x10)".into(), per_message));
    }
    counts.push((
        "jobs deferred".into(),
        metric(&deliverers, "herald_jobs_deferred_total"),
    ));
    counts.push((
        "retries scheduled".into(),
        metric(&deliverers, "herald_retries_scheduled_total"),
    ));
    counts
}
