//! Application state, the route table, and start-up.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

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

/// Every route with its OpenAPI description: the one place both the router and
/// `/openapi.json` come from. `event_limit` and `bulk_limit` are the body limits of intake.
pub fn api_routes(event_limit: usize, bulk_limit: usize) -> OpenApiRouter<AppState> {
    use routes::{
        admin, connections, dead_letters, events, health, pages, rules, sessions, workspaces,
    };
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(pages::openapi_json))
        .routes(routes!(workspaces::create, workspaces::list))
        .routes(routes!(workspaces::roll_key))
        .routes(routes!(sessions::create))
        .routes(routes!(sessions::refresh))
        .routes(routes!(sessions::current))
        .routes(routes!(sessions::get_settings, sessions::update_settings))
        .routes(routes!(connections::create, connections::list))
        .routes(routes!(
            connections::get,
            connections::update,
            connections::delete
        ))
        .routes(routes!(connections::secret))
        .routes(routes!(connections::health))
        .routes(routes!(connections::rotate_secret))
        .routes(routes!(rules::create, rules::list))
        .routes(routes!(rules::get, rules::update, rules::delete))
        .routes(limited(routes!(rules::test), event_limit))
        .routes(limited(routes!(events::create, events::list), event_limit))
        .routes(limited(routes!(events::bulk), bulk_limit))
        .routes(routes!(events::get))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay_many))
        .routes(routes!(dead_letters::get, dead_letters::discard))
        .routes(routes!(dead_letters::replay_one))
        .routes(routes!(admin::find_event))
        .routes(routes!(admin::search_events))
        .routes(routes!(admin::connections))
        .routes(routes!(admin::connection_health))
        .routes(routes!(admin::dead_letters))
        .routes(routes!(admin::replay_dead_letters))
        .routes(routes!(admin::replay_dead_letter))
        .routes(routes!(admin::discard_dead_letter))
        .routes(routes!(pages::portal))
        .routes(routes!(pages::portal_unframed))
        .routes(routes!(pages::console))
        .routes(routes!(pages::console_redirect))
        .routes(routes!(pages::asset))
}

/// A route group whose bodies may be up to `limit` bytes (instead of the 256 KiB default).
fn limited(
    (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
    limit: usize,
) -> UtoipaMethodRouter<AppState> {
    (
        schemas,
        paths,
        method_router.layer(DefaultBodyLimit::max(limit)),
    )
}

/// The whole route table.
pub fn router(state: AppState) -> Router {
    let (router, _) = api_routes(
        state.settings.max_event_bytes,
        state.settings.max_bulk_bytes,
    )
    .split_for_parts();
    router
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
        herald_shared::ops::QueueDepths::Skip,
        cancel.clone(),
    ));
    let state = AppState {
        batcher: crate::batcher::Batcher::start(broker.clone()),
        keys: Arc::new(crate::keys::KeyCache::new(settings.common.config_refresh)),
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
