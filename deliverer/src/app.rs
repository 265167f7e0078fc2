//! Start-up: the deliverer's parts wired together on the shared worker skeleton.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use herald_shared::amqp::topology::JOBS_QUEUE;
use herald_shared::amqp::Message;
use herald_shared::config::DelivererSettings;
use herald_shared::ops::QueueDepths;
use herald_shared::opwebhooks::{self, Notifier};
use herald_shared::ratelimit::RateLimiter;
use herald_shared::service::{start_worker, Running, WorkerSpec};

use crate::admit::Gate;
use crate::breaker::{Breakers, Policy as BreakerPolicy};
use crate::dispatch::Dispatcher;
use crate::failing::FailingClock;
use crate::settle::Settler;
use crate::state::Deliverer;

/// Connects, serves ops endpoints and starts consuming jobs.
pub async fn start(
    settings: DelivererSettings,
    cancel: CancellationToken,
) -> anyhow::Result<Running> {
    let dispatcher = Dispatcher::new(settings.destinations.clone(), settings.egress_proxy.clone())
        .context("building the HTTP client")?;
    let detached = TaskTracker::new();
    let spec = WorkerSpec {
        name: "herald-deliverer",
        addr: settings.addr,
        addr_setting: "HERALD_DELIVERER_ADDR",
        queue: JOBS_QUEUE,
        prefetch: settings.prefetch,
        serial_queue: None,
        // A jobs message is bounded by HERALD_ROUTER_JOBS_PER_MESSAGE, so the prefetch bounds
        // its bytes too.
        budget: None,
        queue_depths: QueueDepths::Skip,
        // Jobs that finish after their message was acknowledged (see `flight`); a process
        // killed instead of drained leaves them to their stand-ins.
        background: Some(detached.clone()),
        sweeps_history: false,
    };
    let common = settings.common.clone();
    let shutdown = cancel.clone();
    start_worker(&common, spec, cancel, move |worker| {
        let breakers = Breakers::new(BreakerPolicy {
            failures: settings.breaker_failures,
            cooldown: settings.breaker_cooldown,
            max_cooldown: settings.breaker_max_cooldown,
            probe_timeout: settings.breaker_probe_timeout,
        });
        let gate = Gate::new(
            settings.concurrency,
            settings.connection_concurrency,
            settings.connection_wait,
            RateLimiter::new(worker.store.clone()),
            breakers,
            shutdown.clone(),
        );
        let auto_disable_after = settings.auto_disable_after;
        let operator = settings.common.operational_webhook.clone();
        let ops = Notifier::new(
            worker.store.clone(),
            worker.publisher.clone(),
            operator.is_some(),
        );
        if let Some(operator) = operator {
            let store = worker.store.clone();
            tokio::spawn(async move {
                let mut wait = std::time::Duration::from_millis(200);
                while let Err(e) = opwebhooks::ensure_operator(&store, &operator).await {
                    tracing::warn!(error = %e, "cannot write the operational webhook endpoint; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(10));
                }
            });
        }
        // Every deliverer sends the minutes of dead letters that are over; each is taken once.
        tokio::spawn(ops.clone().run_dead_letter_minutes(shutdown.clone()));
        let deliverer = Arc::new(Deliverer {
            settings,
            cache: worker.cache,
            dispatcher: dispatcher.with_tokens(worker.store.clone()),
            gate,
            settler: Settler {
                failing: FailingClock {
                    store: worker.store.clone(),
                    window: auto_disable_after,
                },
                store: worker.store,
                publisher: worker.publisher,
                ops,
            },
            shutdown,
            detached: detached.clone(),
            name: format!(
                "{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "deliverer".into()),
                std::process::id()
            ),
        });
        move |message: Arc<Message>| {
            let deliverer = deliverer.clone();
            async move { deliverer.handle(&message).await }
        }
    })
    .await
}
