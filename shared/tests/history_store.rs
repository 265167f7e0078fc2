//! The history on a real Redis: what the API shows is exactly what was recorded, whatever the
//! compact form it is kept in; a busy workspace's history stays within the retention; a
//! producer's uuid is remembered for the dedup window and no longer.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use herald_shared::ids::new_event_id;
use herald_shared::model::{Attempt, Delivery, DeliveryStatus, Event};
use herald_shared::store::dead_letters::OutcomeRow;
use herald_shared::store::history::{EventFilter, Routed};
use herald_shared::store::routing::Claim;
use serde_json::json;

use common::TestStore;

fn redis_int(cmd: &str, key: &str) -> i64 {
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client.get_connection().expect("connection");
    redis::cmd(cmd).arg(key).query(&mut c).expect("reply")
}

fn event(uuid: &str, time_created: i64) -> Event {
    Event {
        uuid: uuid.into(),
        event: "order.completed".into(),
        resource: "order".into(),
        resource_id: "ord 77 \"quoted\"".into(),
        payload: serde_json::value::RawValue::from_string(
            r#"{"order_id": "ord_77", "total": 1.50, "items": [1e3, null]}"#.into(),
        )
        .expect("json"),
        time_created,
    }
}

fn headers(uuid: &str, at: i64, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut h: BTreeMap<String, String> = [
        ("content-type", "application/json".to_string()),
        ("user-agent", herald_shared::USER_AGENT.to_string()),
        ("webhook-id", uuid.to_string()),
        ("webhook-timestamp", (at / 1000).to_string()),
        ("webhook-signature", "v1,********".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        h.insert(k.to_string(), v.to_string());
    }
    h
}

#[tokio::test]
async fn the_api_shows_delivered_retrying_and_dead_deliveries_exactly_as_recorded() {
    // Arrange: one event to three connections, as the router and deliverers record it.
    let t = TestStore::new().await;
    let store = &t.store;
    let t = herald_shared::now_ms() - 5_000;
    let uuid = new_event_id();
    let e = event(&uuid, t);
    let cids = ["con_delivered", "con_dead", "con_retrying"];
    store
        .record_routed(&[Routed {
            workspace_id: "ws_a",
            event: &e,
            connection_ids: cids.iter().map(|c| c.to_string()).collect(),
            skipped: Vec::new(),
        }])
        .await
        .expect("routed");
    let ok = Attempt {
        at: t + 20,
        status_code: Some(200),
        latency_ms: 3,
        error: None,
        response_excerpt: None,
        url: "https://a.example/hook".into(),
        request_headers: headers(&uuid, t + 20, &[]),
    };
    let refused = Attempt {
        at: t + 25,
        status_code: None,
        latency_ms: 0,
        error: Some("not sent: the connection's circuit breaker is open".into()),
        response_excerpt: None,
        url: "https://b.example/hook".into(),
        request_headers: BTreeMap::new(),
    };
    let failed = Attempt {
        at: t + 1_500,
        status_code: Some(503),
        latency_ms: 40,
        error: Some("status 503".into()),
        response_excerpt: Some("{\"busy\": true}\n".into()),
        url: "https://b.example/hook?v=2".into(),
        request_headers: headers(
            &uuid,
            t + 1_500,
            &[
                ("authorization", "Bearer ********"),
                ("x-team", "blue"),
                ("webhook-signature", "v1,******** v1,********"),
            ],
        ),
    };
    let deliveries = vec![
        Delivery {
            connection_id: "con_dead".into(),
            status: DeliveryStatus::Dead,
            attempts: vec![refused.clone(), failed.clone()],
            next_attempt_at: None,
            dead_letter_id: Some(format!("{uuid}.con_dead")),
            updated_at: t + 1_600,
        },
        Delivery {
            connection_id: "con_delivered".into(),
            status: DeliveryStatus::Delivered,
            attempts: vec![ok],
            next_attempt_at: None,
            dead_letter_id: None,
            updated_at: t + 24,
        },
        Delivery {
            connection_id: "con_retrying".into(),
            status: DeliveryStatus::Retrying,
            attempts: vec![failed, refused],
            next_attempt_at: Some(t + 300_000),
            dead_letter_id: None,
            updated_at: t + 1_700,
        },
    ];
    let rows: Vec<OutcomeRow> = deliveries
        .iter()
        .map(|delivery| OutcomeRow {
            workspace_id: "ws_a",
            uuid: &uuid,
            time_created: t,
            delivery,
        })
        .collect();

    // Act
    store.record_outcomes(&rows, &[]).await.expect("outcomes");
    let got = store.get_event("ws_a", &uuid).await.expect("read");
    let (listed, _) = store
        .list_events("ws_a", &EventFilter::default(), None, 10)
        .await
        .expect("list");

    // Assert: the JSON the API serialises is what was recorded, field for field.
    let mut expected = serde_json::to_value(&e).expect("event");
    expected["status"] = json!("dead");
    expected["deliveries"] = serde_json::to_value(&deliveries).expect("deliveries");
    let got = serde_json::to_value(got.expect("kept")).expect("json");
    assert_eq!(got, expected);
    assert_eq!(
        got["payload"].to_string(),
        serde_json::to_value(&e).expect("e")["payload"].to_string()
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(serde_json::to_value(&listed[0]).expect("json"), expected);
    assert_eq!(
        store
            .attempts_recorded("ws_a", &uuid, "con_retrying")
            .await
            .expect("read"),
        Some(2)
    );
}

#[tokio::test]
async fn a_busy_workspace_keeps_no_history_older_than_its_retention() {
    // Arrange: a workspace with a 10 s retention holds 40 events recorded 50 s ago.
    let t = TestStore::with(&[("HERALD_RETENTION", "10s")]).await;
    let (store, prefix) = (&t.store, &t.prefix);
    let now = herald_shared::now_ms();
    let old: Vec<Event> = (0..40)
        .map(|_| event(&new_event_id(), now - 50_000))
        .collect();
    let history = format!("{prefix}:ws:{{ws_busy}}:history");
    let log = format!("{prefix}:ws:{{ws_busy}}:log");
    for e in &old {
        // One at a time, as a trickle of traffic would come; each write trims what is older.
        let routed = Routed {
            workspace_id: "ws_busy",
            event: e,
            connection_ids: vec!["con_1".into()],
            skipped: Vec::new(),
        };
        store.record_routed(&[routed]).await.expect("routed");
    }

    // Act: the workspace keeps writing.
    let fresh: Vec<Event> = (0..5).map(|_| event(&new_event_id(), now)).collect();
    let routed: Vec<Routed> = fresh
        .iter()
        .map(|e| Routed {
            workspace_id: "ws_busy",
            event: e,
            connection_ids: vec!["con_1".into()],
            skipped: Vec::new(),
        })
        .collect();
    store.record_routed(&routed).await.expect("routed");

    // Assert: only the five inside the window remain, in the history and in its index.
    assert_eq!(redis_int("HLEN", &history), 5);
    assert_eq!(redis_int("XLEN", &log), 5);
    assert!(store
        .get_event("ws_busy", &old[0].uuid)
        .await
        .expect("read")
        .is_none());
    assert!(store
        .get_event("ws_busy", &fresh[0].uuid)
        .await
        .expect("read")
        .is_some());
    let ttl = redis_int("TTL", &history);
    assert!(
        (1..=20).contains(&ttl),
        "the hash expires a retention and two sweeps (5 s each) after the last write: {ttl}"
    );
}

#[tokio::test]
async fn a_uuid_is_remembered_for_the_dedup_window_and_no_longer() {
    // Arrange: a 10 s dedup window inside a day's retention; an event expanded once.
    let t = TestStore::with(&[("HERALD_DEDUP_WINDOW", "10s"), ("HERALD_RETENTION", "1d")]).await;
    let store = &t.store;
    let e = event("producer-uuid-1", herald_shared::now_ms());
    let routed = Routed {
        workspace_id: "ws_a",
        event: &e,
        connection_ids: vec!["con_1".into()],
        skipped: Vec::new(),
    };
    store.record_routed(&[routed]).await.expect("routed");
    let lease = Duration::from_secs(20);
    let first = store
        .claim_for_routing("ws_a", &[&e.uuid], lease)
        .await
        .expect("claim");
    store
        .mark_expanded("ws_a", &[&e.uuid])
        .await
        .expect("marked");

    // Act
    let within = store
        .claim_for_routing("ws_a", &[&e.uuid], lease)
        .await
        .expect("claim");
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let after = store
        .claim_for_routing("ws_a", &[&e.uuid], lease)
        .await
        .expect("claim");

    // Assert: a duplicate inside the window; a new event after it (its history still kept).
    assert_eq!(first, vec![Claim::Taken]);
    assert_eq!(within, vec![Claim::Done]);
    assert_eq!(after, vec![Claim::Taken]);
    assert!(store
        .get_event("ws_a", &e.uuid)
        .await
        .expect("read")
        .is_some());
}

#[tokio::test]
async fn a_dedup_window_longer_than_the_retention_keeps_a_claim_that_expires_with_it() {
    // Arrange: a 10 s retention and a 20 s window; the event's history is trimmed first.
    let t = TestStore::with(&[("HERALD_DEDUP_WINDOW", "20s"), ("HERALD_RETENTION", "10s")]).await;
    let (store, prefix) = (&t.store, &t.prefix);
    let e = event("producer-uuid-2", herald_shared::now_ms());
    let lease = Duration::from_secs(20);
    store
        .claim_for_routing("ws_a", &[&e.uuid], lease)
        .await
        .expect("claim");
    store
        .mark_expanded("ws_a", &[&e.uuid])
        .await
        .expect("marked");

    // Act and assert: the claim holds past the record, with a TTL of the window.
    let ttl = redis_int("PTTL", &format!("{prefix}:ws:{{ws_a}}:idem:{}", e.uuid));
    assert!((10_000..=20_000).contains(&ttl), "{ttl}");
    let again = store
        .claim_for_routing("ws_a", &[&e.uuid], lease)
        .await
        .expect("claim");
    assert_eq!(again, vec![Claim::Done]);
}
