//! One workspace can neither see nor change another's objects, a publishable key only sends,
//! the admin token only manages workspaces, and a rolled key stops working at once.

use std::time::Duration;

use herald_e2e::{Behaviour, Receiver, Stack, ADMIN};
use serde_json::{json, Value};

use super::event;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_workspace_can_neither_see_nor_change_another() {
    // Arrange: workspace A with a connection, a rule, a delivered event and a dead letter.
    let stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "none")]).await;
    let receiver = Receiver::start().await;
    receiver.set("dead", Behaviour::Always(500));
    let (_, sk_a, pk_a) = stack.workspace().await;
    let (_, sk_b, pk_b) = stack.workspace().await;
    let (con, _) = stack
        .connection(&sk_a, &receiver.url("ok"), json!({}))
        .await;
    let (dead_con, _) = stack
        .connection(&sk_a, &receiver.url("dead"), json!({}))
        .await;
    let rule = stack.rule(&sk_a, "order.*", "order", &con).await;
    stack.rule(&sk_a, "doomed.*", "*", &dead_con).await;
    let evt = stack
        .send(&pk_a, "order.completed", "order", json!({}))
        .await;
    let doomed = stack.send(&pk_a, "doomed.one", "x", json!({})).await;
    stack
        .event_when(&sk_a, &evt, "delivered", |b| b["status"] == "delivered")
        .await;
    let dead = stack
        .event_when(&sk_a, &doomed, "dead", |b| b["status"] == "dead")
        .await;
    let dl = dead["deliveries"][0]["dead_letter_id"]
        .as_str()
        .expect("dead letter id")
        .to_string();
    let snapshot = |sk: String| {
        let stack = &stack;
        let paths = [
            format!("/v1/connections/{con}"),
            format!("/v1/connections/{con}/secret"),
            format!("/v1/rules/{rule}"),
            format!("/v1/events/{evt}"),
            format!("/v1/dead-letters/{dl}"),
            "/v1/connections".to_string(),
            "/v1/rules".to_string(),
        ];
        async move {
            let mut out = Vec::new();
            for p in paths {
                out.push(stack.call("GET", &p, &sk, None).await);
            }
            out
        }
    };
    let before = snapshot(sk_a.clone()).await;

    // Act and assert: B's secret key on every one of A's objects: 404, exactly as for an id
    // that does not exist anywhere.
    let b_calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/connections/{con}"), None),
        (
            "PATCH",
            format!("/v1/connections/{con}"),
            Some(json!({"name": "pwned"})),
        ),
        ("DELETE", format!("/v1/connections/{con}"), None),
        ("GET", format!("/v1/connections/{con}/secret"), None),
        (
            "POST",
            format!("/v1/connections/{con}/rotate-secret"),
            Some(json!({})),
        ),
        ("GET", format!("/v1/rules/{rule}"), None),
        (
            "PATCH",
            format!("/v1/rules/{rule}"),
            Some(json!({"enabled": false})),
        ),
        ("DELETE", format!("/v1/rules/{rule}"), None),
        ("POST", format!("/v1/rules/{rule}/test"), Some(json!({}))),
        ("GET", format!("/v1/events/{evt}"), None),
        ("GET", format!("/v1/dead-letters/{dl}"), None),
        ("POST", format!("/v1/dead-letters/{dl}/replay"), None),
        ("DELETE", format!("/v1/dead-letters/{dl}"), None),
    ];
    for (method, path, body) in &b_calls {
        let (status, answer) = stack.call(method, path, &sk_b, body.clone()).await;
        assert_eq!(status, 404, "{method} {path} with B's key: {answer}");
        let unknown = path
            .replace(&con, "con_doesnotexist")
            .replace(&rule, "rul_doesnotexist")
            .replace(&evt, "evt_doesnotexist")
            .replace(&dl, "dl_doesnotexist");
        let (_, nobody) = stack.call(method, &unknown, &sk_b, body.clone()).await;
        assert_eq!(
            answer, nobody,
            "{method} {path}: the answer leaks existence"
        );
    }
    // A's connection cannot be used in B's rules, and B's lists and filters show nothing of A.
    let (status, answer) = stack
        .call(
            "POST",
            "/v1/rules",
            &sk_b,
            Some(json!({"event": "*", "resource": "*", "connection_id": con, "action": "send_webhook"})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "connection_id");
    for path in [
        "/v1/connections".to_string(),
        "/v1/rules".to_string(),
        "/v1/events".to_string(),
        "/v1/dead-letters".to_string(),
        format!("/v1/dead-letters?connection_id={dead_con}"),
    ] {
        let (status, answer) = stack.call("GET", &path, &sk_b, None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(answer["data"], json!([]), "{path} with B's key: {answer}");
    }
    let (status, answer) = stack
        .call(
            "POST",
            "/v1/dead-letters/replay",
            &sk_b,
            Some(json!({"connection_id": dead_con})),
        )
        .await;
    assert_eq!((status, &answer["count"]), (200, &json!(0)), "{answer}");

    // A publishable key only sends events: 403 on everything else, even its own workspace's.
    let mut all_calls = b_calls.clone();
    all_calls.extend([
        ("GET", "/v1/connections".to_string(), None),
        ("POST", "/v1/connections".to_string(), Some(json!({"name": "n", "url": "https://e.example.com"}))),
        ("GET", "/v1/rules".to_string(), None),
        ("POST", "/v1/rules".to_string(), Some(json!({"event": "*", "resource": "*", "connection_id": con, "action": "send_webhook"}))),
        ("GET", "/v1/events".to_string(), None),
        ("GET", "/v1/dead-letters".to_string(), None),
        ("POST", "/v1/dead-letters/replay".to_string(), Some(json!({}))),
        ("POST", "/v1/keys/roll".to_string(), Some(json!({"scope": "secret"}))),
    ]);
    for (method, path, body) in &all_calls {
        for (who, token) in [
            ("A's publishable key", &pk_a),
            ("B's publishable key", &pk_b),
        ] {
            let (status, answer) = stack.call(method, path, token, body.clone()).await;
            assert_eq!(status, 403, "{method} {path} with {who}: {answer}");
            assert_eq!(answer["error"]["code"], "forbidden");
        }
        // The admin token manages workspaces only.
        let (status, answer) = stack.call(method, path, ADMIN, body.clone()).await;
        assert_eq!(
            status, 403,
            "{method} {path} with the admin token: {answer}"
        );
    }
    for (method, path) in [("GET", "/v1/workspaces"), ("POST", "/v1/workspaces")] {
        for token in [&sk_a, &pk_a] {
            let (status, _) = stack
                .call(method, path, token, Some(json!({"name": "x"})))
                .await;
            assert_eq!(status, 403, "{method} {path} with a workspace key");
        }
    }
    stack
        .send(&pk_b, "order.completed", "order", json!({}))
        .await;

    // A's data is as it was.
    assert_eq!(snapshot(sk_a.clone()).await, before, "A's data changed");
    receiver.wait_for("ok", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received("ok").len(),
        1,
        "B's event and B's test call reached nothing of A's"
    );

    // Keys roll: the old one stops working at once, the new one works.
    let (status, rolled) = stack
        .call(
            "POST",
            "/v1/keys/roll",
            &sk_a,
            Some(json!({"scope": "secret"})),
        )
        .await;
    assert_eq!(status, 200, "{rolled}");
    let new_sk = rolled["secret_key"].as_str().expect("new key").to_string();
    assert!(new_sk.starts_with("sk_"));
    let (status, _) = stack.call("GET", "/v1/connections", &sk_a, None).await;
    assert_eq!(status, 401, "the rolled-out key is refused");
    let (status, _) = stack.call("GET", "/v1/connections", &new_sk, None).await;
    assert_eq!(status, 200);
    let (status, rolled) = stack
        .call(
            "POST",
            "/v1/keys/roll",
            &new_sk,
            Some(json!({"scope": "publishable"})),
        )
        .await;
    assert_eq!(status, 200);
    let new_pk = rolled["publishable_key"].as_str().expect("pk").to_string();
    assert!(new_pk.starts_with("pk_"));
    let (status, _) = stack
        .call("POST", "/v1/events", &pk_a, Some(event("order.x")))
        .await;
    assert_eq!(status, 401);
    stack.send(&new_pk, "order.x", "order", json!({})).await;
    stack.stop().await;
}
