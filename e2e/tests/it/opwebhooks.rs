//! Operational webhooks: signed Standard Webhooks notices about connections, to the operator's
//! endpoint and to a workspace's own (about its own connections only), dead letters gathered
//! into one notice per connection and minute.

use std::time::Duration;

use herald_e2e::{eventually, verify, Behaviour, Receiver, Stack};
use serde_json::{json, Value};

const OPERATOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The notices that arrived at `path`, each verified with the Standard Webhooks library.
fn notices(receiver: &Receiver, path: &str, secret: &str) -> Vec<Value> {
    receiver
        .received(path)
        .iter()
        .map(|r| verify(secret, r))
        .collect()
}

fn of<'a>(notices: &'a [Value], kind: &str, connection_id: &str) -> Vec<&'a Value> {
    notices
        .iter()
        .filter(|n| n["type"] == kind && n["data"]["connection_id"] == connection_id)
        .collect()
}

async fn wait_notice(
    receiver: &Receiver,
    path: &str,
    secret: &str,
    kind: &str,
    connection_id: &str,
    limit: Duration,
) -> Value {
    eventually(
        &format!("{kind} for {connection_id} at /{path}"),
        limit,
        || async {
            let all = notices(receiver, path, secret);
            of(&all, kind, connection_id).first().map(|n| (*n).clone())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_of_a_minute_make_one_signed_notice_with_their_count() {
    let ops = Receiver::start().await;
    let stack = Stack::start_with(&[
        ("HERALD_OPERATIONAL_WEBHOOK_URL", &ops.url("ops")),
        ("HERALD_OPERATIONAL_WEBHOOK_SECRET", OPERATOR_SECRET),
    ])
    .await;
    let receiver = Receiver::start().await;
    // 410 Gone: each delivery is dead-lettered at its first attempt.
    receiver.set("gone", Behaviour::Always(410));
    let w = stack.wired(&receiver, &["gone"]).await;
    let (con, _) = w.connections[0].clone();

    // All within one minute: start early in one.
    while herald_shared::now_ms() % 60_000 > 50_000 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(
            stack
                .send(&w.pk, "order.completed", "order", json!({"n": n}))
                .await,
        );
    }
    for uuid in &sent {
        stack
            .event_when(&w.sk, uuid, "dead-lettered", |b| b["status"] == "dead")
            .await;
    }

    let notice = wait_notice(
        &ops,
        "ops",
        OPERATOR_SECRET,
        "delivery.dead_lettered",
        &con,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(notice["data"]["workspace_id"], w.workspace.as_str());
    assert_eq!(notice["data"]["count"], 5, "{notice}");
    let mut ids: Vec<String> = notice["data"]["event_ids"]
        .as_array()
        .expect("event_ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent);
    assert!(
        notice["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{notice}"
    );
    // Headers as every webhook's: the notice's id, a recent timestamp.
    let raw = ops.received("ops");
    assert!(raw.iter().all(|r| r.headers.contains_key("webhook-id")));

    // One request for the minute, not one per dead letter.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = notices(&ops, "ops", OPERATOR_SECRET);
    assert_eq!(of(&all, "delivery.dead_lettered", &con).len(), 1, "{all:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_notices_reach_the_operator_and_only_the_owning_workspace() {
    let ops = Receiver::start().await;
    let stack = Stack::start_with(&[
        ("HERALD_OPERATIONAL_WEBHOOK_URL", &ops.url("ops")),
        ("HERALD_OPERATIONAL_WEBHOOK_SECRET", OPERATOR_SECRET),
        ("HERALD_AUTO_DISABLE_AFTER", "10s"),
        (
            "HERALD_RETRY_SCHEDULE",
            "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
        ),
        ("HERALD_BREAKER_FAILURES", "2"),
        ("HERALD_BREAKER_COOLDOWN", "1s"),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.set("a-down", Behaviour::Always(503));
    receiver.set("b-flaky", Behaviour::Always(503));
    let a = stack.wired(&receiver, &["a-down"]).await;
    let b = stack.wired(&receiver, &["b-flaky"]).await;
    let (con_a, _) = a.connections[0].clone();
    let (con_b, _) = b.connections[0].clone();

    // Workspace A has an endpoint of its own; its secret is shown once.
    let (status, body) = stack
        .call(
            "PATCH",
            "/v1/workspace/settings",
            &a.sk,
            Some(json!({"operational_webhook_url": ops.url("ws-a")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operational_webhook_url"], ops.url("ws-a"));
    let secret_a = body["operational_webhook_secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_string();
    assert!(secret_a.starts_with("whsec_"));
    let (_, again) = stack
        .call(
            "PATCH",
            "/v1/workspace/settings",
            &a.sk,
            Some(json!({"operational_webhook_url": ops.url("ws-a")})),
        )
        .await;
    assert!(again.get("operational_webhook_secret").is_none(), "{again}");
    let (_, read) = stack
        .call("GET", "/v1/workspace/settings", &a.sk, None)
        .await;
    assert_eq!(read["operational_webhook_url"], ops.url("ws-a"));
    assert!(read.get("operational_webhook_secret").is_none(), "{read}");

    // A's connection fails every attempt: its breaker opens, then after ten seconds it is
    // disabled. Both go to the operator and to A, signed with each one's secret.
    stack
        .send(&a.pk, "order.completed", "order", json!({}))
        .await;
    // B's connection opens its breaker, then recovers and closes it.
    stack
        .send(&b.pk, "order.completed", "order", json!({}))
        .await;
    let opened = wait_notice(
        &ops,
        "ops",
        OPERATOR_SECRET,
        "connection.breaker_opened",
        &con_b,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(opened["data"]["workspace_id"], b.workspace.as_str());
    receiver.set("b-flaky", Behaviour::Ok);
    wait_notice(
        &ops,
        "ops",
        OPERATOR_SECRET,
        "connection.breaker_closed",
        &con_b,
        Duration::from_secs(30),
    )
    .await;

    let disabled = wait_notice(
        &ops,
        "ops",
        OPERATOR_SECRET,
        "connection.disabled",
        &con_a,
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(disabled["data"]["reason"], "failing", "{disabled}");
    assert_eq!(disabled["data"]["workspace_id"], a.workspace.as_str());
    assert!(disabled["data"]["disabled_at"].is_i64(), "{disabled}");
    let own = wait_notice(
        &ops,
        "ws-a",
        &secret_a,
        "connection.disabled",
        &con_a,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(own["data"]["reason"], "failing");
    wait_notice(
        &ops,
        "ws-a",
        &secret_a,
        "connection.breaker_opened",
        &con_a,
        Duration::from_secs(5),
    )
    .await;

    // Enabled again by hand: connection.enabled, to both.
    receiver.set("a-down", Behaviour::Ok);
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{con_a}"),
            &a.sk,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    wait_notice(
        &ops,
        "ws-a",
        &secret_a,
        "connection.enabled",
        &con_a,
        Duration::from_secs(20),
    )
    .await;
    wait_notice(
        &ops,
        "ops",
        OPERATOR_SECRET,
        "connection.enabled",
        &con_a,
        Duration::from_secs(20),
    )
    .await;

    // Tenant isolation: nothing about B's connection ever reached A's endpoint, and every
    // request there verifies with A's secret.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_a = notices(&ops, "ws-a", &secret_a);
    assert!(
        at_a.iter()
            .all(|n| n["data"]["workspace_id"] == a.workspace.as_str()
                && n["data"]["connection_id"] == con_a.as_str()),
        "{at_a:?}"
    );

    // null stops A's notices.
    let (status, body) = stack
        .call(
            "PATCH",
            "/v1/workspace/settings",
            &a.sk,
            Some(json!({"operational_webhook_url": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operational_webhook_url"], Value::Null);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_endpoint_on_a_forbidden_address_is_refused() {
    let stack = Stack::start_with(&[("HERALD_ALLOW_PRIVATE_DESTINATIONS", "false")]).await;
    let (_, sk, _) = stack.workspace().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "ftp://example.com/",
    ] {
        let (status, body) = stack
            .call(
                "PATCH",
                "/v1/workspace/settings",
                &sk,
                Some(json!({"operational_webhook_url": url})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["field"], "operational_webhook_url", "{body}");
    }
    stack.stop().await;
}
