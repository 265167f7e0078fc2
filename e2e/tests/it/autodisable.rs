//! Auto-disable: a connection whose every attempt failed for `HERALD_AUTO_DISABLE_AFTER` is
//! disabled; events routed to it meanwhile are recorded as skipped; its waiting jobs are
//! dead-lettered and can be replayed once it is enabled again.

use std::time::Duration;

use herald_e2e::{eventually, verify, Behaviour, Receiver, Stack};
use serde_json::{json, Value};

/// A retry every second, for longer than the window: jobs are waiting in the ladder when the
/// connection is disabled.
const EVERY_SECOND: &str =
    "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_failing_for_the_window_is_disabled_skipped_and_replayable_once_enabled() {
    let stack = Stack::start_with(&[
        ("HERALD_AUTO_DISABLE_AFTER", "10s"),
        ("HERALD_RETRY_SCHEDULE", EVERY_SECOND),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.set("down", Behaviour::Always(503));
    receiver.set("healthy", Behaviour::Ok);
    let w = stack.wired(&receiver, &["down", "healthy"]).await;
    let (sk, pk) = (w.sk, w.pk);
    let (con, secret) = w.connections[0].clone();
    let (healthy, _) = w.connections[1].clone();
    let path = format!("/v1/connections/{con}");

    // Every attempt fails: after ten seconds the connection is disabled, with the reason and
    // the time.
    let first = stack
        .send(&pk, "order.completed", "order", json!({"n": 1}))
        .await;
    let conn = eventually(
        "the connection disabled",
        Duration::from_secs(40),
        || async {
            let (status, body) = stack.call("GET", &path, &sk, None).await;
            (status == 200 && body["enabled"] == false).then_some(body)
        },
    )
    .await;
    assert_eq!(conn["disabled_reason"], "failing", "{conn}");
    let disabled_at = conn["disabled_at"].as_i64().expect("disabled_at");
    let first_failure = receiver.received("down").len();
    assert!(first_failure >= 5, "attempts kept failing: {first_failure}");
    let history = stack.event_when(&sk, &first, "routed", |_| true).await;
    let attempts = history["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["connection_id"] == con.as_str())
        .expect("the delivery to the failing connection")["attempts"]
        .clone();
    let failed_since = attempts[0]["at"].as_i64().expect("at");
    assert!(
        disabled_at - failed_since >= 10_000,
        "disabled {} ms after the first failure",
        disabled_at - failed_since
    );
    assert!(
        disabled_at - failed_since < 25_000,
        "disabled {} ms after the first failure",
        disabled_at - failed_since
    );
    // The healthy connection of the same workspace is left alone.
    let (_, other) = stack
        .call("GET", &format!("/v1/connections/{healthy}"), &sk, None)
        .await;
    assert_eq!(other["enabled"], true);
    assert_eq!(other["disabled_reason"], Value::Null);

    // The job waiting in the retry ladder is dead-lettered at its next turn, not sent.
    let history = stack
        .event_when(&sk, &first, "the waiting job dead-lettered", |b| {
            b["status"] == "dead"
        })
        .await;
    let dead = history["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["connection_id"] == con.as_str())
        .expect("delivery")
        .clone();
    assert_eq!(dead["status"], "dead");
    let (status, letters) = stack
        .call(
            "GET",
            &format!("/v1/dead-letters?connection_id={con}"),
            &sk,
            None,
        )
        .await;
    assert_eq!(status, 200, "{letters}");
    let letters = letters["data"].as_array().expect("data").clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("disabled")),
        "{}",
        letters[0]
    );

    // While disabled, the router sends it nothing: the event is recorded as skipped.
    let sent_before = receiver.received("down").len();
    let skipped = stack
        .send(&pk, "order.completed", "order", json!({"n": 2}))
        .await;
    let history = stack
        .event_when(&sk, &skipped, "recorded with a skipped delivery", |b| {
            b["deliveries"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["status"] == "skipped"))
        })
        .await;
    let deliveries = history["deliveries"].as_array().expect("deliveries");
    let to_disabled = deliveries
        .iter()
        .find(|d| d["connection_id"] == con.as_str())
        .expect("a delivery to the disabled connection");
    assert_eq!(to_disabled["status"], "skipped");
    assert_eq!(to_disabled["attempts"], json!([]));
    // The healthy connection still gets it; the event is delivered once that is.
    receiver.wait_for("healthy", 2).await;
    stack
        .event_when(&sk, &skipped, "delivered to the healthy one", |b| {
            b["status"] == "delivered"
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.received("down").len(),
        sent_before,
        "nothing was sent to the disabled connection"
    );

    // Enabling it clears the reason and the time; the dead letters replay to it once fixed.
    receiver.set("down", Behaviour::Ok);
    let (status, body) = stack
        .call("PATCH", &path, &sk, Some(json!({"enabled": true})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["disabled_reason"], Value::Null);
    assert_eq!(body["disabled_at"], Value::Null);
    let (_, body) = stack.call("GET", &path, &sk, None).await;
    assert_eq!(body["disabled_reason"], Value::Null, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = stack
        .call(
            "POST",
            "/v1/dead-letters/replay",
            &sk,
            Some(json!({"connection_id": con})),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    stack
        .event_when(&sk, &first, "replayed and delivered", |b| {
            b["status"] == "delivered"
        })
        .await;
    let later = stack
        .send(&pk, "order.completed", "order", json!({"n": 3}))
        .await;
    stack
        .event_when(&sk, &later, "delivered after re-enable", |b| {
            b["status"] == "delivered"
        })
        .await;
    let got = receiver.received("down");
    let ids: Vec<String> = got[sent_before..]
        .iter()
        .map(|r| {
            verify(&secret, r)["uuid"]
                .as_str()
                .expect("uuid")
                .to_string()
        })
        .collect();
    assert!(ids.contains(&first), "the replayed event arrived: {ids:?}");
    assert!(ids.contains(&later), "the new event arrived: {ids:?}");
    assert!(!ids.contains(&skipped), "the skipped event was never sent");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_routed_only_to_disabled_connections_is_skipped() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["off"]).await;
    let (con, _) = w.connections[0].clone();
    let (status, body) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{con}"),
            &w.sk,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Disabled by hand: no reason of Herald's.
    assert_eq!(body["disabled_reason"], Value::Null);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let uuid = stack.send(&w.pk, "a.b", "r", json!({})).await;
    let history = stack
        .event_when(&w.sk, &uuid, "skipped", |b| b["status"] == "skipped")
        .await;
    assert_eq!(history["deliveries"][0]["status"], "skipped");
    let (status, listed) = stack
        .call("GET", "/v1/events?status=skipped", &w.sk, None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"][0]["uuid"], uuid.as_str());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(receiver.received("off").is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_test_to_a_disabled_connection_is_refused_and_sends_nothing() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (con, _) = stack
        .connection(&sk, &receiver.url("off"), json!({"enabled": false}))
        .await;
    let rule = stack.rule(&sk, "order.*", "order", &con).await;

    let (status, body) = stack
        .call("POST", &format!("/v1/rules/{rule}/test"), &sk, None)
        .await;

    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("disabled")),
        "{body}"
    );
    let (_, events) = stack.call("GET", "/v1/events", &sk, None).await;
    assert_eq!(events["data"], json!([]), "nothing recorded");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.received("off").is_empty(), "nothing sent");
    stack.stop().await;
}
