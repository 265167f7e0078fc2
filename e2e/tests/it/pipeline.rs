//! An event in, signed webhooks out: fan-out, bulk, no-match, history.

use herald_e2e::{verify, Receiver, Stack};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_fan_out_to_every_matching_connection_signed_and_recorded() {
    // Arrange: two connections; a wildcard rule and an exact rule both match order.completed.
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, pk) = stack.workspace().await;
    let (con_a, secret_a) = stack
        .connection(
            &sk,
            &receiver.url("a"),
            json!({"headers": {"x-team": "payments"}}),
        )
        .await;
    let (con_b, secret_b) = stack
        .connection(&sk, &receiver.url("b"), json!({"method": "PUT"}))
        .await;
    stack.rule(&sk, "order.*", "order", &con_a).await;
    stack.rule(&sk, "order.completed", "*", &con_b).await;

    // Act: one single event (publishable key), a bulk of three, one nobody wants.
    let payload =
        json!({"order_id": "ord_77", "total_cents": 12900, "nested": {"list": [1, 2.5, "x"]}});
    let single = stack
        .send(&pk, "order.completed", "order", payload.clone())
        .await;
    let (status, bulk) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": [
                {"event": "order.completed", "resource": "order", "resource_id": "ord_1", "payload": {"n": 1}},
                {"event": "order.refunded", "resource": "order", "resource_id": "ord_2", "payload": {"n": 2}, "uuid": "client-id-2"},
                {"event": "order.completed", "resource": "order", "payload": {"n": 3}},
                {"event": "user.created", "resource": "user", "resource_id": "u_1", "payload": {"n": 4}}
            ]})),
        )
        .await;
    assert_eq!(status, 202, "{bulk}");
    let results = bulk["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[1]["uuid"], "client-id-2",
        "a producer's uuid is kept"
    );
    assert_eq!(
        results[2]["error"]["field"], "events[2].resource_id",
        "{bulk}"
    );
    let unmatched = results[3]["uuid"].as_str().expect("uuid").to_string();

    // Assert: a gets order.* (single, ord_1, ord_2), b gets order.completed (single, ord_1).
    let at_a = receiver.wait_for("a", 3).await;
    let at_b = receiver.wait_for("b", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(receiver.received("a").len(), 3, "no duplicates at a");
    assert_eq!(receiver.received("b").len(), 2, "no duplicates at b");
    for (requests, secret, method) in [(&at_a, &secret_a, "POST"), (&at_b, &secret_b, "PUT")] {
        for r in requests.iter() {
            let body = verify(secret, r);
            assert_eq!(r.method, method);
            assert_eq!(r.headers["content-type"], "application/json");
            assert!(r.headers["user-agent"]
                .to_str()
                .expect("ua")
                .starts_with("Herald/"));
            assert_eq!(r.headers["webhook-id"].to_str().expect("id"), body["uuid"]);
            let keys: Vec<&str> = body
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                [
                    "event",
                    "payload",
                    "resource",
                    "resource_id",
                    "time_created",
                    "time_sent",
                    "uuid"
                ]
            );
            assert!(body["time_sent"].as_i64() >= body["time_created"].as_i64());
            assert!(body["time_created"].as_i64().expect("ms") > 1_700_000_000_000);
        }
    }
    assert!(at_a.iter().all(|r| r.headers["x-team"] == "payments"));
    let single_at_a = at_a
        .iter()
        .map(|r| verify(&secret_a, r))
        .find(|b| b["uuid"] == single.as_str())
        .expect("single event reached a");
    assert_eq!(single_at_a["payload"], payload);
    assert_eq!(single_at_a["event"], "order.completed");
    assert_eq!(single_at_a["resource"], "order");
    assert_eq!(single_at_a["resource_id"], "r_1");
    assert!(at_b
        .iter()
        .any(|r| verify(&secret_b, r)["uuid"] == single.as_str()));

    // History: the single event delivered to both, with its attempt.
    let history = stack
        .event_when(&sk, &single, "single event delivered", |b| {
            b["status"] == "delivered"
        })
        .await;
    let deliveries = history["deliveries"].as_array().expect("deliveries");
    let mut conns: Vec<&str> = deliveries
        .iter()
        .map(|d| d["connection_id"].as_str().expect("id"))
        .collect();
    conns.sort();
    let mut expected = vec![con_a.as_str(), con_b.as_str()];
    expected.sort();
    assert_eq!(conns, expected);
    for d in deliveries {
        assert_eq!(d["status"], "delivered");
        let attempts = d["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["status_code"], 200);
        assert!(attempts[0]["at"].as_i64().is_some());
        assert!(attempts[0]["latency_ms"].as_u64().is_some());
        assert_eq!(attempts[0]["response_excerpt"], "ok");
    }
    assert_eq!(history["payload"], payload);

    // The unmatched event is recorded as such.
    let nobody = stack
        .event_when(&sk, &unmatched, "unmatched event recorded", |b| {
            b["status"] == "no_match"
        })
        .await;
    assert_eq!(nobody["deliveries"], json!([]));

    // The list shows them newest first and filters by status.
    let (status, listed) = stack
        .call("GET", "/v1/events?status=no_match", &sk, None)
        .await;
    assert_eq!(status, 200);
    let uuids: Vec<&Value> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| &e["uuid"])
        .collect();
    assert_eq!(uuids, vec![&json!(unmatched)]);

    let (status, _) = stack.call("GET", "/readyz", "", None).await;
    assert_eq!(status, 200);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configuration_changes_reach_the_pipeline_and_keys_are_scoped() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, pk) = stack.workspace().await;
    let (_, other_sk, _) = stack.workspace().await;
    let (con, secret) = stack.connection(&sk, &receiver.url("c"), json!({})).await;
    assert!(secret.starts_with("whsec_"));
    let rule = stack.rule(&sk, "*", "*", &con).await;

    // A publishable key sends events only; another workspace sees nothing of this one.
    let (status, body) = stack.call("GET", "/v1/connections", &pk, None).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = stack
        .call("GET", &format!("/v1/connections/{con}"), &other_sk, None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = stack
        .call("GET", "/v1/connections", "sk_not_a_key", None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    // Disabling the rule stops deliveries within a moment; enabling brings them back.
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/v1/rules/{rule}"),
            &sk,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let off = stack.send(&pk, "a.b", "r", json!({})).await;
    stack
        .event_when(&sk, &off, "routed to nobody", |b| b["status"] == "no_match")
        .await;
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/v1/rules/{rule}"),
            &sk,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let on = stack.send(&pk, "a.b", "r", json!({})).await;
    let got = receiver.wait_for("c", 1).await;
    assert_eq!(verify(&secret, &got[0])["uuid"], on.as_str());

    // Bad input names the field.
    let (status, body) = stack
        .call("POST", "/v1/events", &pk, Some(json!({"event": "a", "resource": "r", "resource_id": "1", "payload": {}, "colour": 1})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "colour", "{body}");
    let (status, body) = stack
        .call(
            "POST",
            "/v1/connections",
            &sk,
            Some(json!({"name": "x", "url": "ftp://nope"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "url");
    stack.stop().await;
}

/// A policy on a vhost's `herald.events` queue that takes one message and refuses the next;
/// cleared when dropped.
struct OneMessageOnly<'a>(&'a str);

impl<'a> OneMessageOnly<'a> {
    fn set(vhost: &'a str) -> Self {
        let limit = r#"{"max-length": 1, "overflow": "reject-publish"}"#;
        rabbitmqctl(&[
            "set_policy",
            "-p",
            vhost,
            "--apply-to",
            "queues",
            "one-message",
            r"^herald\.events$",
            limit,
        ]);
        Self(vhost)
    }
}

impl Drop for OneMessageOnly<'_> {
    fn drop(&mut self) {
        rabbitmqctl(&["clear_policy", "-p", self.0, "one-message"]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_request_the_broker_confirms_in_part_answers_each_event_for_itself() {
    // Arrange: the router stopped, and the events queue of the stack's vhost takes one broker
    // message and refuses (nacks) the next: of a bulk request's two messages of 500 events, one
    // is confirmed and the other is not.
    let mut stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let w = stack.wired(&receiver, &["a"]).await;
    stack.stop_router().await;
    let policy = OneMessageOnly::set(stack.vhost_name());
    let events: Vec<Value> = (0..1000)
        .map(|i| json!({"event": "order.created", "resource": "order", "resource_id": format!("o{i}"), "payload": {"i": i}}))
        .collect();

    // Act
    let body = stack.send_bulk(&w.pk, events).await;

    // Assert: 202 (`send_bulk` checks it); one whole message's events have their uuid, every
    // other event is answered `unavailable` with its own field, so a client sends again exactly
    // those.
    let results = body["results"].as_array().expect("results");
    let accepted: Vec<(usize, String)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r["uuid"].as_str().map(|u| (i, u.to_string())))
        .collect();
    assert_eq!(accepted.len(), 500, "{body}");
    let first = accepted[0].0;
    assert!(first == 0 || first == 500, "a whole message is accepted");
    assert!(accepted
        .iter()
        .all(|(i, _)| (first..first + 500).contains(i)));
    for (i, r) in results.iter().enumerate() {
        if !(first..first + 500).contains(&i) {
            assert_eq!(r["error"]["code"], "unavailable", "{r}");
            assert_eq!(r["error"]["field"], format!("events[{i}]"), "{r}");
        }
    }
    // ... and exactly the accepted events are delivered once the router runs again.
    drop(policy);
    stack.start_router().await;
    receiver.wait_for("a", 500).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut delivered: Vec<String> = receiver
        .received("a")
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().expect("id").to_string())
        .collect();
    delivered.sort();
    let mut expected: Vec<String> = accepted.into_iter().map(|(_, u)| u).collect();
    expected.sort();
    assert_eq!(delivered, expected);
    stack.stop().await;
}
