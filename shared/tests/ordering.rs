//! The sequences of ordered delivery on a real Redis: one head at a time per key, in the
//! order added; copies of a head never out at once; only the copy the sequence names is sent
//! and moves it on; a finished job never comes back; a head nobody took is found by the sweep.

mod common;

use std::time::Duration;

use herald_shared::model::{Attempt, Event, JobGroup, JobItem, OrderSlot};
use herald_shared::store::ordering::{Added, Sequenced, Take, GRACE};

use common::TestStore;

const WS: &str = "ws_ord";
const CONN: &str = "con_1";
const LEASE: Duration = Duration::from_secs(20);
const GRACE_MS: i64 = GRACE.as_millis() as i64;

/// A one-job group of event `uuid` for key `key`, copy `copy`, with `attempts` attempts made.
fn group(key: &str, uuid: &str, copy: &str, attempts: usize) -> JobGroup {
    let mut job = JobItem::new(CONN);
    job.order = Some(OrderSlot {
        key: key.into(),
        overflow: false,
        copy: copy.into(),
    });
    job.attempts = (0..attempts)
        .map(|i| Attempt {
            at: i as i64,
            status_code: Some(500),
            latency_ms: 1,
            error: Some("status 500".into()),
            response_excerpt: None,
            url: "https://example.com/hook".into(),
            request_headers: Default::default(),
        })
        .collect();
    JobGroup {
        workspace_id: WS.into(),
        event: Event {
            uuid: uuid.into(),
            event: "order.updated".into(),
            resource: "order".into(),
            resource_id: key.into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
            time_created: 1,
        },
        jobs: vec![job],
    }
}

fn job<'a>(key: &'a str, uuid: &'a str, copy: &'a str) -> Sequenced<'a> {
    Sequenced {
        connection_id: CONN,
        key,
        uuid,
        copy,
        body: serde_json::to_string(&group(key, uuid, copy, 0)).expect("json"),
    }
}

/// The event, copy and attempts of a body the store answered.
fn read(body: &str) -> (String, String, usize) {
    let g: JobGroup = serde_json::from_str(body).expect("a one-job group");
    let job = &g.jobs[0];
    let order = job.order.as_ref().expect("ordered");
    (g.event.uuid.clone(), order.copy.clone(), job.attempts.len())
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
                job("a", "e1", "c1"),
                job("a", "e2", "c2"),
                job("b", "e3", "c3"),
                job("a", "e4", "c4"),
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
    let take = |uuid: &'static str, copy: String, at: i64| async move {
        s.take_ordered(WS, CONN, "a", uuid, &copy, at, LEASE)
            .await
            .expect("take")
    };
    assert_eq!(
        take("e2", "c2".into(), 1_001).await,
        Take::Stale,
        "a job behind the head is not sent"
    );
    assert_eq!(take("e1", "c1".into(), 1_001).await, Take::Send);
    let next = s
        .finish_ordered(WS, CONN, "a", "e1", "c1", 1_002)
        .await
        .expect("finish")
        .expect("the next head");
    let (uuid, copy, _) = read(&next);
    assert_eq!(uuid, "e2");
    assert_ne!(copy, "c2", "the next head goes out as a new copy");
    assert_eq!(
        take("e2", "c2".into(), 1_003).await,
        Take::Stale,
        "the copy the router made is not the one to send"
    );
    assert_eq!(take("e2", copy.clone(), 1_003).await, Take::Send);
    let next = s
        .finish_ordered(WS, CONN, "a", "e2", &copy, 1_004)
        .await
        .expect("finish")
        .expect("the next head");
    let (uuid, copy, _) = read(&next);
    assert_eq!(uuid, "e4");
    assert_eq!(take("e4", copy.clone(), 1_005).await, Take::Send);
    let next = s
        .finish_ordered(WS, CONN, "a", "e4", &copy, 1_006)
        .await
        .expect("finish");
    assert!(next.is_none(), "key a is done");
    assert_eq!(
        s.take_ordered(WS, CONN, "b", "e3", "c3", 1_007, LEASE)
            .await
            .expect("take"),
        Take::Send,
        "key b was never held up by key a"
    );
}

#[tokio::test]
async fn a_second_copy_of_a_head_waits_while_the_first_is_out_and_is_dropped_after() {
    let t = TestStore::new().await;
    let s = &t.store;
    s.add_ordered(WS, &[job("k", "e1", "c1"), job("k", "e2", "c2")], 0, 100)
        .await
        .expect("add");
    let take = |at: i64| async move {
        s.take_ordered(WS, CONN, "k", "e1", "c1", at, LEASE)
            .await
            .expect("take")
    };

    assert_eq!(take(10).await, Take::Send);
    // A redelivery of the same message while the first is being sent: it waits.
    assert_eq!(take(20).await, Take::Busy);
    // Its sender died: after the lease the redelivered copy may go.
    assert_eq!(take(10 + LEASE.as_millis() as i64 + 1).await, Take::Send);
    s.finish_ordered(WS, CONN, "k", "e1", "c1", 30_000)
        .await
        .expect("finish");
    // Any copy of it that turns up later is dropped: e2 may have been sent already.
    assert_eq!(take(30_001).await, Take::Stale);
}

#[tokio::test]
async fn only_the_copy_that_holds_the_head_moves_it_on() {
    let t = TestStore::new().await;
    let s = &t.store;
    s.add_ordered(WS, &[job("k", "e1", "c1"), job("k", "e2", "c2")], 0, 100)
        .await
        .expect("add");
    assert_eq!(
        s.take_ordered(WS, CONN, "k", "e1", "c1", 1, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
    // c1's sender outlived its lease; the sweep publishes e1 again, and that copy is taken.
    let after_lease = 1 + LEASE.as_millis() as i64 + GRACE_MS + 1;
    let heads = s.overdue_ordered(WS, after_lease, 10).await.expect("sweep");
    assert_eq!(heads.len(), 1);
    let (uuid, swept, _) = read(&heads[0]);
    assert_eq!(uuid, "e1");
    assert_eq!(
        s.take_ordered(WS, CONN, "k", "e1", &swept, after_lease, LEASE)
            .await
            .expect("take"),
        Take::Send
    );

    // The late first sender finishing, or letting go, changes nothing: e2 does not go while
    // the sweep's copy of e1 is out.
    let next = s
        .finish_ordered(WS, CONN, "k", "e1", "c1", after_lease + 1)
        .await
        .expect("finish");
    assert!(
        next.is_none(),
        "a copy that no longer holds the head finishes nothing"
    );
    s.release_ordered(WS, CONN, "k", "e1", "c1", "c9", "{}", after_lease + 2)
        .await
        .expect("release");
    assert_eq!(
        s.take_ordered(WS, CONN, "k", "e1", &swept, after_lease + 3, LEASE)
            .await
            .expect("take"),
        Take::Busy,
        "the sweep's copy still holds the key"
    );
    let next = s
        .finish_ordered(WS, CONN, "k", "e1", &swept, after_lease + 4)
        .await
        .expect("finish")
        .expect("the next head");
    assert_eq!(read(&next).0, "e2");
}

#[tokio::test]
async fn a_retried_head_the_sweep_publishes_again_keeps_its_attempts_and_one_chain() {
    let t = TestStore::new().await;
    let s = &t.store;
    s.add_ordered(WS, &[job("k", "e1", "c1")], 0, 100)
        .await
        .expect("add");
    assert_eq!(
        s.take_ordered(WS, CONN, "k", "e1", "c1", 1, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
    // The attempt failed: it comes back at 1,000 as copy r1, with its attempt.
    let retried = serde_json::to_string(&group("k", "e1", "r1", 1)).expect("json");
    s.release_ordered(WS, CONN, "k", "e1", "c1", "r1", &retried, 1_000)
        .await
        .expect("release");

    // Nothing to sweep while the retry is not overdue.
    let heads = s.overdue_ordered(WS, 1_000, 10).await.expect("sweep");
    assert!(heads.is_empty(), "the retry is on its way: {heads:?}");

    // The retry is late (the jobs queue is behind): the sweep publishes it again.
    let late = 1_000 + GRACE_MS + 1;
    let heads = s.overdue_ordered(WS, late, 10).await.expect("sweep");
    assert_eq!(heads.len(), 1);
    let (uuid, swept, attempts) = read(&heads[0]);
    assert_eq!((uuid.as_str(), attempts), ("e1", 1), "with its attempt");
    assert_ne!(swept, "r1");
    // The late retry copy turns up: dropped, so the job does not go on twice.
    assert_eq!(
        s.take_ordered(WS, CONN, "k", "e1", "r1", late + 1, LEASE)
            .await
            .expect("take"),
        Take::Stale
    );
    assert_eq!(
        s.take_ordered(WS, CONN, "k", "e1", &swept, late + 2, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
}

#[tokio::test]
async fn a_job_added_again_after_a_router_crash_is_not_added_twice() {
    let t = TestStore::new().await;
    let s = &t.store;
    let first = s
        .add_ordered(WS, &[job("k", "e1", "c1"), job("k", "e2", "c2")], 0, 100)
        .await
        .expect("add");
    assert_eq!(first, vec![Added::Publish, Added::Queued]);

    // The router died before acknowledging: the message is routed again.
    let again = s
        .add_ordered(WS, &[job("k", "e1", "x1"), job("k", "e2", "x2")], 5, 100)
        .await
        .expect("add again");
    assert_eq!(
        again,
        vec![Added::Queued, Added::Queued],
        "in the sequence already (an unpublished head is the sweep's)"
    );
    assert_eq!(
        s.take_ordered(WS, CONN, "k", "e1", "c1", 6, LEASE)
            .await
            .expect("take"),
        Take::Send,
        "the first copy is still the one to send"
    );
    s.finish_ordered(WS, CONN, "k", "e1", "c1", 7)
        .await
        .expect("finish");
    let third = s
        .add_ordered(WS, &[job("k", "e1", "y1")], 8, 100)
        .await
        .expect("add a third time");
    assert_eq!(third, vec![Added::Finished]);
}

#[tokio::test]
async fn a_full_sequence_refuses_more_jobs() {
    let t = TestStore::new().await;
    let added = t
        .store
        .add_ordered(
            WS,
            &[
                job("k", "e1", "c1"),
                job("k", "e2", "c2"),
                job("k", "e3", "c3"),
            ],
            0,
            2,
        )
        .await
        .expect("add");
    assert_eq!(added, vec![Added::Publish, Added::Queued, Added::Full]);
}

#[tokio::test]
async fn the_sweep_publishes_a_head_nobody_took_once() {
    let t = TestStore::new().await;
    let s = &t.store;
    s.add_ordered(
        WS,
        &[job("a", "e1", "c1"), job("b", "f1", "d1")],
        1_000,
        100,
    )
    .await
    .expect("add");
    // Key b's head is taken in time; key a's publish was lost.
    s.take_ordered(WS, CONN, "b", "f1", "d1", 1_001, LEASE)
        .await
        .expect("take");

    let due = 1_000 + GRACE_MS + 1;
    let heads = s.overdue_ordered(WS, due, 10).await.expect("sweep");
    assert_eq!(heads.len(), 1, "only the head nobody took");
    assert_eq!(read(&heads[0]).0, "e1");
    let heads = s.overdue_ordered(WS, due, 10).await.expect("sweep again");
    assert!(heads.is_empty(), "one sweep publishes it, not every router");
}

#[tokio::test]
async fn a_job_its_sequence_never_knew_is_sent_rather_than_lost() {
    let t = TestStore::new().await;
    assert_eq!(
        t.store
            .take_ordered(WS, CONN, "k", "e_lost", "c", 1, LEASE)
            .await
            .expect("take"),
        Take::Send
    );
}
