//! What ingest tells an operator: every API request by route template, method and status, its
//! duration, and how long the broker takes to confirm intake; counters present from start-up.

use herald_e2e::{Receiver, Stack};
use serde_json::json;

/// The lines of a Prometheus text page for `name` that carry every one of `labels`.
fn lines<'a>(page: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
    page.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_counts_requests_by_route_and_times_intake_confirms() {
    // Arrange
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["a"]).await;

    // Act: a few events, a read of one, a request for nothing.
    let uuid = stack.send(&w.pk, "order.created", "order", json!({})).await;
    stack.send(&w.pk, "order.created", "order", json!({})).await;
    // A read answered 200 (the history has it once the router recorded it).
    stack.event_when(&w.sk, &uuid, "recorded", |_| true).await;
    let (status, _) = stack.call("GET", "/v1/nowhere", &w.sk, None).await;
    assert_eq!(status, 404);
    let page = reqwest::get(format!("{}/metrics", stack.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");

    // Assert: by route template (the uuid is not in the label), method and status.
    let posts = lines(
        &page,
        "herald_http_requests_total{",
        &[
            r#"route="/v1/events""#,
            r#"method="POST""#,
            r#"status="202""#,
        ],
    );
    assert!(!posts.is_empty(), "{page}");
    let reads = lines(
        &page,
        "herald_http_requests_total{",
        &[r#"route="/v1/events/{uuid}""#, r#"status="200""#],
    );
    assert!(!reads.is_empty(), "{page}");
    assert!(!page.contains(&uuid), "a route label carries an id");
    assert!(
        !lines(
            &page,
            "herald_http_requests_total{",
            &[r#"route="unmatched""#, r#"status="404""#]
        )
        .is_empty(),
        "{page}"
    );
    assert!(!lines(
        &page,
        "herald_http_request_duration_seconds_bucket{",
        &[r#"route="/v1/events""#]
    )
    .is_empty());
    assert!(
        !lines(&page, "herald_intake_confirm_seconds_count", &[]).is_empty(),
        "{page}"
    );
    // Present from start-up, before any replay happened in this stack.
    assert!(
        !lines(&page, "herald_dead_letters_replayed_total", &[]).is_empty(),
        "{page}"
    );
    stack.stop().await;
}
