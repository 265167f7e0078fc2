//! Routing claims on a real Redis: a producer's uuid can never spell another event's lease.

use std::time::Duration;

use herald_shared::config::{CommonSettings, Source};
use herald_shared::ids::random_base62;
use herald_shared::model::Event;
use herald_shared::store::history::Routed;
use herald_shared::store::routing::Claim;
use herald_shared::store::Store;
use tokio_util::sync::CancellationToken;

async fn store(prefix: &str) -> Store {
    let settings = CommonSettings::from_source(&Source::from_pairs([(
        "HERALD_REDIS_PREFIX",
        prefix.to_string(),
    )]))
    .expect("settings");
    Store::connect(&settings, &CancellationToken::new())
        .await
        .expect("redis")
}

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

/// Deletes every key under the test's own prefix, even when the test failed.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open("redis://127.0.0.1:6379") else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        for k in keys {
            let _: Result<(), _> = redis::cmd("DEL").arg(k).query(&mut c);
        }
    }
}

#[tokio::test]
async fn an_event_whose_uuid_spells_another_events_lease_cannot_block_it() {
    // Arrange: event "X:routing" is recorded first, as a hostile producer would send it.
    let prefix = format!("herald-test-{}", random_base62(10));
    let _cleanup = Cleanup(prefix.clone());
    let store = store(&prefix).await;
    let hostile = event("X:routing");
    store
        .record_routed(&[Routed {
            workspace_id: "ws_a",
            event: &hostile,
            connection_ids: vec!["con_1".into()],
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
