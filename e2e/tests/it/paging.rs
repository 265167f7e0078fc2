//! Lists page by cursor, never by offset: events, dead letters and the console's search, with
//! many items at one score (a bulk request's events share a millisecond) across page
//! boundaries; bulk replays by filter, their progress and their one-at-a-time rule; the
//! console's lookup of an event by uuid.
//!
//! Histories are written straight through the store (as the router and deliverer write them)
//! so a test holds hundreds of items without sending each through the pipeline.

use std::collections::HashSet;
use std::time::Duration;

use herald_e2e::{eventually, Receiver, Stack, ADMIN};
use herald_shared::config::CommonSettings;
use herald_shared::model::{Attempt, Delivery, DeliveryStatus, Event};
use herald_shared::store::dead_letters::{DeadLetter, OutcomeRow};
use herald_shared::store::history::Routed;
use herald_shared::store::replays::Replay;
use herald_shared::store::Store;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

async fn store_of(stack: &Stack) -> Store {
    let settings = CommonSettings::from_source(stack.source()).expect("settings");
    Store::connect(&settings, &CancellationToken::new())
        .await
        .expect("redis")
}

/// A time 50 s ago, the tests' times count from: inside the retention (older dead letters and
/// log entries are trimmed by every write) and after the log's floor (an event older than a
/// minute is indexed a minute ago).
fn recent() -> i64 {
    herald_shared::now_ms() - 50_000
}

fn event(uuid: &str, kind: &str, time_created: i64) -> Event {
    Event {
        uuid: uuid.into(),
        event: kind.into(),
        resource: "order".into(),
        resource_id: "ord_1".into(),
        payload: serde_json::value::RawValue::from_string(r#"{"n":1}"#.into()).expect("json"),
        time_created,
    }
}

/// `count` events spread over `scores` milliseconds, many per millisecond, each routed to
/// `connections`.
async fn seed_events(
    store: &Store,
    ws: &str,
    count: usize,
    scores: &[i64],
    connections: &[&str],
) -> Vec<Event> {
    let events: Vec<Event> = (0..count)
        .map(|i| {
            let uuid = format!("evt_{}", herald_shared::ids::random_base62(12));
            event(&uuid, "order.created", scores[i % scores.len()])
        })
        .collect();
    for chunk in events.chunks(500) {
        let routed: Vec<Routed> = chunk
            .iter()
            .map(|e| Routed {
                workspace_id: ws,
                event: e,
                connection_ids: connections.iter().map(|c| c.to_string()).collect(),
                skipped: Vec::new(),
            })
            .collect();
        store.record_routed(&routed).await.expect("recorded");
    }
    events
}

/// A dead delivery of `e` to `connection`, dead-lettered at `dead_at`, in the history and the
/// dead-letter index, as the deliverer records it.
async fn seed_dead(store: &Store, ws: &str, connection: &str, events: &[Event], dead_at: &[i64]) {
    for (n, chunk) in events.chunks(500).enumerate() {
        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        for (i, e) in chunk.iter().enumerate() {
            let attempts = vec![Attempt {
                at: 1,
                status_code: Some(500),
                latency_ms: 3,
                error: Some("status 500".into()),
                response_excerpt: None,
                url: "http://127.0.0.1:9/down".into(),
                request_headers: Default::default(),
            }];
            let id = format!("{}.{connection}", e.uuid);
            deliveries.push(Delivery {
                connection_id: connection.into(),
                status: DeliveryStatus::Dead,
                attempts: attempts.clone(),
                next_attempt_at: None,
                dead_letter_id: Some(id.clone()),
                updated_at: 1,
            });
            dead.push(DeadLetter {
                id,
                workspace_id: ws.into(),
                connection_id: connection.into(),
                event: e.clone(),
                attempts,
                reason: "status 500".into(),
                dead_at: dead_at[(n * 500 + i) % dead_at.len()],
            });
        }
        let rows: Vec<OutcomeRow> = chunk
            .iter()
            .zip(&deliveries)
            .map(|(e, d)| OutcomeRow {
                workspace_id: ws,
                uuid: e.uuid.as_str(),
                time_created: e.time_created,
                delivery: d,
            })
            .collect();
        store.record_outcomes(&rows, &dead).await.expect("recorded");
    }
}

/// Every page of a list from `path` (which has a query already), `limit` per page; `between`
/// runs after each page with its items.
async fn walk(
    stack: &Stack,
    path: &str,
    token: &str,
    limit: usize,
    mut between: impl FnMut(&[Value]) -> Option<String>,
) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{path}&limit={limit}&cursor={cursor}");
        let (status, body) = stack.call("GET", &url, token, None).await;
        assert_eq!(status, 200, "{url}: {body}");
        let data = body["data"].as_array().expect("data").clone();
        assert!(data.len() <= limit, "a page longer than its limit");
        if let Some(discard) = between(&data) {
            let (status, body) = stack.call("DELETE", &discard, token, None).await;
            assert_eq!(status, 204, "{discard}: {body}");
        }
        pages.push(data);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return pages,
        }
        assert!(pages.len() < 1_000, "the walk does not end");
    }
}

/// Ids in the order listed; fails on an item listed twice.
fn once_each(pages: &[Vec<Value>], id: impl Fn(&Value) -> String) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in pages.iter().flatten() {
        let id = id(item);
        assert!(seen.insert(id.clone()), "{id} listed twice");
        out.push(id);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_page_through_many_at_one_millisecond_with_none_twice_and_none_skipped() {
    // Arrange: 750 events created at three milliseconds (250 each); the log indexes them in
    // the order they were recorded, never before their creation, many at one millisecond, so
    // every page boundary of 40 falls among entries that share one.
    let stack = Stack::start().await;
    let store = store_of(&stack).await;
    let (ws, sk, _) = stack.workspace().await;
    let t0 = recent();
    let events = seed_events(&store, &ws, 750, &[t0 + 1_000, t0 + 2_000, t0 + 3_000], &[]).await;

    // Act
    let pages = walk(&stack, "/v1/events?status=no_match", &sk, 40, |_| None).await;

    // Assert: each once, newest first (the last recorded first, as the log orders them), all
    // there.
    let listed = once_each(&pages, |e| e["uuid"].as_str().expect("uuid").into());
    let expected: Vec<String> = events.iter().rev().map(|e| e.uuid.clone()).collect();
    assert_eq!(listed, expected);
    assert_eq!(pages.len(), 19, "750 events in pages of 40");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_page_on_when_the_cursors_own_dead_letter_left_the_list() {
    // Arrange: 300 dead letters at two milliseconds.
    let stack = Stack::start().await;
    let store = store_of(&stack).await;
    let (ws, sk, _) = stack.workspace().await;
    let t0 = recent();
    let events = seed_events(&store, &ws, 300, &[t0 + 5_000], &["con_a"]).await;
    seed_dead(&store, &ws, "con_a", &events, &[t0 + 7_000, t0 + 8_000]).await;

    // Act: after each page, its last dead letter (the one the cursor names) is discarded, as
    // a replay or a discard would take it out while someone pages.
    let mut discarded = Vec::new();
    let pages = walk(
        &stack,
        "/v1/dead-letters?connection_id=con_a",
        &sk,
        25,
        |page| {
            let last = page.last()?["id"].as_str()?.to_string();
            discarded.push(last.clone());
            Some(format!("/v1/dead-letters/{last}"))
        },
    )
    .await;

    // Assert: every dead letter listed once, none skipped, in index order.
    let listed = once_each(&pages, |d| d["id"].as_str().expect("id").into());
    assert_eq!(listed.len(), 300);
    let mut expected: Vec<(i64, String)> = pages
        .iter()
        .flatten()
        .map(|d| {
            (
                d["dead_at"].as_i64().expect("dead_at"),
                d["id"].as_str().expect("id").into(),
            )
        })
        .collect();
    expected.sort();
    expected.reverse();
    assert_eq!(
        listed,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
    assert_eq!(discarded.len(), 12);
    let (_, left) = stack
        .call("GET", "/v1/dead-letters?limit=250", &sk, None)
        .await;
    assert_eq!(left["data"].as_array().expect("data").len(), 250);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_searches_by_cursor_and_finds_an_event_by_uuid_in_one_read() {
    // Arrange: workspace A has 400 events at two milliseconds, half to con_a and half to
    // con_b; workspace B has one event whose uuid a producer of A chose too.
    let stack = Stack::start().await;
    let store = store_of(&stack).await;
    let (a, _, _) = stack.workspace().await;
    let (b, _, _) = stack.workspace().await;
    let (t1, t2) = (recent() + 10_000, recent() + 20_000);
    let to_a = seed_events(&store, &a, 200, &[t1, t2], &["con_a"]).await;
    let to_b = seed_events(&store, &a, 200, &[t1, t2], &["con_b"]).await;
    let shared = to_a[0].clone();
    let routed = [Routed {
        workspace_id: &b,
        event: &shared,
        connection_ids: Vec::new(),
        skipped: Vec::new(),
    }];
    store.record_routed(&routed).await.expect("recorded");

    // Act: the search walks con_a's events in pages of 30; a second search keeps one
    // millisecond only.
    let pages = walk(
        &stack,
        &format!("/v1/admin/events?workspace_id={a}&connection_id=con_a"),
        ADMIN,
        30,
        |_| None,
    )
    .await;
    let window = walk(
        &stack,
        &format!("/v1/admin/events?workspace_id={a}&since={t2}&until={t2}"),
        ADMIN,
        30,
        |_| None,
    )
    .await;

    // Assert: each of con_a's events once, none of con_b's.
    let listed: HashSet<String> = once_each(&pages, |e| e["uuid"].as_str().expect("uuid").into())
        .into_iter()
        .collect();
    let expected: HashSet<String> = to_a.iter().map(|e| e.uuid.clone()).collect();
    assert_eq!(listed, expected);
    assert!(pages
        .iter()
        .flatten()
        .all(|e| e["workspace_id"] == a.as_str()));
    let in_window = once_each(&window, |e| e["uuid"].as_str().expect("uuid").into());
    assert_eq!(in_window.len(), 200, "100 of con_a and 100 of con_b at t2");
    assert!(window.iter().flatten().all(|e| e["time_created"] == t2));

    // Assert: the lookup by uuid finds the workspace from the event's locator alone, and the
    // uuid both workspaces hold names both.
    let probe = &to_b[7];
    let (status, found) = stack
        .call(
            "GET",
            &format!("/v1/admin/events/{}", probe.uuid),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["workspace_id"], a.as_str());
    assert_eq!(found["deliveries"][0]["connection_id"], "con_b");
    let mut holders = store
        .workspaces_with_event(&shared.uuid)
        .await
        .expect("lookup");
    holders.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(holders, both);
    let (status, _) = stack
        .call("GET", "/v1/admin/events/evt_nowhere", ADMIN, None)
        .await;
    assert_eq!(status, 404);
    stack.stop().await;
}

/// Polls a replay's progress until `check` holds; returns the last answer.
async fn progress_when(
    stack: &Stack,
    sk: &str,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, Duration::from_secs(60), || async {
        let (status, body) = stack
            .call("GET", &format!("/v1/dead-letters/replays/{id}"), sk, None)
            .await;
        assert_eq!(status, 200, "{body}");
        check(&body).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_by_filter_runs_in_the_background_with_its_progress_and_refuses_a_second() {
    // Arrange: 1,000 dead letters to connection A and 1,000 to B, both now pointing at a
    // receiver that answers 200.
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["a", "b"]).await;
    let (con_a, con_b) = (w.connections[0].0.clone(), w.connections[1].0.clone());
    let store = store_of(&stack).await;
    let t0 = recent();
    let dead_at: Vec<i64> = (0..10).map(|i| t0 + 10_000 + i).collect();
    let for_a = seed_events(&store, &w.workspace, 1_000, &[t0 + 5_000], &[&con_a]).await;
    seed_dead(&store, &w.workspace, &con_a, &for_a, &dead_at).await;
    let for_b = seed_events(&store, &w.workspace, 1_000, &[t0 + 5_000], &[&con_b]).await;
    seed_dead(&store, &w.workspace, &con_b, &for_b, &dead_at).await;

    // Act: replay connection A's; ask for a second replay at once.
    let (status, started) = stack
        .call(
            "POST",
            "/v1/dead-letters/replay",
            &w.sk,
            Some(json!({"connection_id": con_a})),
        )
        .await;
    let (second, refused) = stack
        .call("POST", "/v1/dead-letters/replay", &w.sk, Some(json!({})))
        .await;

    // Assert: accepted with the count it looks at; the second refused, naming the first.
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "accepted");
    assert_eq!(started["count"], 2_000);
    let id = started["replay_id"]
        .as_str()
        .expect("replay_id")
        .to_string();
    assert_eq!(second, 409, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .expect("message")
            .contains(&id),
        "{refused}"
    );

    // Assert: it finishes with A's replayed and B's looked at and left; they arrive.
    let done = progress_when(&stack, &w.sk, &id, "the replay finished", |p| {
        p["status"] == "finished"
    })
    .await;
    assert_eq!(done["replayed"], 1_000, "{done}");
    assert_eq!(done["done"], 2_000, "{done}");
    assert_eq!(done["remaining"], 0, "{done}");
    assert_eq!(done["connection_id"], con_a.as_str());
    assert!(done["last_error"].is_null(), "{done}");
    let arrived = receiver.wait_for("a", 1_000).await;
    let uuids: HashSet<&str> = arrived
        .iter()
        .filter_map(|r| r.headers.get("webhook-id")?.to_str().ok())
        .collect();
    assert_eq!(uuids.len(), 1_000);
    assert!(receiver.received("b").is_empty());
    let left = walk(
        &stack,
        "/v1/dead-letters?event=order.created",
        &w.sk,
        250,
        |_| None,
    )
    .await;
    assert_eq!(
        once_each(&left, |d| d["id"].as_str().expect("id").into()).len(),
        1_000
    );
    assert!(left
        .iter()
        .flatten()
        .all(|d| d["connection_id"] == con_b.as_str()));

    // Act: with A's replay finished, a second one may start (all that is left: B's).
    let (status, again) = stack
        .call("POST", "/v1/dead-letters/replay", &w.sk, Some(json!({})))
        .await;
    assert_eq!(status, 202, "{again}");
    let id = again["replay_id"].as_str().expect("replay_id");
    let done = progress_when(&stack, &w.sk, id, "the second replay finished", |p| {
        p["status"] == "finished"
    })
    .await;
    assert_eq!(done["replayed"], 1_000, "{done}");
    receiver.wait_for("b", 1_000).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_its_ingest_let_go_of_is_resumed_where_it_stopped() {
    replay_resumed_after_its_ingest_stopped(Stop::LetGo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_whose_ingest_was_killed_is_resumed_once_its_lease_runs_out() {
    replay_resumed_after_its_ingest_stopped(Stop::Killed).await;
}

/// How the ingest running a replay stopped after its first page.
#[derive(PartialEq)]
enum Stop {
    /// Shut down: it saved its progress and let go of the lease.
    LetGo,
    /// SIGKILLed: its progress is saved, its lease runs until it expires.
    Killed,
}

async fn replay_resumed_after_its_ingest_stopped(how: Stop) {
    // Arrange: 300 dead letters; a replay of them started by an ingest that then stopped
    // after its first page, its progress in Redis.
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["a"]).await;
    let con = w.connections[0].0.clone();
    let store = store_of(&stack).await;
    let t0 = recent();
    let events = seed_events(&store, &w.workspace, 300, &[t0 + 5_000], &[&con]).await;
    seed_dead(
        &store,
        &w.workspace,
        &con,
        &events,
        &[t0 + 9_000, t0 + 9_001],
    )
    .await;
    let now = herald_shared::now_ms();
    let mut left = Replay::new(&w.workspace, None, None, now, 300);
    assert_eq!(
        store
            .start_replay(&left, "ing_gone")
            .await
            .expect("started"),
        None
    );
    let first = store
        .dead_letters_page(&w.workspace, &left.position(), 100)
        .await
        .expect("page");
    // The page it got through: looked at, not replayed (so the resumed walk must not redo it).
    left.examined = 100;
    left.cursor = Some(first.last().expect("a page").0.encode());
    match how {
        Stop::LetGo => store
            .let_go_of_replay(&left, "ing_gone")
            .await
            .expect("let go"),
        Stop::Killed => assert!(store.save_replay(&left, "ing_gone").await.expect("saved")),
    }

    // Act: nobody runs it now; a second replay is refused while it waits.
    let (status, waiting) = stack
        .call(
            "GET",
            &format!("/v1/dead-letters/replays/{}", left.id),
            &w.sk,
            None,
        )
        .await;
    assert_eq!(status, 200, "{waiting}");
    let (refused, _) = stack
        .call("POST", "/v1/dead-letters/replay", &w.sk, Some(json!({})))
        .await;

    // Assert: it waited with 200 to go, then this stack's ingest took it over (at once after a
    // let-go, once the lease ran out after a kill) and finished the 200 the first had not
    // reached.
    let shown = if how == Stop::LetGo {
        "waiting"
    } else {
        "running"
    };
    assert_eq!(waiting["status"], shown, "{waiting}");
    assert_eq!(waiting["remaining"], 200, "{waiting}");
    assert_eq!(waiting["done"], 100, "{waiting}");
    assert_eq!(refused, 409);
    let done = progress_when(
        &stack,
        &w.sk,
        &left.id,
        "the replay was resumed and finished",
        |p| p["status"] == "finished",
    )
    .await;
    assert_eq!(done["done"], 300, "{done}");
    assert_eq!(done["replayed"], 200, "{done}");
    receiver.wait_for("a", 200).await;
    let (_, listed) = stack
        .call("GET", "/v1/dead-letters?limit=250", &w.sk, None)
        .await;
    let still: HashSet<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    let untouched: HashSet<&str> = first.iter().map(|(c, _)| c.member.as_str()).collect();
    assert_eq!(
        still, untouched,
        "the first page stays, the rest was replayed"
    );
    stack.stop().await;
}
