//! Throughput: bulk intake as fast as possible (or at --rate) for --duration, then every
//! accepted event delivered: intake events/s, and deliveries/s end to end and sustained.

use std::time::{Duration, Instant};

use super::measure::{
    delivery_figures, intake_figures, note_failures, pipeline_counts, wait_delivered, window,
};
use super::Ctx;
use crate::produce::{self, Producer};
use crate::report::Phase;
use crate::stack::Stack;

/// Runs the throughput scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let intake_only = args.only_ingest();
    let body = produce::body(args.batch(), args.payload_bytes);
    eprintln!(
        "herald-load: throughput: {} producers, {} events per request, {:.0} s",
        args.producers,
        args.batch(),
        args.duration().as_secs_f64()
    );
    let usage = window(stack);
    let started = Instant::now();
    let until = started + args.duration();
    let sent = match args.rate {
        Some(rate) => {
            let period = Duration::from_secs_f64(args.batch() as f64 / rate);
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
        counts.extend(pipeline_counts(stack).await);
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
