//! The scenarios, one module each, and what they measure in common.
//!
//! - [`throughput`]: bulk intake flat out (or at --rate), then every accepted event delivered.
//! - [`intake`]: many clients sending one event per request.
//! - [`e2e_single`]: single-event requests as fast as the stack takes them, every event
//!   delivered.
//! - [`latency`]: a steady rate of events, timed from intake's 202 to the receiver.
//! - [`scaleout`]: a slow receiver with one deliverer, then several.
//! - [`memory`]: a very slow receiver holding about a thousand deliveries in flight.
//! - [`soak`]: a steady rate for minutes, sampling Redis's memory and the services' RSS.
//! - [`replay`]: thousands of dead letters replayed by one filtered request.
//! - [`paging`]: a long event list walked by cursor, its first, 50th and last pages timed.
//! - [`ordered`]: one connection delivering in order over many keys (or one), checked.
//! - [`measure`]: the CPU window, waiting for deliveries, the intake and delivery figures, and
//!   the burst phase scaleout and memory share.

pub mod e2e_single;
pub mod intake;
pub mod latency;
pub mod measure;
pub mod memory;
pub mod ordered;
pub mod paging;
pub mod replay;
pub mod scaleout;
pub mod soak;
pub mod throughput;

use std::sync::Arc;

use crate::receiver::Receiver;
use crate::report::Report;
use crate::stack::Configured;
use crate::Args;

/// What every scenario shares.
pub struct Ctx<'a> {
    /// The command line.
    pub args: &'a Args,
    /// The verifying receiver.
    pub receiver: Arc<Receiver>,
    /// The report the scenario adds its phases, ratios and warnings to.
    pub report: Report,
    /// The run's workspace: its keys and the connections' signing secret.
    pub workspace: Configured,
    /// The run's Redis key prefix.
    pub redis_prefix: String,
    /// The token endpoint, with --destination-security oauth2.
    pub tokens: Option<herald_e2e::TokenServer>,
}
