//! Ordered delivery: per key (or for the whole connection), one at a time, in the order intake
//! accepted the events, through failed attempts, retries and a dead letter.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_e2e::ordered::{arrivals, assert_each_key_in_order, payload};
use herald_e2e::{eventually, verify, Api, Behaviour, Receiver, Stack};
use serde_json::{json, Value};

const KEYS: usize = 4;
/// Events per key sent one request at a time, then as many again in one bulk request.
const SINGLE: u64 = 8;

fn envelope(key: &str, seq: u64, poison: bool) -> Value {
    let mut p = payload(key, seq);
    if poison {
        p["poison"] = json!(true);
    }
    json!({"event": "order.updated", "resource": "order", "resource_id": key, "payload": p})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_connections_deliver_each_key_in_intake_order_through_retries_and_a_dead_letter() {
    let stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "1s,1s")]).await;
    let receiver = Receiver::start().await;
    // One request in four fails: each holds back the later events of its key for a retry.
    receiver.set("by-key", Behaviour::FailEvery(4, 500));
    // One event never gets through: it is dead-lettered after its schedule, then the rest go.
    receiver.set("whole", Behaviour::FailWhen("\"poison\":true".into(), 500));
    let (_, sk, pk) = stack.workspace().await;
    let (by_key, by_key_secret) = stack
        .connection(
            &sk,
            &receiver.url("by-key"),
            json!({"ordering": "per_resource"}),
        )
        .await;
    let (whole, _) = stack
        .connection(
            &sk,
            &receiver.url("whole"),
            json!({"ordering": "per_connection"}),
        )
        .await;
    for c in [&by_key, &whole] {
        stack.rule(&sk, "*", "*", c).await;
    }
    let (status, shown) = stack
        .call("GET", &format!("/v1/connections/{by_key}"), &sk, None)
        .await;
    assert_eq!((status, &shown["ordering"]), (200, &json!("per_resource")));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Each key's first events one request at a time (the next sent once the last was
    // accepted), the keys side by side; the poison is key 1's third.
    let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    let mut senders = Vec::new();
    for key in keys.clone() {
        let api = Api {
            url: stack.url.clone(),
            http: stack.http.clone(),
        };
        let pk = pk.clone();
        senders.push(tokio::spawn(async move {
            let mut poison_uuid = None;
            for seq in 0..SINGLE {
                let poison = key == "k1" && seq == 2;
                let (status, body) = api
                    .call("POST", "/v1/events", &pk, Some(envelope(&key, seq, poison)))
                    .await;
                assert_eq!(status, 202, "{body}");
                if poison {
                    poison_uuid = body["uuid"].as_str().map(String::from);
                }
            }
            poison_uuid
        }));
    }
    let mut poison_uuid = None;
    for s in senders {
        poison_uuid = poison_uuid.or(s.await.expect("sender"));
    }
    let poison_uuid = poison_uuid.expect("the poison was sent");
    // Then the rest in one bulk request, the keys interleaved: its order is intake's order.
    let bulk: Vec<(String, u64)> = (SINGLE..2 * SINGLE)
        .flat_map(|seq| keys.iter().map(move |k| (k.clone(), seq)))
        .collect();
    let events: Vec<Value> = bulk.iter().map(|(k, s)| envelope(k, *s, false)).collect();
    stack.send_bulk(&pk, events).await;

    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 2 * SINGLE)).collect();
    let total = KEYS * 2 * SINGLE as usize;
    // Every event arrives (with 200) at both; the history says when.
    for path in ["by-key", "whole"] {
        eventually(
            &format!("every event delivered to {path}"),
            Duration::from_secs(90),
            || async {
                let distinct = arrivals(&receiver.received(path))
                    .into_iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                (distinct >= total).then_some(())
            },
        )
        .await;
    }
    let history = stack
        .event_when(&sk, &poison_uuid, "the poison dead at `whole`", |b| {
            b["deliveries"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["status"] == "dead"))
        })
        .await;
    let dead = history["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["status"] == "dead")
        .expect("a dead delivery")
        .clone();
    assert_eq!(dead["connection_id"], json!(whole));
    assert_eq!(dead["attempts"].as_array().expect("attempts").len(), 3);

    // Per resource: each key in order, through one failed request in four.
    let got = receiver.received("by-key");
    assert!(got.len() > total, "failed requests were sent again");
    verify(&by_key_secret, &got[0]);
    assert_each_key_in_order(&got, &expected);
    // The whole connection: every key in order, and the bulk's events exactly in its order,
    // after every event sent before it (the poison's three attempts side by side).
    let whole_got = receiver.received("whole");
    assert_each_key_in_order(&whole_got, &expected);
    let seen = arrivals(&whole_got);
    assert_eq!(seen.len(), total, "one run of arrivals per event: {seen:?}");
    assert_eq!(&seen[total - bulk.len()..], &bulk[..]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_is_shown_changed_and_validated() {
    let stack = Stack::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (status, created) = stack
        .call(
            "POST",
            "/v1/connections",
            &sk,
            Some(json!({"name": "a", "url": "https://example.com/hook"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["ordering"], "none", "the default");
    let id = created["id"].as_str().expect("id");
    let (status, changed) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{id}"),
            &sk,
            Some(json!({"ordering": "per_connection"})),
        )
        .await;
    assert_eq!(
        (status, &changed["ordering"]),
        (200, &json!("per_connection"))
    );
    for bad in [json!("sideways"), json!(3), Value::Null] {
        let (status, err) = stack
            .call(
                "PATCH",
                &format!("/v1/connections/{id}"),
                &sk,
                Some(json!({ "ordering": bad })),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert_eq!(err["error"]["field"], "ordering", "{bad}: {err}");
    }
    let (status, err) = stack
        .call(
            "POST",
            "/v1/connections",
            &sk,
            Some(json!({"name": "b", "url": "https://example.com/hook", "ordering": "random"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "ordering", "{err}");
    stack.stop().await;
}
