//! Payload filters on rules: only events a rule's filter passes reach its connection, the rest
//! are `no_match`; invalid filters are refused naming the part at fault; a rule test says when
//! the filter rejected its event.

use std::collections::BTreeSet;
use std::time::Duration;

use herald_e2e::{verify, Receiver, Stack};
use serde_json::{json, Value};

async fn filtered_rule(stack: &Stack, sk: &str, connection_id: &str, filter: Value) -> String {
    let (status, body) = stack
        .call(
            "POST",
            "/v1/rules",
            sk,
            Some(
                json!({"event": "order.*", "resource": "order", "connection_id": connection_id,
                        "action": "send_webhook", "filter": filter}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["filter"], filter,
        "the answer shows the filter as given"
    );
    body["id"].as_str().expect("id").to_string()
}

/// Sends order events in one bulk; returns their uuids in order.
async fn send_orders(stack: &Stack, pk: &str, events: &[(&str, Value)]) -> Vec<String> {
    let events: Vec<Value> = events
        .iter()
        .map(|(resource_id, payload)| {
            json!({"event": "order.completed", "resource": "order",
                   "resource_id": resource_id, "payload": payload})
        })
        .collect();
    let body = stack.send_bulk(pk, events).await;
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["uuid"].as_str().expect("accepted").to_string())
        .collect()
}

fn uuids_at(receiver: &Receiver, path: &str, secret: &str) -> BTreeSet<String> {
    receiver
        .received(path)
        .iter()
        .map(|r| {
            verify(secret, r)["uuid"]
                .as_str()
                .expect("uuid")
                .to_string()
        })
        .collect()
}

fn set(uuids: &[&String]) -> BTreeSet<String> {
    uuids.iter().map(|u| u.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filtered_rules_deliver_only_matching_events_and_the_rest_are_no_match() {
    // Arrange: "paid" takes pro and team orders of ten dollars or more; "vip" takes orders
    // whose first item is SKU-1 or whose id is vip.
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, pk) = stack.workspace().await;
    let (paid, paid_secret) = stack
        .connection(&sk, &receiver.url("paid"), json!({}))
        .await;
    let (vip, vip_secret) = stack.connection(&sk, &receiver.url("vip"), json!({})).await;
    let paid_filter =
        json!({"payload.plan": {"$in": ["pro", "team"]}, "payload.total_cents": {"$gte": 1000}});
    let paid_rule = filtered_rule(&stack, &sk, &paid, paid_filter.clone()).await;
    filtered_rule(
        &stack,
        &sk,
        &vip,
        json!({"$or": [{"payload.items.0.sku": "SKU-1"}, {"resource_id": "vip"}]}),
    )
    .await;
    let (status, read) = stack
        .call("GET", &format!("/v1/rules/{paid_rule}"), &sk, None)
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["filter"], paid_filter, "reads return the filter");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act
    let sent = send_orders(
        &stack,
        &pk,
        &[
            (
                "o1",
                json!({"plan": "pro", "total_cents": 1500, "items": [{"sku": "SKU-2"}]}),
            ),
            (
                "o2",
                json!({"plan": "free", "total_cents": 5000, "items": [{"sku": "SKU-1"}]}),
            ),
            ("vip", json!({"plan": "team", "total_cents": 999})),
            (
                "o4",
                json!({"plan": "free", "total_cents": 10, "items": []}),
            ),
            (
                "o5",
                json!({"plan": "team", "total_cents": 1000.0, "items": [{"sku": "SKU-1"}]}),
            ),
            ("o6", json!({"plan": "pro", "total_cents": "5000"})),
        ],
    )
    .await;

    // Assert: each receiver got exactly what its filter passes, signed.
    receiver.wait_for("paid", 2).await;
    receiver.wait_for("vip", 3).await;
    let rejected_by_all = [&sent[3], &sent[5]];
    for uuid in rejected_by_all {
        let history = stack
            .event_when(&sk, uuid, "event every filter rejected is no_match", |b| {
                b["status"] == "no_match"
            })
            .await;
        assert_eq!(history["deliveries"], json!([]));
    }
    let only_paid = stack
        .event_when(&sk, &sent[0], "o1 delivered", |b| {
            b["status"] == "delivered"
        })
        .await;
    assert_eq!(only_paid["deliveries"].as_array().expect("list").len(), 1);
    assert_eq!(only_paid["deliveries"][0]["connection_id"], paid.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        uuids_at(&receiver, "paid", &paid_secret),
        set(&[&sent[0], &sent[4]])
    );
    assert_eq!(
        uuids_at(&receiver, "vip", &vip_secret),
        set(&[&sent[1], &sent[2], &sent[4]])
    );
    let (status, listed) = stack
        .call("GET", "/v1/events?status=no_match", &sk, None)
        .await;
    assert_eq!(status, 200);
    let no_match: BTreeSet<String> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["uuid"].as_str().expect("uuid").to_string())
        .collect();
    assert_eq!(no_match, set(&rejected_by_all));

    // A changed filter applies to the next events; `null` removes it.
    let (status, changed) = stack
        .call(
            "PATCH",
            &format!("/v1/rules/{paid_rule}"),
            &sk,
            Some(json!({"filter": {"payload.plan": "free"}})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["filter"], json!({"payload.plan": "free"}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let free = send_orders(&stack, &pk, &[("o7", json!({"plan": "free"}))]).await;
    receiver.wait_for("paid", 3).await;
    let (status, cleared) = stack
        .call(
            "PATCH",
            &format!("/v1/rules/{paid_rule}"),
            &sk,
            Some(json!({"filter": null})),
        )
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["filter"], Value::Null);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let any = send_orders(&stack, &pk, &[("o8", json!("not even an object"))]).await;
    receiver.wait_for("paid", 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        uuids_at(&receiver, "paid", &paid_secret),
        set(&[&sent[0], &sent[4], &free[0], &any[0]])
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_filters_are_refused_naming_the_part_at_fault() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (con, _) = stack.connection(&sk, &receiver.url("x"), json!({})).await;
    let too_big = json!({"payload.note": "x".repeat(4096)});
    let too_deep = json!({"$and": [{"$or": [{"$not": {"payload.a": {"$in": [[1]]}}}]}]});
    let cases = [
        (too_big, "filter"),
        (too_deep, "filter.$and[0].$or[0].$not.payload.a.$in[0]"),
        (
            json!({"payload.plan": {"$regex": "^p"}}),
            "filter.payload.plan.$regex",
        ),
        (
            json!({"payload.plan": {"$in": "pro"}}),
            "filter.payload.plan.$in",
        ),
        (
            json!({"payload.plan": {"$exists": "yes"}}),
            "filter.payload.plan.$exists",
        ),
        (json!({"$or": []}), "filter.$or"),
        (json!({"$not": [1]}), "filter.$not"),
        (json!({"plan": "pro"}), "filter.plan"),
        (json!(["payload.plan"]), "filter"),
    ];
    for (filter, field) in &cases {
        let (status, body) = stack
            .call(
                "POST",
                "/v1/rules",
                &sk,
                Some(json!({"event": "*", "resource": "*", "connection_id": con,
                            "action": "send_webhook", "filter": filter})),
            )
            .await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        assert_eq!(body["error"]["field"], *field, "{filter}: {body}");
    }
    let (_, rules) = stack.call("GET", "/v1/rules", &sk, None).await;
    assert_eq!(rules["data"], json!([]), "nothing half-stored");

    // An update is checked the same way and leaves the rule as it was.
    let rule = stack.rule(&sk, "*", "*", &con).await;
    for (filter, field) in &cases {
        let (status, body) = stack
            .call(
                "PATCH",
                &format!("/v1/rules/{rule}"),
                &sk,
                Some(json!({ "filter": filter })),
            )
            .await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_eq!(body["error"]["field"], *field, "{filter}: {body}");
    }
    let (_, read) = stack
        .call("GET", &format!("/v1/rules/{rule}"), &sk, None)
        .await;
    assert_eq!(read["filter"], Value::Null);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_test_goes_through_the_filter_and_says_when_it_rejected_the_event() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (con, secret) = stack.connection(&sk, &receiver.url("t"), json!({})).await;
    let rule = filtered_rule(&stack, &sk, &con, json!({"payload.plan": "pro"})).await;

    let (status, rejected) = stack
        .call(
            "POST",
            &format!("/v1/rules/{rule}/test"),
            &sk,
            Some(json!({"plan": "free"})),
        )
        .await;
    assert_eq!(status, 200, "nothing is on its way: {rejected}");
    assert_eq!(rejected["filtered"], true, "{rejected}");
    assert_eq!(rejected["rejected_by"], "payload.plan", "{rejected}");
    assert_eq!(rejected["event"], "order.test");
    let uuid = rejected["uuid"].as_str().expect("uuid");
    let history = stack
        .event_when(&sk, uuid, "filtered test event recorded as no_match", |b| {
            b["status"] == "no_match"
        })
        .await;
    assert_eq!(history["payload"], json!({"plan": "free"}));

    let (status, passed) = stack
        .call(
            "POST",
            &format!("/v1/rules/{rule}/test"),
            &sk,
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(status, 202, "{passed}");
    assert_eq!(passed["filtered"], false, "{passed}");
    let got = receiver.wait_for("t", 1).await;
    let body = verify(&secret, &got[0]);
    assert_eq!(body["uuid"], passed["uuid"]);
    assert_eq!(body["payload"], json!({"plan": "pro"}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received("t").len(),
        1,
        "the rejected test was not sent"
    );
    stack.stop().await;
}
