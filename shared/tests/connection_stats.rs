//! A connection's stats on a real Redis: each outcome write counts its newest attempt and its
//! dead letter once, however often the same write is sent, and the buckets expire.

mod common;

use herald_shared::model::{Attempt, Delivery, DeliveryStatus, Event};
use herald_shared::store::dead_letters::{DeadLetter, OutcomeRow};
use herald_shared::store::history::Routed;
use herald_shared::store::stats::{BUCKET_MS, KEPT_MS, TTL_SECS};

use common::TestStore;

fn attempt(status: u16, latency_ms: u64) -> Attempt {
    Attempt {
        at: herald_shared::now_ms(),
        status_code: Some(status),
        latency_ms,
        error: (status >= 400).then(|| format!("status {status}")),
        response_excerpt: None,
        url: "https://example.test/hook".into(),
        request_headers: Default::default(),
    }
}

fn delivery(status: DeliveryStatus, attempts: Vec<Attempt>) -> Delivery {
    Delivery {
        connection_id: "con_1".into(),
        status,
        attempts,
        next_attempt_at: None,
        dead_letter_id: None,
        updated_at: herald_shared::now_ms(),
    }
}

fn row<'a>(uuid: &'a str, delivery: &'a Delivery) -> OutcomeRow<'a> {
    OutcomeRow {
        workspace_id: "ws_a",
        uuid,
        time_created: 1,
        delivery,
    }
}

#[tokio::test]
async fn each_attempt_and_dead_letter_is_counted_once_however_often_it_is_written() {
    // Arrange: an event routed to con_1.
    let t = TestStore::new().await;
    let store = &t.store;
    let event = Event {
        uuid: "evt_s".into(),
        event: "order.completed".into(),
        resource: "order".into(),
        resource_id: "ord_1".into(),
        payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
        time_created: 1,
    };
    store
        .record_routed(&[Routed {
            workspace_id: "ws_a",
            event: &event,
            connection_ids: vec!["con_1".into()],
            skipped: Vec::new(),
        }])
        .await
        .expect("routed");

    // Act: a failed attempt, written twice (a write sent again after a lost reply); a second
    // failed attempt that dead-letters it, twice; then a replay delivered, on another event.
    let first = delivery(DeliveryStatus::Retrying, vec![attempt(500, 40)]);
    for _ in 0..2 {
        store
            .record_outcomes(&[row("evt_s", &first)], &[])
            .await
            .expect("first");
    }
    let dead = delivery(
        DeliveryStatus::Dead,
        vec![attempt(500, 40), attempt(503, 1_200)],
    );
    let letter = DeadLetter {
        id: "evt_s.con_1".into(),
        workspace_id: "ws_a".into(),
        connection_id: "con_1".into(),
        event: event.clone(),
        attempts: dead.attempts.clone(),
        reason: "gave up".into(),
        dead_at: dead.updated_at,
    };
    // A settle retry builds its rows again: the same outcome with a later update time.
    for later in [0, 1_000] {
        let dead = Delivery {
            updated_at: dead.updated_at + later,
            ..dead.clone()
        };
        store
            .record_outcomes(&[row("evt_s", &dead)], std::slice::from_ref(&letter))
            .await
            .expect("dead");
    }
    let ok = delivery(DeliveryStatus::Delivered, vec![attempt(200, 7)]);
    store
        .record_outcomes(&[row("evt_t", &ok)], &[])
        .await
        .expect("delivered");

    // Assert: three attempts, two failed, one dead letter.
    let now = herald_shared::now_ms();
    let points = store
        .connection_stats("ws_a", "con_1", now - KEPT_MS, 1)
        .await
        .expect("stats");
    assert_eq!(
        points.len(),
        289,
        "a day of 5-minute points and the one in progress"
    );
    assert!(points.windows(2).all(|w| w[1].at - w[0].at == BUCKET_MS));
    let sum = |f: fn(&herald_shared::store::stats::StatsPoint) -> u64| -> u64 {
        points.iter().map(f).sum()
    };
    assert_eq!(sum(|p| p.deliveries), 3);
    assert_eq!(sum(|p| p.failures), 2);
    assert_eq!(sum(|p| p.dead_letters), 1);
    let busy: Vec<_> = points.iter().filter(|p| p.deliveries > 0).collect();
    assert!(busy
        .iter()
        .all(|p| p.p50_ms.is_some() && p.p95_ms.is_some()));
    assert!(points
        .iter()
        .filter(|p| p.deliveries == 0)
        .all(|p| p.p50_ms.is_none() && p.success_rate.is_none()));

    // Every bucket written expires a little more than a day after its last write.
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:ws:{{ws_a}}:stats:*", t.prefix))
        .query_async(&mut c)
        .await
        .expect("keys");
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("ttl");
        assert!(ttl > 24 * 3600 && ttl <= TTL_SECS, "{key}: {ttl}");
    }
}
