//! E2e-single: --clients clients each sending one event per request, back to back, for
//! --duration, with the whole stack running; then every accepted event delivered and verified.
//! Deliveries/s end to end (first 202 to last arrival) and sustained, each as a ratio of the
//! broker hop, and the time from each event's 202 to its arrival.

use std::time::Instant;

use super::measure::{deliveries_after, note_failures, pipeline_counts, window};
use super::Ctx;
use crate::produce::{self, Producer};
use crate::report::Phase;
use crate::stack::Stack;

/// Runs the e2e-single scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    eprintln!(
        "herald-load: e2e-single: {} clients, one event per request, {:.0} s",
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
    let intake_seconds = started.elapsed().as_secs_f64();
    let (figures, d, complete) = deliveries_after(
        ctx,
        stack,
        &sent,
        intake_seconds,
        "intake events/s (single)",
    )
    .await?;
    note_failures(ctx, &sent, complete);
    let mut counts = d.counts;
    counts.extend(pipeline_counts(stack).await);
    ctx.report.phases.push(Phase {
        name: format!("e2e-single ({} clients)", args.clients),
        figures,
        counts,
        usage: usage.finish(),
        deliveries_per_second: d.per_second,
    });
    Ok(())
}
