//! Everything a deliverer's jobs go through, in one place: what the stages (`worker`,
//! `flight`, `admit`, `settle`) share.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use herald_shared::config::DelivererSettings;
use herald_shared::store::ConfigCache;

use crate::admit::Gate;
use crate::dispatch::Dispatcher;
use crate::settle::Settler;

/// Everything a deliverer's jobs go through.
pub struct Deliverer {
    /// Settings.
    pub settings: DelivererSettings,
    /// Workspaces and connections, cached.
    pub cache: Arc<ConfigCache>,
    /// Sends requests.
    pub dispatcher: Dispatcher,
    /// Admission: slots, rate limits, breakers.
    pub gate: Gate,
    /// Writes outcomes and publishes what follows them.
    pub settler: Settler,
    /// Fires on shutdown: jobs not yet started are handed back instead of sent.
    pub shutdown: CancellationToken,
    /// Jobs finishing after their message was acknowledged; shutdown waits for them.
    pub detached: TaskTracker,
    /// This process, as named in the breaker history (host and pid).
    pub name: String,
}
