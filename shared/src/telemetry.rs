//! Logging and metrics set-up.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the `tracing` subscriber (`RUST_LOG` filters; `info` by default).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then this handle renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// The `# HELP` line of every metric Herald exports.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "herald_events_accepted_total",
        "Events intake accepted (the broker confirmed them)."
    );
    describe_counter!(
        "herald_events_rejected_total",
        "Events intake refused, by reason."
    );
    describe_counter!(
        "herald_redis_calls_timed_out_total",
        "Redis calls that got no answer within 6 s, queueing included (the connection is then replaced)."
    );
    describe_gauge!(
        "herald_archive_lag_seconds",
        Unit::Seconds,
        "How long the oldest final history past the hot window has waited for the archive (0: caught up)."
    );
    describe_counter!(
        "herald_archive_events_total",
        "Events whose history moved from Redis to the archive."
    );
    describe_counter!(
        "herald_config_loads_total",
        "Workspace configurations read from Redis (after a change, or for a workspace not cached)."
    );
    describe_counter!(
        "herald_router_events_total",
        "Events the router expanded (seen for the first time)."
    );
    describe_counter!(
        "herald_router_events_unmatched_total",
        "Events no rule matched."
    );
    describe_counter!(
        "herald_router_deliveries_skipped_total",
        "Deliveries recorded as skipped because their connection was disabled."
    );
    describe_counter!(
        "herald_operational_webhooks_total",
        "Operational webhook notices sent, by type."
    );
    describe_counter!(
        "herald_connections_auto_disabled_total",
        "Connections disabled because every attempt failed for HERALD_AUTO_DISABLE_AFTER."
    );
    describe_counter!(
        "herald_router_duplicate_events_total",
        "Events already expanded (a redelivery or a resent uuid): no second set of jobs."
    );
    describe_counter!(
        "herald_router_contested_events_total",
        "Events another router was expanding at the same moment, set to wait a second."
    );
    describe_counter!(
        "herald_router_jobs_total",
        "Delivery jobs published (one per event and connection)."
    );
    describe_counter!(
        "herald_router_job_messages_total",
        "Broker messages the jobs were packed into."
    );
    describe_counter!("herald_deliveries_total", "Delivery attempts, by outcome (delivered, retry, dead) and status class (2xx..5xx, error, breaker_open).");
    describe_histogram!(
        "herald_delivery_attempt_duration_seconds",
        Unit::Seconds,
        "Time from sending a request to its response or failure."
    );
    describe_counter!(
        "herald_retries_scheduled_total",
        "Retries put into the delay ladder."
    );
    describe_counter!(
        "herald_dead_letters_total",
        "Deliveries moved to the dead-letter queue."
    );
    describe_counter!(
        "herald_dead_letters_replayed_total",
        "Dead letters replayed."
    );
    describe_counter!(
        "herald_quarantined_total",
        "Messages set aside in the quarantine queue, by reason."
    );
    describe_counter!(
        "herald_ack_failures_total",
        "Messages that could not be acknowledged (their channel was gone; the broker redelivers them)."
    );
    describe_counter!(
        "herald_handler_panics_total",
        "Messages whose handler crashed (a bug), by queue."
    );
    describe_counter!("herald_jobs_deferred_total", "Jobs sent back through the delay ladder without an attempt because their connection was busy or rate-limited.");
    describe_counter!(
        "herald_jobs_detached_total",
        "Jobs still running when their message let go of its prefetch slot (each got a stand-in)."
    );
    describe_counter!(
        "herald_router_ordered_jobs_total",
        "Jobs of ordered connections published by the router: new heads of their key (the rest wait in Redis)."
    );
    describe_counter!(
        "herald_ordered_resent_total",
        "Heads of ordered keys the routers' sweep published again (nobody took them in time)."
    );
    describe_counter!(
        "herald_ordered_stale_total",
        "Copies of ordered jobs dropped: not the head of their key, or replaced by a newer copy."
    );
    describe_counter!(
        "herald_ordered_overflows_total",
        "Ordered jobs dead-lettered at once because their key's backlog was full."
    );
    describe_counter!(
        "herald_stand_ins_total",
        "Stand-ins that came back, by outcome: superseded (the attempt was recorded) or sent."
    );
    describe_counter!(
        "herald_jobs_handed_back_total",
        "Jobs not started at shutdown, returned to the jobs queue."
    );
    describe_counter!(
        "herald_outcome_write_failures_total",
        "Failed writes of delivery outcomes to Redis (retried; the message is held)."
    );
    describe_counter!(
        "herald_circuit_breaker_transitions_total",
        "Circuit breaker changes, by the state entered."
    );
    describe_gauge!(
        "herald_circuit_breakers_open",
        "Connections whose breaker is open or probing, in this deliverer."
    );
    describe_gauge!(
        "herald_deliveries_in_flight",
        "HTTP requests to receivers in flight."
    );
    describe_counter!(
        "herald_rate_limited_total",
        "Requests or deliveries held back by a rate limit, by scope."
    );
    describe_counter!(
        "herald_rate_limiter_errors_total",
        "Rate-limit checks that could not reach Redis (let through)."
    );
    describe_gauge!(
        "herald_queue_messages",
        "Messages waiting in each Herald queue (sampled every 5 s by the router)."
    );
    describe_gauge!(
        "herald_broker_connected",
        "1 while connected to RabbitMQ with the topology declared."
    );
    describe_counter!(
        "herald_broker_disconnects_total",
        "Times the broker connection was lost."
    );
    describe_gauge!(
        "herald_redis_connected",
        "1 while Redis answers (checked every 5 s and on /readyz)."
    );
    describe_counter!(
        "herald_http_requests_total",
        "API requests, by route template, method and status."
    );
    describe_histogram!(
        "herald_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an API request, by route template and method."
    );
    describe_histogram!(
        "herald_intake_confirm_seconds",
        Unit::Seconds,
        "Time from intake publishing a message of events to the broker's confirm."
    );
    // Exported at 0 from start-up, so a rate over them is defined before the first event.
    for name in [
        "herald_events_accepted_total",
        "herald_router_events_total",
        "herald_router_events_unmatched_total",
        "herald_router_deliveries_skipped_total",
        "herald_connections_auto_disabled_total",
        "herald_router_duplicate_events_total",
        "herald_router_contested_events_total",
        "herald_router_jobs_total",
        "herald_router_job_messages_total",
        "herald_retries_scheduled_total",
        "herald_dead_letters_total",
        "herald_dead_letters_replayed_total",
        "herald_jobs_handed_back_total",
        "herald_jobs_detached_total",
        "herald_outcome_write_failures_total",
        "herald_settle_failures_total",
        "herald_broker_disconnects_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}
