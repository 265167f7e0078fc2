//! A producer-given uuid is the idempotency key: however often and however it is sent, each
//! connection gets it once.

use std::time::Duration;

use futures::future::join_all;
use herald_e2e::{Receiver, Stack};
use herald_shared::amqp::topology::EVENTS_EXCHANGE;
use herald_shared::amqp::{headers, Broker, WORKSPACE_HEADER};
use herald_shared::config::{CommonSettings, Source};
use lapin::BasicProperties;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_uuid_sent_many_ways_is_delivered_once() {
    let mut stack = Stack::start().await;
    // Two routers, so concurrent copies can meet in different processes' hands.
    stack.add_router().await;
    let receiver = Receiver::start().await;
    let (ws, sk, pk) = stack.workspace().await;
    let (conn, _) = stack
        .connection(&sk, &receiver.url("once"), json!({}))
        .await;
    stack.rule(&sk, "order.*", "order", &conn).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let envelope = |uuid: &str| {
        json!({"event": "order.created", "resource": "order", "resource_id": "o1",
               "payload": {"same": true}, "uuid": uuid})
    };
    // Sequential resends.
    for _ in 0..3 {
        let (status, body) = stack
            .call("POST", "/v1/events", &pk, Some(envelope("seq-1")))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["uuid"], "seq-1");
    }
    // Twenty concurrent copies of each of five uuids.
    let uuids: Vec<String> = (0..5).map(|i| format!("conc-{i}")).collect();
    let sends = uuids
        .iter()
        .flat_map(|u| (0..20).map(move |_| u.clone()))
        .map(|u| {
            let stack = &stack;
            let pk = pk.clone();
            async move {
                stack
                    .call("POST", "/v1/events", &pk, Some(envelope(&u)))
                    .await
                    .0
            }
        });
    assert!(join_all(sends).await.iter().all(|s| *s == 202));
    // A bulk request repeating a uuid, and the same uuid straight to the broker twice.
    let (status, body) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": [envelope("bulk-1"), envelope("bulk-1"), envelope("seq-1")]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let settings =
        CommonSettings::from_source(&Source::from_pairs([("HERALD_AMQP_URL", stack.amqp_url())]))
            .expect("settings");
    let broker = Broker::new(&settings, "direct-producer");
    broker.connection().await.expect("broker");
    for _ in 0..2 {
        let props =
            BasicProperties::default().with_headers(headers([(WORKSPACE_HEADER, ws.clone())]));
        broker
            .publish(
                EVENTS_EXCHANGE,
                &ws,
                envelope("amqp-1").to_string().as_bytes(),
                props,
            )
            .await
            .expect("confirmed");
    }

    // Eight distinct uuids: eight requests, and no more after things settle.
    let got = receiver.wait_for("once", 8).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received("once").len().max(got.len());
    assert_eq!(got, 8, "each uuid delivered once");
    stack.stop().await;
}
