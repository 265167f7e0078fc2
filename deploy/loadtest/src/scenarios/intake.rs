//! Intake-single: many clients sending one event per request for --duration: events/s accepted.

use std::time::Instant;

use super::measure::{intake_figures, note_failures, pipeline_counts, window};
use super::Ctx;
use crate::produce::{self, Producer};
use crate::report::Phase;
use crate::stack::Stack;

/// Runs the intake-single scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
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
    let mut counts = vec![
        ("events accepted".into(), sent.accepted.len() as u64),
        ("failed requests".into(), sent.failed_requests),
    ];
    counts.extend(pipeline_counts(stack).await);
    ctx.report.phases.push(Phase {
        name: format!("intake-single ({} clients)", args.clients),
        figures,
        counts,
        usage: usage.finish(),
        deliveries_per_second: Vec::new(),
    });
    Ok(())
}
