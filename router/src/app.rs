//! The router process: consume events, expand, record, publish jobs, acknowledge.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use futures::future::try_join_all;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::BasicProperties;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use herald_shared::amqp::topology::{EVENTS_QUEUE, JOBS_EXCHANGE, QUARANTINE_EXCHANGE};
use herald_shared::amqp::{self, Broker, Handled};
use herald_shared::config::RouterSettings;
use herald_shared::store::history::Routed;
use herald_shared::store::{ConfigCache, Store};

use crate::expand;
use crate::intake::{self, Rejection};

/// How long a router holds an event it is expanding before another may take it over (longer
/// than publishing its jobs can take: the confirm timeout is 15 s).
const ROUTING_LEASE: std::time::Duration = std::time::Duration::from_secs(20);

/// Claims an event for expanding, atomically: `0` already expanded, `1` claimed (a lease set),
/// `2` another router holds the lease. KEYS: the event's hash, its lease; ARGV: lease ms.
const CLAIM_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'expanded') == 1 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 2
";
const CLAIM_DONE: i64 = 0;
const CLAIM_TAKEN: i64 = 1;

/// A started router.
pub struct Running {
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every task ended (after cancellation).
    pub async fn wait(self) -> anyhow::Result<()> {
        for t in self.tasks {
            t.await.context("a router task panicked")?;
        }
        Ok(())
    }
}

struct Router {
    settings: RouterSettings,
    broker: Arc<Broker>,
    store: Store,
    cache: Arc<ConfigCache>,
}

/// Connects to Redis and the broker, serves ops endpoints and starts consuming events.
pub async fn start(settings: RouterSettings, cancel: CancellationToken) -> anyhow::Result<Running> {
    let _ = herald_shared::telemetry::metrics();
    let store = Store::connect(&settings.common, &cancel)
        .await
        .context("connecting to Redis")?;
    let broker = Broker::new(&settings.common, "herald-router");
    let cache = ConfigCache::new(store.clone());
    let store_for_watch = store.clone();
    let (addr, ops) =
        herald_shared::ops::serve(settings.addr, broker.clone(), store.clone(), cancel.clone())
            .await
            .with_context(|| format!("binding HERALD_ROUTER_ADDR {}", settings.addr))?;

    let router = Arc::new(Router {
        settings: settings.clone(),
        broker: broker.clone(),
        store,
        cache: cache.clone(),
    });
    // The broker connection outlives the consumer, so in-flight work can still publish and ack
    // while draining; it closes once the consumer has finished.
    let broker_cancel = CancellationToken::new();
    let supervise = tokio::spawn(broker.clone().supervise(broker_cancel.clone()));
    let refresh = tokio::spawn(cache.refresh(settings.common.config_refresh, cancel.clone()));
    let watch = tokio::spawn(herald_shared::ops::watch(
        broker.clone(),
        store_for_watch,
        true,
        cancel.clone(),
    ));
    let consuming = amqp::consume(
        broker,
        EVENTS_QUEUE,
        settings.prefetch,
        cancel.clone(),
        std::time::Duration::from_secs(30),
        move |delivery| {
            let router = router.clone();
            async move { router.handle(delivery).await }
        },
    );
    let consume = tokio::spawn(async move {
        consuming.await;
        broker_cancel.cancel();
    });
    Ok(Running {
        addr,
        tasks: vec![consume, supervise, refresh, watch, ops],
    })
}

impl Router {
    async fn handle(&self, delivery: Delivery) -> Handled {
        let workspace_id = amqp::header_str(delivery.properties.headers(), amqp::WORKSPACE_HEADER)
            .map(str::to_string);
        let span = tracing::info_span!(
            "route",
            workspace_id = workspace_id.as_deref().unwrap_or("")
        );
        async {
            match self.route(&delivery, workspace_id.as_deref()).await {
                Ok(()) => match delivery.acker.ack(BasicAckOptions::default()).await {
                    Ok(()) => Handled::Acked,
                    Err(e) => Handled::Requeue {
                        reason: format!("ack failed: {e}"),
                    },
                },
                Err(reason) => Handled::Requeue { reason },
            }
        }
        .instrument(span)
        .await
    }

    async fn route(&self, delivery: &Delivery, workspace_id: Option<&str>) -> Result<(), String> {
        let Some(ws) = workspace_id else {
            return self
                .quarantine(
                    delivery,
                    &delivery.data,
                    None,
                    &Rejection::NoWorkspace.to_string(),
                )
                .await;
        };
        let config = self
            .cache
            .workspace(ws)
            .await
            .map_err(|e| format!("reading configuration: {e}"))?;
        if !config.exists {
            let reason = Rejection::UnknownWorkspace(ws.to_string()).to_string();
            return self
                .quarantine(delivery, &delivery.data, Some(ws), &reason)
                .await;
        }
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str());
        let parsed = match intake::parse(ws, &delivery.data, message_id, herald_shared::now_ms()) {
            Ok(p) => p,
            Err(reject) => {
                return self
                    .quarantine(delivery, &delivery.data, Some(ws), &reject.to_string())
                    .await
            }
        };
        for (raw, reason) in &parsed.rejected {
            self.quarantine(delivery, raw, Some(ws), reason).await?;
        }
        if parsed.events.is_empty() {
            return Ok(());
        }

        let routed: Vec<Routed> = parsed
            .events
            .iter()
            .map(|event| Routed {
                workspace_id: ws,
                event,
                connection_ids: expand::connections_for(&config, event),
            })
            .collect();
        // Events already expanded (a redelivery after a crash, or a producer resending the same
        // uuid) get no second set of jobs. An event is claimed with a short lease while its jobs
        // are published, so two routers holding the same uuid at once do not both expand it; a
        // router that dies holding a lease only delays the event until the lease runs out.
        let expanded_key = |uuid: &str| self.store.ws_key(ws, &format!("evt:{uuid}"));
        let lease_key = |uuid: &str| self.store.ws_key(ws, &format!("evt:{uuid}:routing"));
        let mut pipe = redis::pipe();
        for r in &routed {
            pipe.cmd("EVAL")
                .arg(CLAIM_SCRIPT)
                .arg(2)
                .arg(expanded_key(&r.event.uuid))
                .arg(lease_key(&r.event.uuid))
                .arg(ROUTING_LEASE.as_millis() as u64);
        }
        let checks: Vec<i64> = pipe
            .query_async(&mut self.store.conn())
            .await
            .map_err(|e| format!("reading history: {e}"))?;
        self.store
            .record_routed(&routed)
            .await
            .map_err(|e| format!("recording events: {e}"))?;

        let mut groups = Vec::new();
        let mut fresh = Vec::new();
        let mut no_match = 0u64;
        let mut contested = 0usize;
        for (r, check) in routed.iter().zip(checks) {
            if check == CLAIM_DONE {
                metrics::counter!("herald_router_duplicate_events_total").increment(1);
                continue;
            }
            if check != CLAIM_TAKEN {
                // Another router is expanding this uuid right now: look again after it finished.
                contested += 1;
                continue;
            }
            fresh.push(r.event.uuid.as_str());
            if r.connection_ids.is_empty() {
                no_match += 1;
                tracing::info!(event_id = %r.event.uuid, event = %r.event.event, "no rule matched");
                continue;
            }
            groups.push(expand::group(ws, r.event, &r.connection_ids));
        }
        let jobs: usize = groups.iter().map(|g| g.jobs.len()).sum();
        let messages = expand::pack(groups, self.settings.jobs_per_message);
        let props = BasicProperties::default().with_content_type("application/json".into());
        try_join_all(messages.iter().map(|m| {
            let body = serde_json::to_vec(m).unwrap_or_default();
            let props = props.clone();
            async move {
                self.broker
                    .publish(JOBS_EXCHANGE, "jobs", &body, props)
                    .await
            }
        }))
        .await
        .map_err(|e| format!("publishing jobs: {e}"))?;

        let mut pipe = redis::pipe();
        for uuid in &fresh {
            pipe.hset(expanded_key(uuid), "expanded", 1).ignore();
            pipe.del(lease_key(uuid)).ignore();
        }
        pipe.query_async::<()>(&mut self.store.conn())
            .await
            .map_err(|e| format!("marking events expanded: {e}"))?;
        metrics::counter!("herald_router_events_total").increment(fresh.len() as u64);
        metrics::counter!("herald_router_events_unmatched_total").increment(no_match);
        metrics::counter!("herald_router_jobs_total").increment(jobs as u64);
        metrics::counter!("herald_router_job_messages_total").increment(messages.len() as u64);
        if contested > 0 {
            // The rest of the message is done; this hands it back so the contested events are
            // looked at again (and skipped, once the other router marked them expanded).
            return Err(format!(
                "{contested} event(s) are being routed by another router"
            ));
        }

        Ok(())
    }

    /// Sets a message (or part of one) aside in the quarantine queue with its reason.
    async fn quarantine(
        &self,
        delivery: &Delivery,
        body: &[u8],
        workspace_id: Option<&str>,
        reason: &str,
    ) -> Result<(), String> {
        tracing::warn!(reason, "quarantining a message");
        let mut headers = vec![
            (amqp::REASON_HEADER, reason.to_string()),
            ("herald-routing-key", delivery.routing_key.to_string()),
        ];
        if let Some(ws) = workspace_id {
            headers.push((amqp::WORKSPACE_HEADER, ws.to_string()));
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(amqp::headers(headers));
        self.broker
            .publish(QUARANTINE_EXCHANGE, "", body, props)
            .await
            .map_err(|e| format!("quarantining: {e}"))?;
        let kind = reason.split(':').next().unwrap_or(reason);
        let kind = if kind.starts_with("unknown workspace") {
            "unknown_workspace"
        } else if kind.starts_with("missing header") {
            "no_workspace"
        } else if kind.starts_with("body is not JSON") {
            "not_json"
        } else {
            "invalid_envelope"
        };
        metrics::counter!("herald_quarantined_total", "reason" => kind).increment(1);
        Ok(())
    }
}
