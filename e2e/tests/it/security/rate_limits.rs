//! Rate limits: per key at intake, shared across ingest replicas through Redis; per connection
//! at delivery, pacing that connection only.

use std::time::{Duration, Instant};

use herald_e2e::{Receiver, Stack};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::event;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intake_is_rate_limited_per_key_across_ingest_replicas() {
    // One event per second per key; the burst is one second's worth.
    let stack = Stack::start_with(&[("HERALD_INTAKE_RATE_LIMIT_PER_S", "1")]).await;
    let second =
        herald_shared::config::IngestSettings::from_source(stack.source()).expect("settings");
    let cancel = CancellationToken::new();
    let replica = herald_ingest::start(second, cancel.clone())
        .await
        .expect("a second ingest starts");
    let replica_api = format!("http://{}", replica.addr);
    let (_, sk, pk) = stack.workspace().await;
    let three: Vec<Value> = (0..3).map(|_| event("a.b")).collect();

    // A bulk of three passes whole on the first replica and puts the key ~3 s in debt ...
    let (status, body) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": three})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // ... which the second replica sees: 429, Retry-After, the API's error shape.
    let resp = stack
        .http
        .post(format!("{replica_api}/v1/events"))
        .bearer_auth(&pk)
        .json(&event("a.b"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let (status, _) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": [event("a.b")]})),
        )
        .await;
    assert_eq!(status, 429, "bulk requests count against the same limit");

    // Another key is limited separately.
    stack.send(&sk, "a.b", "r", json!({})).await;

    // After Retry-After the key sends again.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    stack.send(&pk, "a.b", "r", json!({})).await;
    cancel.cancel();
    let _ = replica.wait().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_rate_limit_paces_its_deliveries_and_slows_no_other() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, pk) = stack.workspace().await;
    let (slow, _) = stack
        .connection(&sk, &receiver.url("slow"), json!({"rate_limit_per_s": 5}))
        .await;
    let (fast, _) = stack
        .connection(&sk, &receiver.url("fast"), json!({}))
        .await;
    stack.rule(&sk, "slow.*", "*", &slow).await;
    stack.rule(&sk, "fast.*", "*", &fast).await;
    let slow_events: Vec<Value> = (0..20).map(|_| event("slow.tick")).collect();
    let fast_events: Vec<Value> = (0..20).map(|_| event("fast.tick")).collect();

    let started = Instant::now();
    let (status, slow_sent) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": slow_events})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": fast_events})),
        )
        .await;
    assert_eq!(status, 202);
    receiver.wait_for("fast", 20).await;
    let fast_done = started.elapsed();
    receiver.wait_for("slow", 20).await;
    let slow_done = started.elapsed();

    // 20 at 5/s with a burst of 5: at least ~3 s; the other connection is not held back.
    assert!(slow_done >= Duration::from_millis(2800), "{slow_done:?}");
    assert!(
        fast_done + Duration::from_millis(1500) < slow_done,
        "fast {fast_done:?}, slow {slow_done:?}"
    );
    // Waiting for a slot is not an attempt: each delivery took exactly one.
    for r in slow_sent["results"].as_array().expect("results") {
        let uuid = r["uuid"].as_str().expect("uuid");
        let h = stack
            .event_when(&sk, uuid, "delivered", |b| b["status"] == "delivered")
            .await;
        let attempts = h["deliveries"][0]["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{h}");
        assert_eq!(attempts[0]["status_code"], 200);
    }
    stack.stop().await;
}
