//! The sequences of ordered delivery on a real Redis: one head at a time per key, in the
//! order added; copies of a head never out at once; a finished job never comes back; a head
//! nobody took is found by the sweep.

mod common;

use std::time::Duration;

use herald_shared::store::ordering::{Added, Sequenced, Take, GRACE};

use common::TestStore;

const WS: &str = "ws_ord";
const CONN: &str = "con_1";
const LEASE: Duration = Duration::from_secs(20);

fn job<'a>(key: &'a str, uuid: &'a str) -> Sequenced<'a> {
    Sequenced {
        connection_id: CONN,
        key,
        uuid,
        body: format!("body-of-{uuid}"),
    }
}

#[tokio::test]
async fn only_the_head_of_each_key_is_published_and_the_next_follows_when_it_is_final() {
    // Arrange
    let t = TestStore::new().await;
    let s = &t.store;

    // Act: three events of key a, one of key b, in one message.
    let added = s
        .add_ordered(
            WS,
            &[
                job("a", "e1"),
                job("a", "e2"),
                job("b", "e3"),
                job("a", "e4"),
            ],
            1_000,
            100,
        )
        .await
        .expect("add");

    // Assert: the first of each key goes out; the rest wait.
    assert_eq!(
        added,
        vec![Added::Publish, Added::Queued, Added::Publish, Added::Queued]
    );
    assert_eq!(
        s.take_ordered(WS, CONN, "a", "e2", 1_001, LEASE)
            .await
            .expect("take"),
        Take::Stale,
        "a job behind the head is not sent"
    );
    assert_eq!(
        s.take_ordered(WS, CONN, "a", "e1", 1_001, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
    let next = s
        .finish_ordered(WS, CONN, "a", "e1", 1_002)
        .await
        .expect("finish");
    assert_eq!(next.as_deref(), Some("body-of-e2"));
    s.take_ordered(WS, CONN, "a", "e2", 1_003, LEASE)
        .await
        .expect("take");
    let next = s
        .finish_ordered(WS, CONN, "a", "e2", 1_004)
        .await
        .expect("finish");
    assert_eq!(next.as_deref(), Some("body-of-e4"));
    let next = s
        .finish_ordered(WS, CONN, "a", "e4", 1_005)
        .await
        .expect("finish");
    assert_eq!(next, None, "key a is empty");
}

#[tokio::test]
async fn a_second_copy_of_a_head_waits_while_the_first_is_out_and_is_dropped_after() {
    // Arrange: a head taken by one deliverer.
    let t = TestStore::new().await;
    let s = &t.store;
    s.add_ordered(WS, &[job("a", "e1"), job("a", "e2")], 1_000, 100)
        .await
        .expect("add");
    assert_eq!(
        s.take_ordered(WS, CONN, "a", "e1", 1_000, LEASE)
            .await
            .expect("take"),
        Take::Send
    );

    // Act + Assert: a copy (a redelivery, a stand-in) is told to wait while the lease runs ...
    assert_eq!(
        s.take_ordered(WS, CONN, "a", "e1", 2_000, LEASE)
            .await
            .expect("take"),
        Take::Busy
    );
    // ... may go once the lease ran out (its holder died) ...
    let after_lease = 1_000 + LEASE.as_millis() as i64 + 1;
    assert_eq!(
        s.take_ordered(WS, CONN, "a", "e1", after_lease, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
    // ... and is dropped once the head is final: it never goes out after e2.
    s.finish_ordered(WS, CONN, "a", "e1", after_lease + 1)
        .await
        .expect("finish");
    assert_eq!(
        s.take_ordered(WS, CONN, "a", "e1", after_lease + 2, LEASE)
            .await
            .expect("take"),
        Take::Stale
    );
    assert_eq!(
        s.finish_ordered(WS, CONN, "a", "e1", after_lease + 3)
            .await
            .expect("finish"),
        None,
        "finishing it twice does not skip e2"
    );
    assert_eq!(
        s.take_ordered(WS, CONN, "a", "e2", after_lease + 4, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
}

#[tokio::test]
async fn a_job_added_again_after_a_router_crash_is_published_again_only_while_it_is_the_untaken_head(
) {
    // Arrange
    let t = TestStore::new().await;
    let s = &t.store;
    s.add_ordered(WS, &[job("a", "e1"), job("a", "e2")], 1_000, 100)
        .await
        .expect("add");

    // Act + Assert: the same message routed again before e1 was taken: e1 goes out again.
    let again = s
        .add_ordered(WS, &[job("a", "e1"), job("a", "e2")], 1_100, 100)
        .await
        .expect("add again");
    assert_eq!(again, vec![Added::Publish, Added::Queued]);

    // Once e1 is finished, adding it again does not bring it back.
    s.take_ordered(WS, CONN, "a", "e1", 1_200, LEASE)
        .await
        .expect("take");
    s.finish_ordered(WS, CONN, "a", "e1", 1_300)
        .await
        .expect("finish");
    let late = s
        .add_ordered(WS, &[job("a", "e1")], 1_400, 100)
        .await
        .expect("add late");
    assert_eq!(late, vec![Added::Finished]);
}

#[tokio::test]
async fn a_full_sequence_refuses_more_jobs() {
    let t = TestStore::new().await;
    let s = &t.store;
    let added = s
        .add_ordered(
            WS,
            &[job("a", "e1"), job("a", "e2"), job("a", "e3")],
            1_000,
            2,
        )
        .await
        .expect("add");
    assert_eq!(added, vec![Added::Publish, Added::Queued, Added::Full]);
}

#[tokio::test]
async fn the_sweep_publishes_a_head_nobody_took_and_leaves_a_retrying_one_alone() {
    // Arrange: key a's head published but never taken (its publisher died); key b's head
    // taken and released to a retry due in an hour.
    let t = TestStore::new().await;
    let s = &t.store;
    s.add_ordered(WS, &[job("a", "e1"), job("b", "e2")], 1_000, 100)
        .await
        .expect("add");
    s.take_ordered(WS, CONN, "b", "e2", 1_000, LEASE)
        .await
        .expect("take");
    s.release_ordered(WS, CONN, "b", "e2", 1_000 + 3_600_000)
        .await
        .expect("release");
    let grace = GRACE.as_millis() as i64;

    // Act + Assert: not before the grace ...
    assert!(s
        .overdue_ordered(WS, 1_000 + grace - 1, 10)
        .await
        .expect("sweep")
        .is_empty());
    // ... then e1 once, and not again by a second router sweeping at the same time.
    let heads = s
        .overdue_ordered(WS, 1_000 + grace + 1, 10)
        .await
        .expect("sweep");
    assert_eq!(heads, vec!["body-of-e1".to_string()]);
    assert!(s
        .overdue_ordered(WS, 1_000 + grace + 2, 10)
        .await
        .expect("sweep")
        .is_empty());
}

#[tokio::test]
async fn a_job_its_sequence_never_knew_is_sent_rather_than_lost() {
    // A Redis that kept nothing forgot the sequence; the job in the broker still goes out.
    let t = TestStore::new().await;
    assert_eq!(
        t.store
            .take_ordered(WS, CONN, "a", "e9", 1_000, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
}
