//! A connection's stats (the charts' numbers) against the traffic actually sent: attempts,
//! failures, dead letters and latency percentiles; scoped to the workspace; bad parameters
//! refused by name.

use std::time::Duration;

use herald_e2e::{eventually, Behaviour, Receiver, Stack, ADMIN};
use serde_json::{json, Value};

/// The totals of a stats answer: (deliveries, failures, dead letters).
fn totals(body: &Value) -> (u64, u64, u64) {
    let points = body["data"].as_array().expect("data");
    let sum = |name: &str| points.iter().map(|p| p[name].as_u64().expect(name)).sum();
    (sum("deliveries"), sum("failures"), sum("dead_letters"))
}

/// Sends `n` events of type `event` with the secret key.
async fn send_n(stack: &Stack, sk: &str, event: &str, n: usize) {
    for i in 0..n {
        stack.send(sk, event, "ping", json!({"i": i})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_count_the_attempts_failures_dead_letters_and_latencies_sent() {
    // Arrange: one connection answers slowly (16 at 120 ms, then 4 at 1,200 ms), one always
    // answers 500 (three attempts each, then dead), one fails its first three requests. The
    // breaker stays out of it, so every attempt is a real request.
    let stack = Stack::start_with(&[
        ("HERALD_RETRY_SCHEDULE", "1s,1s"),
        ("HERALD_BREAKER_FAILURES", "1000"),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.set("steady", Behaviour::Slow(Duration::from_millis(120)));
    receiver.set("broken", Behaviour::Always(500));
    receiver.set("flaky", Behaviour::FailFirst(3, 500));
    let (ws, sk, _) = stack.workspace().await;
    let mut ids = Vec::new();
    for path in ["steady", "broken", "flaky"] {
        let (id, _) = stack
            .connection(&sk, &receiver.url(path), json!({"name": path}))
            .await;
        stack.rule(&sk, &format!("{path}.sent"), "ping", &id).await;
        ids.push(id);
    }
    let (steady, broken, flaky) = (&ids[0], &ids[1], &ids[2]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = herald_shared::now_ms();

    // Act
    send_n(&stack, &sk, "steady.sent", 16).await;
    receiver.wait_for("steady", 16).await;
    // Let the fast ones finish before the receiver slows down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.set("steady", Behaviour::Slow(Duration::from_millis(1_200)));
    send_n(&stack, &sk, "steady.sent", 4).await;
    send_n(&stack, &sk, "broken.sent", 5).await;
    send_n(&stack, &sk, "flaky.sent", 3).await;

    // Assert: the counts reach exactly what was sent, and stay there.
    let stats = |id: &str, query: &str| {
        let path = format!("/v1/connections/{id}/stats{query}");
        let (stack, sk) = (&stack, sk.clone());
        async move { stack.call("GET", &path, &sk, None).await }
    };
    let expected = [
        (steady, (20, 0, 0)),
        (broken, (15, 15, 5)),
        (flaky, (6, 3, 0)),
    ];
    for (id, want) in expected {
        eventually(
            &format!("stats of {id} reach {want:?}"),
            Duration::from_secs(40),
            || async {
                let (status, body) = stats(id, "").await;
                assert_eq!(status, 200, "{body}");
                (totals(&body) == want).then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (id, want) in expected {
        let (_, body) = stats(id, "").await;
        assert_eq!(totals(&body), want, "no attempt is counted twice ({id})");
    }
    assert_eq!(receiver.received("steady").len(), 20);
    assert_eq!(receiver.received("broken").len(), 15);
    assert_eq!(receiver.received("flaky").len(), 6);
    let (_, dead) = stack
        .call(
            "GET",
            &format!("/v1/dead-letters?connection_id={broken}"),
            &sk,
            None,
        )
        .await;
    assert_eq!(dead["data"].as_array().map(Vec::len), Some(5));

    // The default: the last 24 h in 5-minute points, oldest first, every point there. (Timed:
    // a day of a connection is one round trip of 289 small reads.)
    let timer = std::time::Instant::now();
    for _ in 0..20 {
        stats(steady, "").await;
    }
    println!("a day of stats: {:?} per request", timer.elapsed() / 20);
    let (_, body) = stats(steady, "").await;
    let points = body["data"].as_array().expect("data");
    assert_eq!(points.len(), 289, "{body}");
    let at: Vec<i64> = points
        .iter()
        .map(|p| p["at"].as_i64().expect("at"))
        .collect();
    assert!(at.windows(2).all(|w| w[1] - w[0] == 300_000));
    assert_eq!(at[0] % 300_000, 0);
    let now = herald_shared::now_ms();
    assert!(at[288] <= now && now - at[288] < 300_000 + 5_000);
    assert!(now - at[0] >= 24 * 3_600_000);
    let quiet = &points[0];
    assert_eq!(quiet["deliveries"], 0);
    assert!(quiet["p50_ms"].is_null() && quiet["p95_ms"].is_null());

    // One point over the whole test: the percentiles of the receiver's delays.
    let (status, body) = stats(steady, &format!("?since={started}&bucket=24h")).await;
    assert_eq!(status, 200, "{body}");
    let points = body["data"].as_array().expect("data");
    assert_eq!(points.len(), 1, "{body}");
    let p = &points[0];
    assert_eq!(p["deliveries"], 20);
    assert_eq!(p["success_rate"], 1.0);
    let p50 = p["p50_ms"].as_u64().expect("p50");
    let p95 = p["p95_ms"].as_u64().expect("p95");
    println!("16 x 120 ms and 4 x 1,200 ms: p50 {p50} ms, p95 {p95} ms");
    assert!(
        (100..=200).contains(&p50),
        "p50 of 16 x 120 ms and 4 x 1,200 ms: {p50}"
    );
    assert!((1_000..=2_000).contains(&p95), "p95 of the same: {p95}");
    let (_, body) = stats(flaky, &format!("?since={started}&bucket=24h")).await;
    assert_eq!(body["data"][0]["success_rate"], 0.5);
    let (_, body) = stats(broken, &format!("?since={started}&bucket=1h")).await;
    let points = body["data"].as_array().expect("data");
    assert!(!points.is_empty() && points.len() <= 2, "{body}");
    assert_eq!(totals(&body), (15, 15, 5));
    assert!(points
        .iter()
        .filter(|p| p["deliveries"].as_u64() > Some(0))
        .all(|p| p["success_rate"] == 0.0));

    // The console reads the same numbers with the admin token.
    let (status, body) = stack
        .call(
            "GET",
            &format!(
                "/v1/admin/workspaces/{ws}/connections/{broken}/stats?since={started}&bucket=1h"
            ),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(totals(&body), (15, 15, 5));

    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_are_confined_to_their_workspace_and_bad_parameters_are_named() {
    // Arrange
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (ws_a, sk_a, _) = stack.workspace().await;
    let (ws_b, sk_b, _) = stack.workspace().await;
    let (con, _) = stack.connection(&sk_a, &receiver.url("a"), json!({})).await;
    let path = format!("/v1/connections/{con}/stats");

    // Act + assert: another workspace's key, or the console under another workspace, finds
    // nothing; a portal session of the workspace reads it.
    let (status, _) = stack.call("GET", &path, &sk_a, None).await;
    assert_eq!(status, 200);
    let (status, body) = stack.call("GET", &path, &sk_b, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = stack
        .call("GET", "/v1/connections/con_nope/stats", &sk_a, None)
        .await;
    assert_eq!(status, 404);
    let admin = |ws: &str| format!("/v1/admin/workspaces/{ws}/connections/{con}/stats");
    let (status, _) = stack.call("GET", &admin(&ws_a), ADMIN, None).await;
    assert_eq!(status, 200);
    let (status, _) = stack.call("GET", &admin(&ws_b), ADMIN, None).await;
    assert_eq!(status, 404);
    let (status, _) = stack.call("GET", &admin(&ws_a), &sk_a, None).await;
    assert!(status == 401 || status == 403, "{status}");
    let (status, minted) = stack
        .call(
            "POST",
            "/v1/sessions",
            &sk_a,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let session = minted["token"].as_str().expect("token");
    let (status, body) = stack.call("GET", &path, session, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(289));

    // Bucket sizes are multiples of 5 minutes up to a day, in the duration syntax.
    for (query, points) in [
        ("?bucket=15m", 97),
        ("?bucket=1h", 25),
        ("?bucket=300", 289),
    ] {
        let (status, body) = stack
            .call("GET", &format!("{path}{query}"), &sk_a, None)
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        let n = body["data"].as_array().map(Vec::len).expect("data");
        assert!(n == points || n == points + 1, "{query}: {n} points");
    }
    for (query, field) in [
        ("?bucket=7m", "bucket"),
        ("?bucket=2d", "bucket"),
        ("?bucket=0", "bucket"),
        ("?bucket=soon", "bucket"),
        ("?since=yesterday", "since"),
        ("?until=1", "until"),
    ] {
        let (status, body) = stack
            .call("GET", &format!("{path}{query}"), &sk_a, None)
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    // Asking from the future finds no point yet.
    let future = herald_shared::now_ms() + 3_600_000;
    let (status, body) = stack
        .call("GET", &format!("{path}?since={future}"), &sk_a, None)
        .await;
    assert_eq!(
        (status, body["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    stack.stop().await;
}
