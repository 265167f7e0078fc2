//! Bounded state: a workspace kept busy past its retention holds only the window, in its
//! history and in its index; a producer's uuid is a duplicate within the dedup window only.

use std::time::{Duration, Instant};

use herald_e2e::{eventually, Receiver, Stack, ADMIN};
use serde_json::json;

fn redis() -> redis::Connection {
    redis::Client::open(herald_e2e::prefix::REDIS_URL)
        .and_then(|c| c.get_connection())
        .expect("redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_kept_busy_past_its_retention_holds_only_the_window() {
    // Arrange: a 10 s retention (and dedup window: a longer one keeps a claim per event for
    // its length), and a producer sending four events a second for 24 s.
    let stack =
        Stack::start_with(&[("HERALD_RETENTION", "10s"), ("HERALD_DEDUP_WINDOW", "10s")]).await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["busy"]).await;
    let started = Instant::now();
    let mut sent = Vec::new();

    // Act
    while started.elapsed() < Duration::from_secs(24) {
        sent.push(
            stack
                .send(&w.pk, "order.paid", "order", json!({"n": sent.len()}))
                .await,
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last = sent.last().expect("sent").clone();
    stack
        .event_when(&w.sk, &last, "the last event delivered", |b| {
            b["status"] == "delivered"
        })
        .await;

    // Assert: the first events are gone; what is kept is the last ~10 s (40 events, with room
    // for a slow machine), in the history hash and its log alike, and nothing per event.
    let (status, _) = stack
        .call("GET", &format!("/v1/events/{}", sent[0]), &w.sk, None)
        .await;
    assert_eq!(status, 404, "the first event outlived the retention");
    let ws = format!("{}:ws:{{{}}}", stack.prefix, w.workspace);
    let mut c = redis();
    let kept: i64 = redis::cmd("HLEN")
        .arg(format!("{ws}:history"))
        .query(&mut c)
        .expect("hlen");
    let indexed: i64 = redis::cmd("XLEN")
        .arg(format!("{ws}:log"))
        .query(&mut c)
        .expect("xlen");
    assert!(sent.len() >= 60, "the producer sent {}", sent.len());
    assert!((20..=56).contains(&kept), "{kept} of {} kept", sent.len());
    assert!(
        (kept - indexed).abs() <= 1,
        "{kept} records, {indexed} entries"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ws}:*"))
        .query(&mut c)
        .expect("keys");
    assert!(keys.len() <= 8, "one key per event? {keys:?}");
    for key in ["history", "log"] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("{ws}:{key}"))
            .query(&mut c)
            .expect("ttl");
        // A retention and two sweeps (of 5 s each) after the last write.
        assert!((1..=20).contains(&ttl), "{key} expires in {ttl} s");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_that_stops_writing_loses_its_history_and_locators_on_time() {
    // Arrange: a 10 s retention; a workspace sends 8 events and stops. The buckets its
    // locators are in are kept alive, as other workspaces' writes keep them in a busy system.
    let stack = Stack::start_with(&[("HERALD_RETENTION", "10s")]).await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["idle"]).await;
    let mut sent = Vec::new();
    for n in 0..8 {
        sent.push(
            stack
                .send(&w.pk, "order.paid", "order", json!({"n": n}))
                .await,
        );
    }
    receiver.wait_for("idle", 8).await;
    let mut c = redis();
    let locator = |uuid: &str| {
        let bucket = herald_shared::store::locator::bucket(uuid);
        let key = format!("{}:loc:{bucket}", stack.prefix);
        (key, herald_shared::store::locator::field(uuid))
    };
    for uuid in &sent {
        let (key, field) = locator(uuid);
        let held: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(&field)
            .query(&mut c)
            .expect("hget");
        assert_eq!(held.as_deref(), Some(w.workspace.as_str()), "{uuid}");
        let _: () = redis::cmd("EXPIRE")
            .arg(&key)
            .arg(300)
            .query(&mut c)
            .expect("expire");
    }

    // Act: nothing more is written; the router's sweep (every 5 s) trims what is past 10 s.
    let ws = format!("{}:ws:{{{}}}", stack.prefix, w.workspace);
    eventually(
        "the idle workspace's history trimmed",
        Duration::from_secs(30),
        || async {
            let kept: i64 = redis::cmd("HLEN")
                .arg(format!("{ws}:history"))
                .query(&mut redis())
                .expect("hlen");
            (kept == 0).then_some(())
        },
    )
    .await;

    // Assert: no locator of its events is left, and the console finds none of them.
    for uuid in &sent {
        let (key, field) = locator(uuid);
        let held: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(&field)
            .query(&mut c)
            .expect("hget");
        assert_eq!(held, None, "{uuid}'s locator outlived its history");
    }
    let (status, _) = stack
        .call("GET", &format!("/v1/admin/events/{}", sent[0]), ADMIN, None)
        .await;
    assert_eq!(status, 404);
    for uuid in &sent {
        let _: () = redis::cmd("DEL")
            .arg(locator(uuid).0)
            .query(&mut c)
            .expect("del");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resent_uuid_is_a_duplicate_within_the_dedup_window_only() {
    // Arrange: a 10 s dedup window; one event with a producer's uuid, delivered.
    let stack = Stack::start_with(&[("HERALD_DEDUP_WINDOW", "10s")]).await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["dedup"]).await;
    let envelope = json!({"event": "order.created", "resource": "order", "resource_id": "o1",
                          "payload": {"n": 1}, "uuid": "order-o1-created"});
    let send = || async {
        let (status, body) = stack
            .call("POST", "/v1/events", &w.pk, Some(envelope.clone()))
            .await;
        assert_eq!(status, 202, "{body}");
    };
    send().await;
    receiver.wait_for("dedup", 1).await;

    // Act: again at once, then again once the window has passed.
    send().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let within = receiver.received("dedup").len();
    tokio::time::sleep(Duration::from_secs(9)).await;
    send().await;

    // Assert
    assert_eq!(within, 1, "a duplicate inside the window was delivered");
    eventually(
        "delivered again after the window",
        Duration::from_secs(20),
        || async { (receiver.received("dedup").len() == 2).then_some(()) },
    )
    .await;
    stack.stop().await;
}
