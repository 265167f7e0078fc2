//! The scenarios, one module each, and what they measure in common.
//!
//! - [`throughput`]: bulk intake flat out (or at --rate), then every accepted event delivered.
//! - [`intake`]: many clients sending one event per request.
//! - [`latency`]: a steady rate of events, timed from intake's 202 to the receiver.
//! - [`scaleout`]: a slow receiver with one deliverer, then several.
//! - [`memory`]: a very slow receiver holding about a thousand deliveries in flight.
//! - [`paging`]: a 100,000-event history listed page by page: page 1, page 50, the last page.
//! - [`measure`]: the CPU window, waiting for deliveries, the intake and delivery figures, and
//!   the burst phase scaleout and memory share.

pub mod intake;
pub mod latency;
pub mod measure;
pub mod memory;
pub mod paging;
pub mod scaleout;
pub mod throughput;

use std::sync::Arc;

use crate::receiver::Receiver;
use crate::report::Report;
use crate::Args;

/// What every scenario shares.
pub struct Ctx<'a> {
    /// The command line.
    pub args: &'a Args,
    /// The verifying receiver.
    pub receiver: Arc<Receiver>,
    /// The report the scenario adds its phases, ratios and warnings to.
    pub report: Report,
}
