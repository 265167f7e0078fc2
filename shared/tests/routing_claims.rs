//! The store on a real Redis: a producer's uuid can never spell another event's lease; a
//! replay's bookkeeping never overwrites what a deliverer recorded after it.

use std::time::Duration;

mod common;

use herald_shared::model::{Attempt, Delivery, DeliveryStatus, Event};
use herald_shared::store::dead_letters::{DeadLetter, OutcomeRow};
use herald_shared::store::history::Routed;
use herald_shared::store::routing::Claim;

use common::TestStore;

fn event(uuid: &str) -> Event {
    Event {
        uuid: uuid.into(),
        event: "order.completed".into(),
        resource: "order".into(),
        resource_id: "ord_1".into(),
        payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
        time_created: 1,
    }
}

#[tokio::test]
async fn an_event_whose_uuid_spells_another_events_lease_cannot_block_it() {
    // Arrange: event "X:routing" is recorded first, as a hostile producer would send it.
    let t = TestStore::new().await;
    let store = &t.store;
    let hostile = event("X:routing");
    store
        .record_routed(&[Routed {
            workspace_id: "ws_a",
            event: &hostile,
            connection_ids: vec!["con_1".into()],
            skipped: Vec::new(),
        }])
        .await
        .expect("recorded");

    // Act
    let claims = store
        .claim_for_routing("ws_a", &["X", "X:routing"], Duration::from_secs(20))
        .await
        .expect("claimed");

    // Assert: both are claimed by this router; neither waits on the other.
    assert_eq!(claims, vec![Claim::Taken, Claim::Taken]);
    store
        .mark_expanded("ws_a", &["X", "X:routing"])
        .await
        .expect("marked");
    let again = store
        .claim_for_routing("ws_a", &["X", "X:routing"], Duration::from_secs(20))
        .await
        .expect("claimed");
    assert_eq!(again, vec![Claim::Done, Claim::Done]);
}

fn attempt(at: i64, status: u16) -> Attempt {
    Attempt {
        at,
        status_code: Some(status),
        latency_ms: 1,
        error: None,
        response_excerpt: None,
        url: "https://example.test/hook".into(),
        request_headers: Default::default(),
    }
}

fn delivery(status: DeliveryStatus, attempts: Vec<Attempt>, dead: Option<&str>) -> Delivery {
    Delivery {
        connection_id: "con_1".into(),
        status,
        attempts,
        next_attempt_at: None,
        dead_letter_id: dead.map(str::to_string),
        updated_at: 1,
    }
}

fn row(delivery: &Delivery) -> OutcomeRow<'_> {
    OutcomeRow {
        workspace_id: "ws_a",
        uuid: "evt_r",
        time_created: 1,
        delivery,
    }
}

#[tokio::test]
async fn a_replays_bookkeeping_never_overwrites_a_newer_outcome() {
    // Arrange: a dead letter, replayed; the deliverer delivers it before the replay's
    // bookkeeping runs (the replay is published first, so this can happen).
    let t = TestStore::new().await;
    let store = &t.store;
    let e = event("evt_r");
    store
        .record_routed(&[Routed {
            workspace_id: "ws_a",
            event: &e,
            connection_ids: vec!["con_1".into()],
            skipped: Vec::new(),
        }])
        .await
        .expect("routed");
    let failed = vec![attempt(1, 500)];
    let dead = DeadLetter {
        id: "evt_r.con_1".into(),
        workspace_id: "ws_a".into(),
        connection_id: "con_1".into(),
        event: e.clone(),
        attempts: failed.clone(),
        reason: "gave up".into(),
        dead_at: 10,
    };
    let as_dead = delivery(DeliveryStatus::Dead, failed.clone(), Some("evt_r.con_1"));
    store
        .record_outcomes(&[row(&as_dead)], std::slice::from_ref(&dead))
        .await
        .expect("dead");
    let delivered = delivery(
        DeliveryStatus::Delivered,
        vec![attempt(1, 500), attempt(20, 200)],
        None,
    );
    store
        .record_outcomes(&[row(&delivered)], &[])
        .await
        .expect("delivered");

    // Act
    store.mark_replayed(&dead).await.expect("marked");

    // Assert: the delivery stays delivered, and the dead letter left the list.
    let record = store.get_event("ws_a", "evt_r").await.expect("read");
    let status = record.map(|r| r.deliveries[0].status);
    assert_eq!(status, Some(DeliveryStatus::Delivered));
    assert!(store
        .get_dead_letter("ws_a", "evt_r.con_1")
        .await
        .expect("read")
        .is_none());

    // A replay that died again has a new dead letter: the old replay's bookkeeping keeps it.
    let again = DeadLetter {
        dead_at: 30,
        attempts: vec![attempt(1, 500), attempt(25, 500)],
        ..dead.clone()
    };
    let as_dead_again = delivery(
        DeliveryStatus::Dead,
        again.attempts.clone(),
        Some("evt_r.con_1"),
    );
    store
        .record_outcomes(&[row(&as_dead_again)], std::slice::from_ref(&again))
        .await
        .expect("dead again");
    store.mark_replayed(&dead).await.expect("marked");
    let kept = store
        .get_dead_letter("ws_a", "evt_r.con_1")
        .await
        .expect("read")
        .map(|d| d.dead_at);
    assert_eq!(kept, Some(30));
}

#[tokio::test]
async fn one_claim_call_answers_each_event_of_a_message_for_itself() {
    // Arrange: in one workspace, an event already expanded, one another router is expanding,
    // and one nobody has seen.
    let t = TestStore::new().await;
    let store = &t.store;
    let lease = Duration::from_secs(20);
    let first = store
        .claim_for_routing("ws_a", &["evt_done", "evt_busy"], lease)
        .await
        .expect("claimed");
    assert_eq!(first, vec![Claim::Taken, Claim::Taken]);
    store
        .mark_expanded("ws_a", &["evt_done"])
        .await
        .expect("marked");

    // Act: a message holding all three, the new one in the middle.
    let claims = store
        .claim_for_routing("ws_a", &["evt_done", "evt_new", "evt_busy"], lease)
        .await
        .expect("claimed");

    // Assert
    assert_eq!(claims, vec![Claim::Done, Claim::Taken, Claim::Contested]);
    store
        .mark_expanded("ws_a", &["evt_new", "evt_busy"])
        .await
        .expect("marked");
    let after = store
        .claim_for_routing("ws_a", &["evt_busy", "evt_new", "evt_other"], lease)
        .await
        .expect("claimed");
    assert_eq!(after, vec![Claim::Done, Claim::Done, Claim::Taken]);
}

#[tokio::test]
async fn an_outcome_changes_its_own_delivery_and_keeps_the_others_and_the_event() {
    // Arrange: an event routed to three connections.
    let t = TestStore::new().await;
    let store = &t.store;
    let e = event("evt_s");
    store
        .record_routed(&[Routed {
            workspace_id: "ws_a",
            event: &e,
            connection_ids: vec!["con_1".into(), "con_2".into(), "con_3".into()],
            skipped: Vec::new(),
        }])
        .await
        .expect("routed");
    let for_connection = |id: &str, status, attempts| Delivery {
        connection_id: id.into(),
        ..delivery(status, attempts, None)
    };

    // Act: the middle one retries, then is delivered; the last one is delivered at once.
    let retrying = for_connection("con_2", DeliveryStatus::Retrying, vec![attempt(2, 500)]);
    let delivered_2 = for_connection(
        "con_2",
        DeliveryStatus::Delivered,
        vec![attempt(2, 500), attempt(9, 200)],
    );
    let delivered_3 = for_connection("con_3", DeliveryStatus::Delivered, vec![attempt(3, 200)]);
    let row_of = |d| OutcomeRow {
        workspace_id: "ws_a",
        uuid: "evt_s",
        time_created: 1,
        delivery: d,
    };
    for d in [&retrying, &delivered_2, &delivered_3] {
        store
            .record_outcomes(&[row_of(d)], &[])
            .await
            .expect("recorded");
    }

    // Assert: each delivery as last written, in routing order, and the event unchanged.
    let record = store
        .get_event("ws_a", "evt_s")
        .await
        .expect("read")
        .expect("found");
    let seen: Vec<(&str, DeliveryStatus, usize)> = record
        .deliveries
        .iter()
        .map(|d| (d.connection_id.as_str(), d.status, d.attempts.len()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("con_1", DeliveryStatus::Pending, 0),
            ("con_2", DeliveryStatus::Delivered, 2),
            ("con_3", DeliveryStatus::Delivered, 1),
        ]
    );
    assert_eq!(record.event.uuid, "evt_s");
    assert_eq!(record.event.resource_id, "ord_1");
    assert_eq!(record.event.payload.get(), "{}");
}
