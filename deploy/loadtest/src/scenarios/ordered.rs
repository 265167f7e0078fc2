//! Ordered: one connection with `"ordering": "per_resource"`, its events spread over --keys
//! resources, sent in bulk requests one after the other (each waits for the last one's 202, so
//! the order sent is intake's order); then every event delivered, and each key checked at the
//! receiver to arrive complete and in order. Deliveries/s end to end as a ratio of the hop.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::measure::{deliveries_after, note_failures, window};
use super::Ctx;
use crate::produce::{self, Producer, Sent};
use crate::report::Phase;
use crate::stack::Stack;

/// Runs the ordered scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let keys = args.keys.max(1);
    let events = args.events.unwrap_or(20_000);
    let batch = args.batch() as u64;
    eprintln!(
        "herald-load: ordered: {events} events over {keys} keys, receiver {} ms per request",
        args.delay().as_millis()
    );
    ctx.receiver.check_order();
    let usage = window(stack);
    let started = Instant::now();
    let mut sent = Sent::default();
    let mut first = 0;
    while first < events {
        let n = batch.min(events - first);
        let before = sent.accepted.len();
        let body = produce::ordered_body(first, n, keys, args.payload_bytes);
        producer.send(true, body, &mut sent).await;
        if (sent.accepted.len() - before) as u64 != n {
            // A gap in a key would read as disorder at the receiver.
            anyhow::bail!(
                "a bulk request was not accepted whole: {}",
                sent.first_error.as_deref().unwrap_or("events refused")
            );
        }
        first += n;
    }
    let intake_seconds = started.elapsed().as_secs_f64();
    let (figures, d, complete) = deliveries_after(
        ctx,
        stack,
        &sent,
        intake_seconds,
        "intake events/s (bulk, serial)",
    )
    .await?;
    let mut counts = d.counts;
    let disorder = ctx.receiver.out_of_order.load(Ordering::Relaxed);
    counts.push(("keys".into(), keys));
    counts.push(("arrivals out of order".into(), disorder));
    if disorder > 0 && args.ordering != "none" {
        ctx.report
            .warnings
            .push(format!("{disorder} arrivals were out of their key's order"));
    }
    note_failures(ctx, &sent, complete);
    ctx.report.phases.push(Phase {
        name: format!(
            "ordered ({keys} keys, ordering {}, receiver {} ms)",
            args.ordering,
            args.delay().as_millis()
        ),
        figures,
        counts,
        usage: usage.finish(),
        deliveries_per_second: d.per_second,
    });
    Ok(())
}
