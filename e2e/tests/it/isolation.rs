//! One bad destination hurts only itself: a hanging connection keeps its jobs waiting in the
//! broker, not in front of others; a failing one is cut off by its circuit breaker and probed.

use std::time::{Duration, Instant};

use futures::future::join_all;
use herald_e2e::{eventually, Behaviour, Receiver, Stack};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_connection_does_not_hold_up_a_healthy_one() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    receiver.set("hang", Behaviour::Slow(Duration::from_secs(20)));
    let (_, sk, _) = stack.workspace().await;
    let (hang, _) = stack
        .connection(&sk, &receiver.url("hang"), json!({"timeout_ms": 30000}))
        .await;
    let (ok, _) = stack.connection(&sk, &receiver.url("ok"), json!({})).await;
    stack.rule(&sk, "hang.*", "*", &hang).await;
    stack.rule(&sk, "ok.*", "*", &ok).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 300 jobs for the hanging connection, each in a message of its own (the most prefetch
    // they could take), then 300 for the healthy one.
    let event = |name: &str, i: usize| json!({"event": name, "resource": "thing", "resource_id": format!("r{i}"), "payload": {"i": i}});
    for chunk in (0..300).collect::<Vec<_>>().chunks(25) {
        let sends = chunk
            .iter()
            .map(|i| stack.call("POST", "/v1/events", &sk, Some(event("hang.now", *i))));
        assert!(join_all(sends).await.iter().all(|(s, _)| *s == 202));
    }
    receiver.wait_for("hang", 1).await;
    let started = Instant::now();
    for chunk in (0..300).collect::<Vec<_>>().chunks(100) {
        let events: Vec<Value> = chunk.iter().map(|i| event("ok.now", *i)).collect();
        stack.send_bulk(&sk, events).await;
    }
    receiver.wait_for("ok", 300).await;
    let took = started.elapsed();
    let hanging = receiver.received("hang").len();
    println!(
        "isolation: 300 healthy deliveries in {took:?} behind 300 jobs for a connection hanging 20 s \
         ({hanging} requests at it so far)"
    );
    // Behaviour, not a benchmark: all healthy jobs went out while the first hanging requests
    // were still waiting for their answers, and the hanging one never had more than its share.
    assert!(
        took < Duration::from_secs(19),
        "healthy deliveries waited behind the hang: {took:?}"
    );
    assert!(
        hanging <= 32,
        "at most HERALD_CONNECTION_CONCURRENCY at once: {hanging}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_connection_trips_its_breaker_and_a_probe_closes_it() {
    let stack = Stack::start_with(&[
        ("HERALD_BREAKER_FAILURES", "5"),
        ("HERALD_BREAKER_COOLDOWN", "2s"),
        (
            "HERALD_RETRY_SCHEDULE",
            "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
        ),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.set("down", Behaviour::Always(500));
    let (_, sk, _) = stack.workspace().await;
    let (conn, _) = stack
        .connection(&sk, &receiver.url("down"), json!({}))
        .await;
    stack.rule(&sk, "order.*", "order", &conn).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut uuids = Vec::new();
    for i in 0..20 {
        uuids.push(
            stack
                .send(&sk, "order.created", "order", json!({ "i": i }))
                .await,
        );
    }

    // The breaker opens: attempts are recorded without calling the receiver.
    let health = eventually("the breaker opens", Duration::from_secs(20), || async {
        let (_, h) = stack
            .call("GET", &format!("/v1/connections/{conn}/health"), &sk, None)
            .await;
        (h["breaker"] == "open").then_some(h)
    })
    .await;
    assert_eq!(
        health["breaker_changes"][0]["consecutive_failures"], 5,
        "{health}"
    );
    let skipped = eventually(
        "an attempt refused by the breaker",
        Duration::from_secs(20),
        || async {
            let (_, e) = stack
                .call("GET", &format!("/v1/events/{}", uuids[19]), &sk, None)
                .await;
            let attempts = e["deliveries"][0]["attempts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            attempts
                .iter()
                .any(|a| {
                    a["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("circuit breaker is open"))
                })
                .then_some(attempts)
        },
    )
    .await;
    assert!(skipped.iter().any(|a| a["status_code"].is_null()));
    let calls_while_open = receiver.received("down").len();

    // The receiver recovers: a probe after the cool-down closes the breaker, and every event
    // is delivered.
    receiver.set("down", Behaviour::Ok);
    for uuid in &uuids {
        stack
            .event_when(&sk, uuid, "delivered after the breaker closed", |b| {
                b["deliveries"][0]["status"] == "delivered"
            })
            .await;
    }
    let (_, health) = stack
        .call("GET", &format!("/v1/connections/{conn}/health"), &sk, None)
        .await;
    assert_eq!(health["breaker"], "closed", "{health}");
    let states: Vec<&str> = health["breaker_changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["state"].as_str())
        .collect();
    assert!(
        states.contains(&"half_open") && states.contains(&"open"),
        "{states:?}"
    );
    println!(
        "breaker: {calls_while_open} calls reached the failing receiver before it recovered \
         (20 events, 5 failures to open); changes {states:?}"
    );
    stack.stop().await;
}
