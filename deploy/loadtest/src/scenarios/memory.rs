//! Memory: a receiver taking 2 s per request and a burst of --events, so that about a thousand
//! deliveries are in flight at once: the deliverers' peak RSS.

use std::sync::atomic::Ordering;

use anyhow::bail;

use super::measure::burst_phase;
use super::Ctx;
use crate::procstat;
use crate::produce::Producer;
use crate::report::Figure;
use crate::stack::{self, Stack};

/// Runs the memory scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
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
