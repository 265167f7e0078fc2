//! Scaleout: a receiver taking 50 ms per request, --events with one deliverer, then with
//! --scaleout-deliverers: the ratio of the two delivery rates.

use std::time::Duration;

use super::measure::{burst_phase, Delivered};
use super::Ctx;
use crate::produce::Producer;
use crate::stack::Stack;

/// Runs the scaleout scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
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
