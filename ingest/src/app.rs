//! Start-up: connect to Redis and the broker, build the state and the router, serve until
//! cancelled, and drain background work before the broker connection closes.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use herald_shared::amqp::{Broker, Publisher};
use herald_shared::config::IngestSettings;
use herald_shared::ratelimit::RateLimiter;
use herald_shared::service::Running;
use herald_shared::store::Store;

use crate::routes;
use crate::state::AppState;

/// Connects to Redis and the broker, binds the address and serves until `cancel`.
pub async fn start(settings: IngestSettings, cancel: CancellationToken) -> anyhow::Result<Running> {
    let _ = herald_shared::telemetry::metrics();
    let store = Store::connect(&settings.common, &cancel)
        .await
        .context("connecting to Redis")?;
    let reseal = store.clone();
    tokio::spawn(async move {
        match reseal.reseal_connections().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                count = n,
                "re-sealed connection secrets with the current key"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "re-sealing connection secrets failed; will retry at next start")
            }
        }
    });
    let broker = Broker::new(&settings.common, "herald-ingest");
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding HERALD_INGEST_ADDR {}", settings.addr))?;
    let addr = listener.local_addr()?;
    let background = tokio_util::task::TaskTracker::new();
    let watch = tokio::spawn(herald_shared::ops::watch(
        broker.clone(),
        store.clone(),
        herald_shared::ops::QueueDepths::Skip,
        cancel.clone(),
    ));
    let settings_common = settings.common.clone();
    if let Some(operator) = &settings.common.operational_webhook {
        herald_shared::opwebhooks::ensure_operator(&store, operator)
            .await
            .context("writing the operational webhook endpoint (HERALD_OPERATIONAL_WEBHOOK_URL)")?;
    }
    let config = herald_shared::store::ConfigCache::new(store.clone());
    let refresh = tokio::spawn(
        config
            .clone()
            .refresh(settings.common.config_refresh, cancel.clone()),
    );
    let state = AppState {
        config,
        ops: herald_shared::opwebhooks::Notifier::new(
            store.clone(),
            Publisher::new(broker.clone()),
            settings.common.operational_webhook.is_some(),
        ),
        batcher: crate::batcher::Batcher::start(Publisher::new(broker.clone())),
        keys: Arc::new(crate::keys::KeyCache::new(settings.common.config_refresh)),
        settings: Arc::new(settings),
        limiter: RateLimiter::new(store.clone()),
        store,
        publisher: Publisher::new(broker.clone()),
        background: background.clone(),
        replays: crate::replay::Replays::new(cancel.clone()),
    };
    // Bulk replays an ingest left unfinished (it died, or stopped) go on here.
    background.spawn(crate::replay::resume_waiting(state.clone()));
    // The broker connection outlives the HTTP server so background replays can finish.
    let broker_cancel = CancellationToken::new();
    let supervise = tokio::spawn(broker.supervise(broker_cancel.clone()));
    let metrics = herald_shared::service::metrics_server(&settings_common, &cancel).await?;
    let app = routes::router(state);
    let cancel_all = cancel.clone();
    let server = tokio::spawn(async move {
        let shutdown = cancel.clone();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
        background.close();
        background.wait().await;
        broker_cancel.cancel();
    });
    let mut tasks = vec![
        ("HTTP server", server),
        ("broker supervisor", supervise),
        ("connection watch", watch),
        ("configuration refresh", refresh),
    ];
    tasks.extend(metrics);
    Ok(Running::new(addr, cancel_all, tasks))
}
