//! No tenant stalls another, and a fixed endpoint is not kept waiting: hanging destinations,
//! hostile uuids, an open breaker after the customer fixed their URL, a connection the
//! deliverer's cache has not seen yet.

use std::time::{Duration, Instant};

use futures::future::join_all;
use herald_e2e::{eventually, Behaviour, Receiver, Stack};
use herald_shared::config::CommonSettings;
use herald_shared::store::Store;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn event(name: &str, i: usize) -> Value {
    json!({"event": name, "resource": "thing", "resource_id": format!("r{i}"), "payload": {"i": i}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_hanging_connections_do_not_stall_a_healthy_one() {
    // Arrange: three connections whose endpoints hang for 20 s, and a healthy one.
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, _) = stack.workspace().await;
    for path in ["hang1", "hang2", "hang3"] {
        receiver.set(path, Behaviour::Slow(Duration::from_secs(20)));
        let (id, _) = stack
            .connection(&sk, &receiver.url(path), json!({"timeout_ms": 30000}))
            .await;
        stack.rule(&sk, &format!("{path}.*"), "*", &id).await;
    }
    let (ok, _) = stack.connection(&sk, &receiver.url("ok"), json!({})).await;
    stack.rule(&sk, "ok.*", "*", &ok).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 90 events to the hanging ones, one request each (a message each): more than the
    // deliverer's prefetch (64) can hold, fewer than their slots (3 x 32) can take.
    for i in 0..90 {
        let path = ["hang1", "hang2", "hang3"][i % 3];
        let (status, body) = stack
            .call(
                "POST",
                "/v1/events",
                &sk,
                Some(event(&format!("{path}.now"), i)),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    receiver.wait_for("hang3", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Act: 300 events to the healthy connection.
    let started = Instant::now();
    for chunk in (0..300).collect::<Vec<_>>().chunks(30) {
        let sends = chunk
            .iter()
            .map(|i| stack.call("POST", "/v1/events", &sk, Some(event("ok.now", *i))));
        assert!(join_all(sends).await.iter().all(|(s, _)| *s == 202));
    }
    let accepted = started.elapsed();
    receiver.wait_for("ok", 300).await;
    let took = started.elapsed();

    // Assert: behaviour, not a benchmark: the healthy deliveries did not wait for the hanging
    // requests (20 s) to give their slots back.
    println!("stalls: 300 healthy deliveries in {took:?} ({accepted:?} to accept them) behind 90 hanging requests to 3 connections");
    assert!(
        took < Duration::from_secs(10),
        "healthy deliveries waited behind the hanging connections: {took:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_waiting_for_another_routers_lease_does_not_hold_up_other_workspaces() {
    // Arrange: a router with one prefetch slot, and event X of workspace A claimed by
    // "another router" for 6 s.
    let stack = Stack::start_with(&[("HERALD_ROUTER_PREFETCH", "1")]).await;
    let receiver = Receiver::start().await;
    let a = stack.wired(&receiver, &["a"]).await;
    let b = stack.wired(&receiver, &["b"]).await;
    let settings = CommonSettings::from_source(stack.source()).expect("settings");
    let store = Store::connect(&settings, &CancellationToken::new())
        .await
        .expect("redis");
    store
        .claim_for_routing(&a.workspace, &["evt_held"], Duration::from_secs(6))
        .await
        .expect("claimed");
    let mut held = event("order.created", 0);
    held["uuid"] = json!("evt_held");
    let (status, body) = stack.call("POST", "/v1/events", &a.pk, Some(held)).await;
    assert_eq!(status, 202, "{body}");

    // Act: workspace B sends while X waits.
    let started = Instant::now();
    for i in 0..20 {
        stack
            .send(&b.pk, "order.created", "order", json!({ "i": i }))
            .await;
    }
    receiver.wait_for("b", 20).await;
    let b_took = started.elapsed();
    let a_got = receiver.wait_for("a", 1).await;

    // Assert: B did not wait for the lease; X went out once the lease ran out.
    println!(
        "stalls: workspace B's 20 events in {b_took:?} while an event of A waited for a lease"
    );
    assert!(
        b_took < Duration::from_secs(4),
        "B waited behind A's contested event: {b_took:?}"
    );
    assert_eq!(a_got[0].headers["webhook-id"], "evt_held");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uuids_that_spell_internal_keys_are_delivered_like_any_other() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let a = stack.wired(&receiver, &["a"]).await;
    let b = stack.wired(&receiver, &["b"]).await;

    // A hostile producer sends pairs (X:routing, X); another workspace sends as usual.
    for i in 0..10 {
        for uuid in [format!("evt_{i}:routing"), format!("evt_{i}")] {
            let mut e = event("order.created", i);
            e["uuid"] = json!(uuid);
            let (status, body) = stack.call("POST", "/v1/events", &a.pk, Some(e)).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    for i in 0..50 {
        stack
            .send(&b.pk, "order.created", "order", json!({ "i": i }))
            .await;
    }

    let got_a = receiver.wait_for("a", 20).await;
    receiver.wait_for("b", 50).await;
    let mut ids: Vec<String> = got_a
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every uuid of the pairs delivered: {ids:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fixed_endpoint_gets_its_replayed_dead_letters_at_once_despite_its_open_breaker() {
    // Arrange: a connection that fails until its breaker opens (and stays open a minute), with
    // its deliveries dead-lettered.
    let stack = Stack::start_with(&[
        ("HERALD_BREAKER_FAILURES", "5"),
        ("HERALD_BREAKER_COOLDOWN", "60s"),
        ("HERALD_RETRY_SCHEDULE", "1s"),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.set("broken", Behaviour::Always(500));
    let w = stack.wired(&receiver, &["broken"]).await;
    let conn = &w.connections[0].0;
    for i in 0..5 {
        stack
            .send(&w.sk, "order.created", "order", json!({ "i": i }))
            .await;
    }
    eventually("5 dead letters", Duration::from_secs(30), || async {
        let (_, body) = stack.call("GET", "/v1/dead-letters", &w.sk, None).await;
        (body["data"].as_array().map_or(0, Vec::len) == 5).then_some(())
    })
    .await;
    let (_, health) = stack
        .call(
            "GET",
            &format!("/v1/connections/{conn}/health"),
            &w.sk,
            None,
        )
        .await;
    assert_eq!(health["breaker"], "open", "{health}");

    // Act: the customer fixes the URL and replays.
    let (status, body) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{conn}"),
            &w.sk,
            Some(json!({"url": receiver.url("fixed")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = stack
        .call(
            "POST",
            "/v1/dead-letters/replay",
            &w.sk,
            Some(json!({"connection_id": conn})),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");

    // Assert: all five arrive well within the breaker's minute.
    let started = Instant::now();
    receiver.wait_for("fixed", 5).await;
    println!(
        "stalls: 5 replayed dead letters at the fixed URL in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_the_deliverers_cache_has_not_seen_yet_is_not_dead_lettered() {
    // Arrange: configuration changes reach the caches only every 5 s, and the deliverer has
    // this workspace cached already.
    let stack = Stack::start_with(&[("HERALD_CONFIG_REFRESH", "5s")]).await;
    let receiver = Receiver::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (first, _) = stack
        .connection(&sk, &receiver.url("first"), json!({}))
        .await;
    let first_rule = stack.rule(&sk, "*", "*", &first).await;
    let (status, body) = stack
        .call(
            "POST",
            &format!("/v1/rules/{first_rule}/test"),
            &sk,
            Some(json!({"warm": true})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    receiver.wait_for("first", 1).await;

    // Act: a new connection, and a test event to it at once.
    let (second, _) = stack
        .connection(&sk, &receiver.url("second"), json!({}))
        .await;
    let rule = stack.rule(&sk, "*", "*", &second).await;
    let (status, body) = stack
        .call(
            "POST",
            &format!("/v1/rules/{rule}/test"),
            &sk,
            Some(json!({"fresh": true})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let uuid = body["uuid"].as_str().expect("uuid").to_string();

    // Assert: delivered, not dead-lettered as "no longer exists".
    let history = stack
        .event_when(&sk, &uuid, "a final status", |b| {
            matches!(
                b["deliveries"][0]["status"].as_str(),
                Some("delivered" | "dead")
            )
        })
        .await;
    assert_eq!(history["deliveries"][0]["status"], "delivered", "{history}");
    assert_eq!(receiver.received("second").len(), 1);
    stack.stop().await;
}
