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

#[tokio::test]
async fn one_write_of_many_outcomes_records_and_counts_each_as_written_alone() {
    // Arrange: two events of ws_a routed to con_1 and con_2, one event of ws_b.
    let t = TestStore::new().await;
    let store = &t.store;
    let event = |uuid: &str| Event {
        uuid: uuid.into(),
        event: "order.completed".into(),
        resource: "order".into(),
        resource_id: "ord_1".into(),
        payload: serde_json::value::RawValue::from_string("{\"n\":1}".into()).expect("json"),
        time_created: 1,
    };
    let (e1, e2, e3) = (event("evt_1"), event("evt_2"), event("evt_3"));
    let both = vec!["con_1".to_string(), "con_2".to_string()];
    store
        .record_routed(&[
            Routed {
                workspace_id: "ws_a",
                event: &e1,
                connection_ids: both.clone(),
                skipped: Vec::new(),
            },
            Routed {
                workspace_id: "ws_b",
                event: &e3,
                connection_ids: vec!["con_1".into()],
                skipped: Vec::new(),
            },
            Routed {
                workspace_id: "ws_a",
                event: &e2,
                connection_ids: both,
                skipped: Vec::new(),
            },
        ])
        .await
        .expect("routed");
    let on = |connection: &str, d: &Delivery| Delivery {
        connection_id: connection.into(),
        ..d.clone()
    };
    let ok = delivery(DeliveryStatus::Delivered, vec![attempt(200, 7)]);
    let failed = delivery(DeliveryStatus::Retrying, vec![attempt(500, 40)]);
    let (ok_1, ok_2, failed_2) = (on("con_1", &ok), on("con_2", &ok), on("con_2", &failed));

    // Act: one write of five outcomes over both workspaces, one of them twice.
    let in_ws = |ws, uuid, d| OutcomeRow {
        workspace_id: ws,
        uuid,
        time_created: 1,
        delivery: d,
    };
    store
        .record_outcomes(
            &[
                in_ws("ws_a", "evt_1", &ok_1),
                in_ws("ws_a", "evt_1", &failed_2),
                in_ws("ws_b", "evt_3", &ok_1),
                in_ws("ws_a", "evt_2", &ok_2),
                in_ws("ws_a", "evt_1", &failed_2),
            ],
            &[],
        )
        .await
        .expect("recorded");

    // Assert: each record holds its own outcomes and its event, and each attempt counts once.
    let statuses = |record: herald_shared::store::history::EventRecord| {
        assert_eq!(record.event.payload.get(), "{\"n\":1}");
        record
            .deliveries
            .iter()
            .map(|d| (d.connection_id.clone(), d.status))
            .collect::<Vec<_>>()
    };
    let read = |ws: &'static str, uuid: &'static str| async move {
        store
            .get_event(ws, uuid)
            .await
            .expect("read")
            .expect("found")
    };
    use DeliveryStatus::{Delivered, Pending, Retrying};
    assert_eq!(
        statuses(read("ws_a", "evt_1").await),
        vec![("con_1".into(), Delivered), ("con_2".into(), Retrying)]
    );
    assert_eq!(
        statuses(read("ws_a", "evt_2").await),
        vec![("con_1".into(), Pending), ("con_2".into(), Delivered)]
    );
    assert_eq!(
        statuses(read("ws_b", "evt_3").await),
        vec![("con_1".into(), Delivered)]
    );
    let now = herald_shared::now_ms();
    let counted = |ws: &'static str, connection: &'static str| async move {
        let points = store
            .connection_stats(ws, connection, now - KEPT_MS, 1)
            .await
            .expect("stats");
        (
            points.iter().map(|p| p.deliveries).sum::<u64>(),
            points.iter().map(|p| p.failures).sum::<u64>(),
        )
    };
    assert_eq!(counted("ws_a", "con_1").await, (1, 0));
    assert_eq!(counted("ws_a", "con_2").await, (2, 1));
    assert_eq!(counted("ws_b", "con_1").await, (1, 0));
}
