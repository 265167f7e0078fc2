//! Latency: a steady --rate of events: time from intake's 202 to arrival at the receiver.

use std::time::{Duration, Instant};

use super::measure::{delivery_figures, intake_figures, note_failures, wait_delivered, window};
use super::Ctx;
use crate::produce::{self, Producer};
use crate::report::Phase;
use crate::stack::Stack;

/// Runs the latency scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
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
    // Room for 200 ms of requests (1,000 at 5,000 events/s): a slow moment shows as latency;
    // only an intake that stays behind runs into the limit and shows as failed requests.
    let max_in_flight = args
        .clients
        .max(256)
        .max((rate * 0.2 / batch as f64) as usize);
    let sent = produce::open_loop(
        producer,
        period,
        max_in_flight,
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
