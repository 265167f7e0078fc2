//! What an operator sees: every service's `/metrics` moves by exactly what the traffic did, and
//! with `HERALD_LOG_FORMAT=json` every log line is one JSON object, delivery lines carrying the
//! event and connection ids. (Processes of their own, so each counter belongs to one service.)

use std::time::Duration;

use serde_json::{json, Value};

use herald_e2e::metrics::sum as metric;
use herald_e2e::procs::{DELIVERER, ROUTER};
use herald_e2e::{eventually, Behaviour, Processes, Receiver};

use crate::serial;

async fn scrape(stack: &Processes, base: &str) -> String {
    stack
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_traffic_and_json_logs_parse_line_by_line() {
    let _turn = serial().await;
    let receiver = Receiver::start().await;
    receiver.set("flaky", Behaviour::FailFirst(1, 500));
    let stack = Processes::start_for_test("observe", &[("HERALD_LOG_FORMAT", "json")]).await;
    let (_, sk, _) = stack.workspace().await;
    for path in ["ok", "flaky"] {
        let (conn, _) = stack.connection(&sk, &receiver.url(path), json!({})).await;
        stack.rule(&sk, "order.*", "order", &conn).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 10 events for both connections, 1 nobody wants, 1 invalid.
    let mut events: Vec<Value> = (0..10)
        .map(|i| json!({"event": "order.created", "resource": "order", "resource_id": format!("o{i}"), "payload": {}}))
        .collect();
    events.push(
        json!({"event": "user.created", "resource": "user", "resource_id": "u1", "payload": {}}),
    );
    events.push(json!({"event": "", "resource": "order", "resource_id": "bad", "payload": {}}));
    let (status, body) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &sk,
            Some(json!({ "events": events })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    receiver.wait_for("ok", 10).await;
    receiver.wait_for("flaky", 11).await;

    let deliverer = format!("http://{}", stack.proc(DELIVERER).addr);
    let router = format!("http://{}", stack.proc(ROUTER).addr);
    let d = eventually(
        "deliverer counters settle",
        Duration::from_secs(20),
        || async {
            let m = scrape(&stack, &deliverer).await;
            (metric(&m, "herald_deliveries_total", &[("outcome", "delivered")]) == 20.0)
                .then_some(m)
        },
    )
    .await;
    let i = scrape(&stack, &stack.url).await;
    let r = scrape(&stack, &router).await;

    assert_eq!(metric(&i, "herald_events_accepted_total", &[]), 11.0, "{i}");
    assert_eq!(
        metric(&i, "herald_events_rejected_total", &[("reason", "invalid")]),
        1.0,
        "{i}"
    );
    assert_eq!(metric(&r, "herald_router_events_total", &[]), 11.0, "{r}");
    assert_eq!(
        metric(&r, "herald_router_events_unmatched_total", &[]),
        1.0,
        "{r}"
    );
    assert_eq!(metric(&r, "herald_router_jobs_total", &[]), 20.0, "{r}");
    assert_eq!(
        metric(
            &d,
            "herald_deliveries_total",
            &[("outcome", "delivered"), ("status_class", "2xx")]
        ),
        20.0,
        "{d}"
    );
    assert_eq!(
        metric(
            &d,
            "herald_deliveries_total",
            &[("outcome", "retry"), ("status_class", "5xx")]
        ),
        1.0,
        "{d}"
    );
    assert_eq!(
        metric(&d, "herald_retries_scheduled_total", &[]),
        1.0,
        "{d}"
    );
    assert_eq!(
        metric(&d, "herald_delivery_attempt_duration_seconds_count", &[]),
        21.0,
        "{d}"
    );
    assert_eq!(metric(&d, "herald_deliveries_in_flight", &[]), 0.0, "{d}");
    for (name, text) in [("ingest", &i), ("router", &r), ("deliverer", &d)] {
        assert_eq!(
            metric(text, "herald_broker_connected", &[]),
            1.0,
            "{name}: {text}"
        );
        assert_eq!(
            metric(text, "herald_redis_connected", &[]),
            1.0,
            "{name}: {text}"
        );
        assert!(
            text.contains("# HELP herald_"),
            "{name} describes its metrics"
        );
    }
    // Queue depths, sampled by the router (every queue, the delay rungs too).
    let r = eventually("queue depths sampled", Duration::from_secs(15), || async {
        let r = scrape(&stack, &router).await;
        r.contains("herald_queue_messages{queue=\"herald.ladder.1s\"}")
            .then_some(r)
    })
    .await;
    for queue in [
        "herald.events",
        "herald.events.wait",
        "herald.jobs",
        "herald.dead",
        "herald.quarantine",
    ] {
        assert!(
            r.contains(&format!("herald_queue_messages{{queue=\"{queue}\"}}")),
            "{queue}: {r}"
        );
    }

    // Logs: one JSON object per line; the failed attempt's line names event and connection.
    let flaky_id = receiver.received("flaky")[0].headers["webhook-id"]
        .to_str()
        .expect("id")
        .to_string();
    let mut retry_line = None;
    for service in stack.procs().iter().map(|p| &p.label) {
        let log =
            std::fs::read_to_string(stack.log_dir().join(format!("{service}.log"))).expect("log");
        assert!(!log.is_empty(), "{service} logged");
        for line in log.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{service}: not JSON ({e}): {line}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{line}"
            );
            if v["message"] == "attempt failed; retry scheduled" {
                retry_line = Some(v);
            }
        }
    }
    let retry = retry_line.expect("a line for the failed attempt");
    assert_eq!(retry["span"]["event_id"], flaky_id.as_str(), "{retry}");
    assert!(retry["span"]["connection_id"].is_string(), "{retry}");
    stack.stop().await;
}
