//! Disabling a failing connection on a real Redis: only the clock that was read can disable it,
//! and a connection changed meanwhile is left as it is.

mod common;

use std::time::Duration;

use herald_shared::model::Connection;

use common::TestStore;

fn connection() -> Connection {
    Connection::new(
        "ws_a",
        "con_1",
        "https://example.com/hook",
        herald_shared::signing::generate_secret(),
        1,
    )
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_clock_restarted_after_it_was_read_does_not_disable() {
    // Arrange: a clock read at 1,000; then a success stops it and a new failure restarts it.
    let t = TestStore::new().await;
    let store = &t.store;
    store.put_connection(&connection()).await.expect("put");
    let since = store
        .note_failure("ws_a", "con_1", 1_000, TTL)
        .await
        .expect("clock");
    store.clear_failing("ws_a", "con_1").await.expect("clear");
    store
        .note_failure("ws_a", "con_1", 50_000, TTL)
        .await
        .expect("restarted");

    // Act: the replica that read the old clock tries to disable.
    let disabled = store
        .disable_failing("ws_a", "con_1", since, 60_000)
        .await
        .expect("disable");

    // Assert: nothing disabled; the running clock is untouched.
    assert!(disabled.is_none());
    let c = store.get_connection("ws_a", "con_1").await.expect("get");
    assert!(c.expect("connection").enabled);
    let since_now = store
        .note_failure("ws_a", "con_1", 70_000, TTL)
        .await
        .expect("clock");
    assert_eq!(since_now, 50_000);
}

#[tokio::test]
async fn the_clock_that_was_read_disables_once() {
    let t = TestStore::new().await;
    let store = &t.store;
    store.put_connection(&connection()).await.expect("put");
    let since = store
        .note_failure("ws_a", "con_1", 1_000, TTL)
        .await
        .expect("clock");

    let first = store
        .disable_failing("ws_a", "con_1", since, 60_000)
        .await
        .expect("disable");
    let second = store
        .disable_failing("ws_a", "con_1", since, 60_001)
        .await
        .expect("disable again");

    let c = first.expect("disabled by the first caller");
    assert!(!c.enabled);
    assert_eq!(c.disabled_reason.as_deref(), Some("failing"));
    assert_eq!(c.disabled_at, Some(60_000));
    assert!(second.is_none(), "one caller wins");
    let stored = store
        .get_connection("ws_a", "con_1")
        .await
        .expect("get")
        .expect("connection");
    assert!(!stored.enabled);
    assert_eq!(stored.disabled_at, Some(60_000));
}

#[tokio::test]
async fn a_deleted_connection_is_not_brought_back() {
    let t = TestStore::new().await;
    let store = &t.store;
    store.put_connection(&connection()).await.expect("put");
    let since = store
        .note_failure("ws_a", "con_1", 1_000, TTL)
        .await
        .expect("clock");
    store
        .delete_connection("ws_a", "con_1")
        .await
        .expect("delete");
    // A failure settled after the delete starts a clock again.
    store
        .note_failure("ws_a", "con_1", 1_000, TTL)
        .await
        .expect("clock");

    let disabled = store
        .disable_failing("ws_a", "con_1", since, 60_000)
        .await
        .expect("disable");

    assert!(disabled.is_none());
    assert!(store
        .get_connection("ws_a", "con_1")
        .await
        .expect("get")
        .is_none());
}
