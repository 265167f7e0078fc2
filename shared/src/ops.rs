//! `/healthz`, `/readyz` and `/metrics` for the router and deliverer (ingest serves the same
//! paths on its API address).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::amqp::Broker;
use crate::store::Store;

#[derive(Clone)]
struct Ops {
    broker: Arc<Broker>,
    store: Store,
}

/// Readiness: the broker connected with its topology declared, and Redis answering.
pub async fn readiness(broker: &Broker, store: &Store) -> (StatusCode, Json<serde_json::Value>) {
    let broker_ok = broker.is_ready();
    let redis_ok = store.ping().await;
    let status = if broker_ok && redis_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(
            json!({"status": word(broker_ok && redis_ok), "broker": word(broker_ok), "redis": word(redis_ok)}),
        ),
    )
}

/// The ops routes over a broker and store.
pub fn router(broker: Arc<Broker>, store: Store) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(|State(ops): State<Ops>| async move { readiness(&ops.broker, &ops.store).await }),
        )
        .route(
            "/metrics",
            get(|| async { crate::telemetry::metrics().render() }),
        )
        .with_state(Ops { broker, store })
}

/// Binds `addr` and serves the ops routes until `cancel`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    broker: Arc<Broker>,
    store: Store,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(broker, store);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    });
    Ok((bound, handle))
}

/// Serves `/metrics` alone at `addr` (`HERALD_METRICS_ADDR`) until `cancel`. Returns the bound
/// address.
pub async fn serve_metrics(
    addr: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(|| async { crate::telemetry::metrics().render() }),
    );
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    });
    tracing::info!(addr = %bound, "serving /metrics");
    Ok((bound, handle))
}

/// How often [`watch`] samples.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a service samples queue depths (one service per installation is enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueDepths {
    /// Sample every queue's depth into `herald_queue_messages{queue}`.
    Sample,
    /// Leave it to another service.
    Skip,
}

/// Keeps the connection gauges true between probes (`herald_redis_connected`; the broker's is
/// set on every change) and samples queue depths if asked to. Runs until `cancel`.
pub async fn watch(
    broker: Arc<Broker>,
    store: Store,
    queue_depths: QueueDepths,
    cancel: CancellationToken,
) {
    let names = crate::amqp::topology::all_queues();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        store.ping().await;
        if queue_depths == QueueDepths::Sample {
            if let Some(depths) = broker.queue_depths(&names).await {
                for (queue, n) in depths {
                    metrics::gauge!("herald_queue_messages", "queue" => queue).set(f64::from(n));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_metrics_address_serves_the_metrics_page_alone() {
        let _ = crate::telemetry::metrics();
        let cancel = CancellationToken::new();
        let (addr, task) = serve_metrics(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone())
            .await
            .expect("bound");
        let page = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("answered");
        assert_eq!(page.status(), 200);
        let text = page.text().await.expect("text");
        assert!(text.contains("herald_events_accepted_total 0"), "{text}");
        let other = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .expect("answered");
        assert_eq!(other.status(), 404, "only /metrics is served there");
        cancel.cancel();
        task.await.expect("stopped");
    }
}
