//! Messages published straight to the broker that are not valid input: set aside with their
//! reason and counted, never blocking the queue, retried forever or crashing the router.

use std::time::Duration;

use herald_shared::amqp::topology::{EVENTS_EXCHANGE, QUARANTINE_QUEUE};
use herald_shared::amqp::{header_str, headers, Broker, REASON_HEADER, WORKSPACE_HEADER};
use herald_shared::config::{CommonSettings, Source};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::BasicProperties;
use serde_json::json;

use herald_e2e::procs::ROUTER;
use herald_e2e::{Processes, Receiver};

use crate::serial;

/// The value of `herald_quarantined_total{reason="..."}` on a metrics page.
fn quarantined(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("herald_quarantined_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_quarantined_with_their_reason_and_counted() {
    let _turn = serial().await;
    let receiver = Receiver::start().await;
    let stack = Processes::start_for_test("poison", &[]).await;
    let sk = stack.wired(&receiver, &["a"]).await.sk;
    let (_, workspace) = stack
        .call("GET", "/v1/workspaces", herald_e2e::ADMIN, None)
        .await;
    let ws = workspace["data"][0]["id"]
        .as_str()
        .expect("workspace id")
        .to_string();

    let settings =
        CommonSettings::from_source(&Source::from_pairs([("HERALD_AMQP_URL", stack.amqp_url())]))
            .expect("settings");
    let broker = Broker::new(&settings, "poison-producer");
    broker.connection().await.expect("broker");
    let publish = |ws: Option<&str>, body: Vec<u8>| {
        let mut props = BasicProperties::default();
        if let Some(ws) = ws {
            props = props.with_headers(headers([(WORKSPACE_HEADER, ws.to_string())]));
        }
        let broker = broker.clone();
        async move {
            broker
                .publish(EVENTS_EXCHANGE, "poison", &body, props)
                .await
                .expect("the broker confirms");
        }
    };
    let valid = json!({"event": "order.created", "resource": "order", "resource_id": "o1",
                       "payload": {"ok": true}, "uuid": "after-the-poison"});
    publish(Some(&ws), b"{not json".to_vec()).await;
    publish(
        Some(&ws),
        br#"{"resource": "order", "payload": {}}"#.to_vec(),
    )
    .await;
    publish(Some("ws_does_not_exist"), valid.to_string().into_bytes()).await;
    publish(None, valid.to_string().into_bytes()).await;
    publish(Some(&ws), valid.to_string().into_bytes()).await;

    // The valid event behind them is delivered: the poison did not block the queue.
    receiver.wait_for("a", 1).await;
    stack
        .event_when(&sk, "after-the-poison", "delivered", |b| {
            b["deliveries"][0]["status"] == "delivered"
        })
        .await;

    // Each poison message sits in quarantine once, with its reason.
    let connection = broker.connection().await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reasons.len() < 4 && tokio::time::Instant::now() < deadline {
        match channel
            .basic_get(QUARANTINE_QUEUE, BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            Some(m) => {
                let headers = m.delivery.properties.headers();
                reasons.push(header_str(headers, REASON_HEADER).unwrap_or("").to_string());
                m.delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack");
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("body is not JSON")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("event")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("unknown workspace")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains(WORKSPACE_HEADER)),
        "{reasons:?}"
    );

    // Counted by reason in the router's metrics.
    let metrics = stack
        .http
        .get(format!("http://{}/metrics", stack.proc(ROUTER).addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for reason in [
        "not_json",
        "invalid_envelope",
        "unknown_workspace",
        "no_workspace",
    ] {
        assert_eq!(quarantined(&metrics, reason), 1, "{reason} in:\n{metrics}");
    }
    // And the router is still running: nothing crashed.
    let ready = stack
        .http
        .get(format!("http://{}/readyz", stack.proc(ROUTER).addr))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let _ = channel.close(200, "done").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stack.stop().await;
}
