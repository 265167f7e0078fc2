//! The PostgreSQL archive: final history older than the hot window moves there and is read
//! back through every endpoint, a cursor walks across the seam, one workspace never reads
//! another's rows, and partitions past the retention are dropped.

use std::collections::HashSet;
use std::time::Duration;

use herald_e2e::pg::TestDb;
use herald_e2e::{eventually, Behaviour, Receiver, Stack, ADMIN};
use serde_json::{json, Value};

async fn archived(db: &TestDb, ws: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM herald_history WHERE workspace_id = $1",
            &[&ws],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn hot(stack: &Stack, ws: &str) -> i64 {
    let mut c = redis::Client::open(herald_e2e::prefix::REDIS_URL)
        .and_then(|c| c.get_connection())
        .expect("redis");
    redis::cmd("HLEN")
        .arg(format!("{}:ws:{{{ws}}}:history", stack.prefix))
        .query(&mut c)
        .expect("hlen")
}

/// Every page of `path` (which has a query already), `limit` a page.
async fn walk(stack: &Stack, path: &str, token: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1_000 {
        let url = format!("{path}&limit={limit}&cursor={cursor}");
        let (status, body) = stack.call("GET", &url, token, None).await;
        assert_eq!(status, 200, "{url}: {body}");
        let data = body["data"].as_array().expect("data");
        assert!(data.len() <= limit);
        all.extend(data.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return all,
        }
    }
    panic!("the walk does not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_history_moves_to_the_archive_and_reads_back_the_same() {
    // Arrange: a 10 s hot window; workspace A delivers 30 events, and one more whose second
    // delivery keeps failing (retrying, so it stays in Redis); workspace B has its own key.
    let db = TestDb::create().await;
    let stack = Stack::start_with(&[
        ("HERALD_ARCHIVE_URL", db.url.as_str()),
        ("HERALD_HOT_WINDOW", "10s"),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.set("fail", Behaviour::Always(500));
    let a = stack.wired(&receiver, &["ok"]).await;
    let (failing, _) = stack
        .connection(&a.sk, &receiver.url("fail"), json!({}))
        .await;
    stack.rule(&a.sk, "order.stuck", "order", &failing).await;
    let b = stack.wired(&receiver, &["b"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent = Vec::new();
    for n in 0..30 {
        sent.push(
            stack
                .send(&a.pk, "order.paid", "order", json!({"n": n}))
                .await,
        );
    }
    let stuck = stack
        .send(&a.pk, "order.stuck", "order", json!({"n": 30}))
        .await;
    receiver.wait_for("ok", 31).await;
    let mut before = Vec::new();
    for uuid in &sent {
        let body = stack
            .event_when(&a.sk, uuid, "delivered", |b| b["status"] == "delivered")
            .await;
        before.push(body);
    }

    // Act: wait out the hot window and the archiver's pass.
    eventually("30 events archived", Duration::from_secs(40), || async {
        (archived(&db, &a.workspace).await == 30).then_some(())
    })
    .await;

    // Assert: Redis keeps only the retrying one; each archived event reads back the same.
    assert_eq!(hot(&stack, &a.workspace), 1, "only the held event stays");
    let (status, body) = stack
        .call("GET", &format!("/v1/events/{stuck}"), &a.sk, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "retrying", "{body}");
    for (uuid, earlier) in sent.iter().zip(&before) {
        let (status, now) = stack
            .call("GET", &format!("/v1/events/{uuid}"), &a.sk, None)
            .await;
        assert_eq!(status, 200, "{uuid}: {now}");
        assert_eq!(&now, earlier, "{uuid} reads back differently");
    }

    // Assert: a walk of the list with pages of 7 crosses from Redis into the archive with
    // every event once, newest first, and filters apply to both tiers.
    let listed = walk(&stack, "/v1/events?", &a.sk, 7).await;
    let uuids: Vec<&str> = listed
        .iter()
        .map(|e| e["uuid"].as_str().expect("uuid"))
        .collect();
    let distinct: HashSet<&str> = uuids.iter().copied().collect();
    assert_eq!(uuids.len(), 31, "{uuids:?}");
    assert_eq!(distinct.len(), 31, "an event listed twice");
    let expected: HashSet<&str> = sent.iter().chain([&stuck]).map(String::as_str).collect();
    assert_eq!(distinct, expected);
    let one_page = walk(&stack, "/v1/events?", &a.sk, 100).await;
    let in_one: Vec<&str> = one_page
        .iter()
        .map(|e| e["uuid"].as_str().expect("uuid"))
        .collect();
    assert_eq!(
        uuids, in_one,
        "pages of 7 list in another order than one page"
    );
    let delivered = walk(&stack, "/v1/events?status=delivered", &a.sk, 4).await;
    assert_eq!(delivered.len(), 30);

    // Assert: the console finds an archived event by uuid, and searches the archive.
    let (status, found) = stack
        .call("GET", &format!("/v1/admin/events/{}", sent[3]), ADMIN, None)
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["workspace_id"], a.workspace.as_str());
    let searched = walk(
        &stack,
        &format!("/v1/admin/events?workspace_id={}", a.workspace),
        ADMIN,
        10,
    )
    .await;
    assert_eq!(searched.len(), 31);

    // Assert: workspace B reads nothing of A's archive.
    let (status, _) = stack
        .call("GET", &format!("/v1/events/{}", sent[3]), &b.sk, None)
        .await;
    assert_eq!(status, 404, "B read A's archived event");
    let of_b = walk(&stack, "/v1/events?", &b.sk, 10).await;
    assert!(of_b.is_empty(), "B listed A's events: {of_b:?}");
    stack.stop().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_partitions_past_the_retention_are_dropped_whole() {
    // Arrange: partitions of 10 s, a 20 s retention, a 10 s hot window.
    let db = TestDb::create().await;
    let stack = Stack::start_with(&[
        ("HERALD_ARCHIVE_URL", db.url.as_str()),
        ("HERALD_HOT_WINDOW", "10s"),
        ("HERALD_ARCHIVE_PARTITION", "10s"),
        ("HERALD_RETENTION", "20s"),
    ])
    .await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["p"]).await;
    for n in 0..10 {
        stack
            .send(&w.pk, "order.paid", "order", json!({"n": n}))
            .await;
    }
    receiver.wait_for("p", 10).await;
    eventually("archived", Duration::from_secs(40), || async {
        (archived(&db, &w.workspace).await == 10).then_some(())
    })
    .await;
    let client = db.client().await;
    let partitions = || async {
        client
            .query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'herald_history'",
                &[],
            )
            .await
            .expect("partitions")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let made = partitions().await;
    assert!(!made.is_empty());

    // Act: the archiver drops partitions once a minute; wait for it.
    eventually(
        "the partitions dropped",
        Duration::from_secs(100),
        || async {
            let left = partitions().await;
            made.iter().all(|p| !left.contains(p)).then_some(())
        },
    )
    .await;

    // Assert: the rows went with their partitions.
    assert_eq!(archived(&db, &w.workspace).await, 0);
    stack.stop().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_event_stays_in_redis_until_its_dead_letter_is_discarded_then_moves() {
    // Arrange: no retries, so a refused delivery dies at once; a 10 s hot window.
    let db = TestDb::create().await;
    let stack = Stack::start_with(&[
        ("HERALD_ARCHIVE_URL", db.url.as_str()),
        ("HERALD_HOT_WINDOW", "10s"),
        ("HERALD_RETRY_SCHEDULE", "none"),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.set("dead", Behaviour::Always(500));
    let w = stack.wired(&receiver, &["dead"]).await;
    let uuid = stack
        .send(&w.pk, "order.paid", "order", json!({"n": 1}))
        .await;
    let dead = stack
        .event_when(&w.sk, &uuid, "dead", |b| b["status"] == "dead")
        .await;

    // Act: past the hot window and a few passes, it is still in Redis (its dead letter can be
    // replayed); then the dead letter is discarded.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(archived(&db, &w.workspace).await, 0, "a dead event moved");
    assert_eq!(hot(&stack, &w.workspace), 1);
    let letter = dead["deliveries"][0]["dead_letter_id"]
        .as_str()
        .expect("dead_letter_id")
        .to_string();
    let (status, body) = stack
        .call("DELETE", &format!("/v1/dead-letters/{letter}"), &w.sk, None)
        .await;
    assert_eq!(status, 204, "{body}");

    // Assert: now final, it moves, and reads back as it was.
    eventually("moved once discarded", Duration::from_secs(30), || async {
        (archived(&db, &w.workspace).await == 1).then_some(())
    })
    .await;
    assert_eq!(hot(&stack, &w.workspace), 0);
    let (status, now) = stack
        .call("GET", &format!("/v1/events/{uuid}"), &w.sk, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(now, dead);
    stack.stop().await;
    db.drop_db().await;
}
