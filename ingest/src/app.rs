//! Application state, the route table, and start-up.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use herald_shared::amqp::Broker;
use herald_shared::config::IngestSettings;
use herald_shared::ratelimit::RateLimiter;
use herald_shared::store::Store;

use crate::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Settings.
    pub settings: Arc<IngestSettings>,
    /// Redis.
    pub store: Store,
    /// RabbitMQ.
    pub broker: Arc<Broker>,
    /// Background work (bulk replays) that shutdown waits for.
    pub background: tokio_util::task::TaskTracker,
    /// API keys seen recently.
    pub keys: Arc<crate::keys::KeyCache>,
    /// Single-event intake, grouped into broker messages.
    pub batcher: crate::batcher::Batcher,
    /// The intake rate limit, shared with every other ingest through Redis.
    pub limiter: RateLimiter,
}

/// A started ingest.
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until the server and its tasks ended (after cancellation).
    pub async fn wait(self) -> anyhow::Result<()> {
        for t in self.tasks {
            t.await.context("an ingest task panicked")?;
        }
        Ok(())
    }
}

/// The whole route table.
pub fn router(state: AppState) -> Router {
    let event_limit = state.settings.max_event_bytes;
    let bulk_limit = state.settings.max_bulk_bytes;
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route(
            "/v1/workspaces",
            post(routes::workspaces::create).get(routes::workspaces::list),
        )
        .route("/v1/keys/roll", post(routes::workspaces::roll_key))
        .route(
            "/v1/connections",
            post(routes::connections::create).get(routes::connections::list),
        )
        .route(
            "/v1/connections/{id}",
            get(routes::connections::get)
                .patch(routes::connections::update)
                .delete(routes::connections::delete),
        )
        .route(
            "/v1/connections/{id}/secret",
            get(routes::connections::secret),
        )
        .route(
            "/v1/connections/{id}/health",
            get(routes::connections::health),
        )
        .route(
            "/v1/connections/{id}/rotate-secret",
            post(routes::connections::rotate_secret),
        )
        .route(
            "/v1/rules",
            post(routes::rules::create).get(routes::rules::list),
        )
        .route(
            "/v1/rules/{id}",
            get(routes::rules::get)
                .patch(routes::rules::update)
                .delete(routes::rules::delete),
        )
        .route(
            "/v1/rules/{id}/test",
            post(routes::rules::test).layer(DefaultBodyLimit::max(event_limit)),
        )
        .route(
            "/v1/events",
            post(routes::events::create)
                .layer(DefaultBodyLimit::max(event_limit))
                .get(routes::events::list),
        )
        .route(
            "/v1/events/bulk",
            post(routes::events::bulk).layer(DefaultBodyLimit::max(bulk_limit)),
        )
        .route("/v1/events/{uuid}", get(routes::events::get))
        .route("/v1/dead-letters", get(routes::dead_letters::list))
        .route(
            "/v1/dead-letters/replay",
            post(routes::dead_letters::replay_many),
        )
        .route(
            "/v1/dead-letters/{id}",
            get(routes::dead_letters::get).delete(routes::dead_letters::discard),
        )
        .route(
            "/v1/dead-letters/{id}/replay",
            post(routes::dead_letters::replay_one),
        )
        .fallback(|| async { crate::error::ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

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
        false,
        cancel.clone(),
    ));
    let state = AppState {
        batcher: crate::batcher::Batcher::start(broker.clone()),
        keys: Arc::new(crate::keys::KeyCache::new()),
        settings: Arc::new(settings),
        limiter: RateLimiter::new(store.clone()),
        store,
        broker: broker.clone(),
        background: background.clone(),
    };
    // The broker connection outlives the HTTP server so background replays can finish.
    let broker_cancel = CancellationToken::new();
    let supervise = tokio::spawn(broker.supervise(broker_cancel.clone()));
    let app = router(state);
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
    Ok(Running {
        addr,
        tasks: vec![server, supervise, watch],
    })
}
