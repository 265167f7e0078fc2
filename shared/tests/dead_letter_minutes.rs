//! The dead letters of a minute on a real Redis: a notice is never lost to a failed write of the
//! due list, a deliverer that dies after taking a minute, or a send that failed.

mod common;

use herald_shared::store::operational::TAKEN_FOR_MS;

use common::TestStore;

#[tokio::test]
async fn a_minute_stays_due_until_its_notice_is_marked_sent() {
    // Arrange: dead letters in one minute, the due list's entry lost once in between.
    let t = TestStore::new().await;
    let store = &t.store;
    let minute_ms = 30_000_000 * 60_000_i64;
    store
        .note_dead_letters(
            "ws_a",
            "con_1",
            &["evt_1", "evt_2", "evt_3"],
            minute_ms + 1_000,
        )
        .await
        .expect("noted");
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}:opdl-due", t.prefix))
        .query_async(&mut c)
        .await
        .expect("lose the due list");
    store
        .note_dead_letters("ws_a", "con_1", &["evt_4"], minute_ms + 2_000)
        .await
        .expect("noted");

    // Act and assert: taken once the minute is over, with every dead letter counted.
    let over = minute_ms + 60_000 + 2_000;
    let taken = store
        .take_dead_letter_minutes(over, 10)
        .await
        .expect("take");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].count, 4);
    assert_eq!(taken[0].event_ids, vec!["evt_4", "evt_3", "evt_2", "evt_1"]);
    // Taken: no other deliverer takes it meanwhile.
    assert!(store
        .take_dead_letter_minutes(over + 1, 10)
        .await
        .expect("take")
        .is_empty());
    // Never marked sent (the deliverer died, or the send failed): due again.
    let again = store
        .take_dead_letter_minutes(over + TAKEN_FOR_MS + 1, 10)
        .await
        .expect("take");
    assert_eq!(again, taken);
    // Sent: gone for good.
    store
        .dead_letter_minute_sent(&again[0])
        .await
        .expect("sent");
    assert!(store
        .take_dead_letter_minutes(over + 3 * TAKEN_FOR_MS, 10)
        .await
        .expect("take")
        .is_empty());
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*opdl*", t.prefix))
        .query_async(&mut c)
        .await
        .expect("keys");
    assert!(left.is_empty(), "{left:?}");
}
