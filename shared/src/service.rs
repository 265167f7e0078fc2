//! The skeleton every service runs on: named tasks under one cancellation, a `wait` that turns
//! a task dying on its own into an error naming it (so `main` exits non-zero instead of a
//! process that looks alive), and the start-up the router and deliverer share: Redis, the
//! broker, the configuration cache, the ops endpoints and one consume loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use futures::future::select_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amqp::{consume, Broker, ByteBudget, ConsumeFrom, Handled, Message, Publisher};
use crate::config::CommonSettings;
use crate::ops::QueueDepths;
use crate::store::{ConfigCache, Store};

/// A task of a service ended in a way that means the service cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// It returned while nothing had asked the service to stop.
    #[error("the {0} task stopped on its own")]
    Stopped(&'static str),
    /// It panicked.
    #[error("the {0} task panicked")]
    Panicked(&'static str),
}

/// A started service: where it listens and its named tasks.
pub struct Running {
    /// Where the service's HTTP endpoints are served.
    pub addr: SocketAddr,
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    /// A service listening at `addr` whose tasks stop when `cancel` fires.
    pub fn new(
        addr: SocketAddr,
        cancel: CancellationToken,
        tasks: Vec<(&'static str, JoinHandle<()>)>,
    ) -> Self {
        Self {
            addr,
            cancel,
            tasks,
        }
    }

    /// Waits until every task ended. A task that ends before the service was asked to stop, or
    /// panics, stops the others (they drain as on a signal) and is the error returned.
    pub async fn wait(self) -> Result<(), ServiceError> {
        let (names, mut handles): (Vec<_>, Vec<_>) = self.tasks.into_iter().unzip();
        let mut names = names;
        let mut failure = None;
        while !handles.is_empty() {
            let (result, index, rest) = select_all(handles).await;
            let name = names.remove(index);
            handles = rest;
            let error = match result {
                Err(e) if e.is_panic() => Some(ServiceError::Panicked(name)),
                _ if !self.cancel.is_cancelled() => Some(ServiceError::Stopped(name)),
                _ => None,
            };
            if let Some(error) = error {
                tracing::error!(task = name, %error, "a critical task ended; stopping the service");
                self.cancel.cancel();
                failure.get_or_insert(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// What a worker's handler is built from.
pub struct Worker {
    /// Redis.
    pub store: Store,
    /// The broker, to publish on.
    pub publisher: Publisher,
    /// Workspaces, connections and rules, cached.
    pub cache: Arc<ConfigCache>,
}

/// Which worker, where its endpoints listen and what it consumes.
pub struct WorkerSpec {
    /// The connection name shown by the broker (`herald-router`).
    pub name: &'static str,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub addr: SocketAddr,
    /// The setting that chose `addr`, for the error when it cannot be bound.
    pub addr_setting: &'static str,
    /// The queue consumed.
    pub queue: &'static str,
    /// Unacknowledged messages held at once.
    pub prefetch: u16,
    /// A second queue consumed with the same handler, one message at a time (the router's
    /// ordered events: handled strictly one after the other).
    pub serial_queue: Option<&'static str>,
    /// Bytes of message bodies handled at once, when bounded.
    pub budget: Option<ByteBudget>,
    /// Whether this worker samples every queue's depth into metrics.
    pub queue_depths: QueueDepths,
    /// Work that outlives its message (acknowledged before it finished): on shutdown it is
    /// drained after the consumer and before the broker connection closes, since it may still
    /// publish.
    pub background: Option<TaskTracker>,
    /// Whether this worker trims the history of workspaces that stopped writing, and moves
    /// final history to the archive when it is on.
    pub sweeps_history: bool,
}

/// Starts a worker: connects to Redis and the broker, serves the ops endpoints, and consumes
/// `spec.queue` with the handler `make` builds, until `cancel` fires (then drains for
/// `HERALD_DRAIN_TIMEOUT`).
pub async fn start_worker<M, H, F>(
    common: &CommonSettings,
    spec: WorkerSpec,
    cancel: CancellationToken,
    make: M,
) -> anyhow::Result<Running>
where
    M: FnOnce(Worker) -> H,
    H: Fn(Arc<Message>) -> F + Send + Sync + 'static,
    F: Future<Output = Handled> + Send + 'static,
{
    let _ = crate::telemetry::metrics();
    let store = Store::connect(common, &cancel)
        .await
        .context("connecting to Redis")?;
    let broker = Broker::new(common, spec.name);
    let cache = ConfigCache::new(store.clone());
    let (addr, ops) = crate::ops::serve(spec.addr, broker.clone(), store.clone(), cancel.clone())
        .await
        .with_context(|| format!("binding {} {}", spec.addr_setting, spec.addr))?;
    // The broker connection outlives the consumer, so in-flight work can still publish and ack
    // while draining; it closes once the consumer has finished.
    let broker_cancel = CancellationToken::new();
    let supervise = tokio::spawn(broker.clone().supervise(broker_cancel.clone()));
    let refresh = tokio::spawn(cache.clone().refresh(common.config_refresh, cancel.clone()));
    let watch = tokio::spawn(crate::ops::watch(
        broker.clone(),
        store.clone(),
        spec.queue_depths,
        cancel.clone(),
    ));
    let sweep = spec
        .sweeps_history
        .then(|| tokio::spawn(store.clone().sweep_idle_histories(cancel.clone())));
    let archiver = (spec.sweeps_history && store.archive().is_some())
        .then(|| tokio::spawn(store.clone().run_archiver(cancel.clone())));
    let publisher = Publisher::new(broker);
    let handler = make(Worker {
        store,
        publisher: publisher.clone(),
        cache,
    });
    let handler = Arc::new(handler);
    let serial = spec.serial_queue.map(|queue| {
        let handler = handler.clone();
        consume(
            publisher.clone(),
            ConsumeFrom {
                queue,
                prefetch: 1,
                budget: None,
                in_order: true,
            },
            cancel.clone(),
            common.drain_timeout,
            move |m| handler(m),
        )
    });
    let consuming = consume(
        publisher,
        ConsumeFrom {
            queue: spec.queue,
            prefetch: spec.prefetch,
            budget: spec.budget,
            in_order: false,
        },
        cancel.clone(),
        common.drain_timeout,
        move |m| handler(m),
    );
    let consuming = async move {
        match serial {
            Some(serial) => {
                futures::future::join(consuming, serial).await;
            }
            None => consuming.await,
        }
    };
    let background = spec.background;
    let drain = common.drain_timeout;
    let consume = tokio::spawn(async move {
        consuming.await;
        if let Some(tracker) = background {
            tracker.close();
            if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
                tracing::warn!("drain timeout: background work still running is abandoned");
            }
        }
        broker_cancel.cancel();
    });
    let mut tasks = vec![
        ("consumer", consume),
        ("broker supervisor", supervise),
        ("configuration refresh", refresh),
        ("connection watch", watch),
        ("ops server", ops),
    ];
    tasks.extend(sweep.map(|task| ("history sweep", task)));
    tasks.extend(archiver.map(|task| ("archiver", task)));
    tasks.extend(metrics_server(common, &cancel).await?);
    Ok(Running::new(addr, cancel, tasks))
}

/// The `/metrics` server of `HERALD_METRICS_ADDR`, when it is set.
pub async fn metrics_server(
    common: &CommonSettings,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<(&'static str, JoinHandle<()>)>> {
    let Some(addr) = common.metrics_addr else {
        return Ok(None);
    };
    let (_, task) = crate::ops::serve_metrics(addr, cancel.clone())
        .await
        .with_context(|| format!("binding HERALD_METRICS_ADDR {addr}"))?;
    Ok(Some(("metrics server", task)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service of these tasks, stopped by `cancel`.
    fn running(cancel: &CancellationToken, tasks: Vec<(&'static str, JoinHandle<()>)>) -> Running {
        Running::new(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone(), tasks)
    }

    /// A task that runs until the service is cancelled, as a healthy one does.
    fn until_cancelled(cancel: &CancellationToken) -> JoinHandle<()> {
        let cancel = cancel.clone();
        tokio::spawn(async move { cancel.cancelled().await })
    }

    #[tokio::test]
    async fn a_task_that_stops_on_its_own_stops_the_service_and_is_named() {
        let cancel = CancellationToken::new();
        let running = running(
            &cancel,
            vec![
                ("consumer", until_cancelled(&cancel)),
                ("HTTP server", tokio::spawn(async {})),
            ],
        );
        let err = running.wait().await.expect_err("a task died");
        assert_eq!(err.to_string(), "the HTTP server task stopped on its own");
        assert!(cancel.is_cancelled(), "the others were told to stop");
    }

    #[tokio::test]
    async fn a_panicking_task_is_named() {
        let cancel = CancellationToken::new();
        let running = running(
            &cancel,
            vec![
                (
                    "consumer",
                    tokio::spawn(async { panic!("a bug, on purpose") }),
                ),
                ("ops server", until_cancelled(&cancel)),
            ],
        );
        let err = running.wait().await.expect_err("a task panicked");
        assert!(matches!(err, ServiceError::Panicked("consumer")), "{err}");
    }

    #[tokio::test]
    async fn a_shutdown_asked_for_is_not_an_error() {
        let cancel = CancellationToken::new();
        let running = running(
            &cancel,
            vec![
                ("consumer", until_cancelled(&cancel)),
                ("ops server", until_cancelled(&cancel)),
            ],
        );
        cancel.cancel();
        running.wait().await.expect("a clean stop");
    }
}
