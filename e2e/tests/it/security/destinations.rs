//! The destination guard: private, loopback and link-local addresses are refused when a
//! connection is made and again when a request is sent, unless an allowlist opens them.

use std::time::Duration;

use herald_e2e::{Receiver, Stack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_destinations_are_refused_at_creation_and_at_send_time() {
    let stack = Stack::start_with(&[
        ("HERALD_ALLOW_PRIVATE_DESTINATIONS", "false"),
        ("HERALD_RETRY_SCHEDULE", "none"),
    ])
    .await;
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let (_, sk, pk) = stack.workspace().await;

    // Literal addresses are checked when the connection is made, in every spelling.
    for url in [
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://127.0.0.1:{port}/x"),
        format!("http://[::1]:{port}/x"),
        format!("http://127.1:{port}/x"),
        format!("http://2130706433:{port}/x"),
        format!("http://0x7f000001:{port}/x"),
        "http://[::ffff:7f00:1]/".to_string(),
        "http://[64:ff9b::7f00:1]/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00:ec2::254]/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://172.16.5.4/".to_string(),
        "http://192.168.0.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://[::]/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://224.0.0.1/".to_string(),
        "http://192.0.2.1/".to_string(),
        "http://[2001:db8::1]/".to_string(),
    ] {
        let (status, body) = stack
            .call(
                "POST",
                "/v1/connections",
                &sk,
                Some(json!({"name": "n", "url": url})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["field"], "url", "{url}");
    }

    // A name is checked against the address it resolves to, when the request is made.
    let url = format!("http://localhost:{port}/x");
    let (con, _) = stack.connection(&sk, &url, json!({})).await;
    stack.rule(&sk, "*", "*", &con).await;
    let uuid = stack.send(&pk, "a.b", "r", json!({})).await;
    let h = stack
        .event_when(&sk, &uuid, "refused", |b| b["status"] == "dead")
        .await;
    let attempt = &h["deliveries"][0]["attempts"][0];
    assert_eq!(attempt["url"], url.as_str());
    assert!(attempt["status_code"].is_null(), "{attempt}");
    let error = attempt["error"].as_str().expect("error");
    assert!(error.contains("forbidden"), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.received("x").is_empty(),
        "nothing reached the loopback receiver"
    );
    stack.stop().await;

    // An allowlisted subnet opens exactly that subnet.
    let stack = Stack::start_with(&[
        ("HERALD_ALLOW_PRIVATE_DESTINATIONS", "false"),
        ("HERALD_DESTINATION_ALLOWLIST", "127.0.0.0/8"),
    ])
    .await;
    let (_, sk, pk) = stack.workspace().await;
    let (con, secret) = stack.connection(&sk, &url, json!({})).await;
    stack.rule(&sk, "*", "*", &con).await;
    let (status, body) = stack
        .call(
            "POST",
            "/v1/connections",
            &sk,
            Some(json!({"name": "n", "url": "http://10.0.0.1/"})),
        )
        .await;
    assert_eq!((status, &body["error"]["field"]), (400, &json!("url")));
    let uuid = stack.send(&pk, "a.b", "r", json!({})).await;
    let got = receiver.wait_for("x", 1).await;
    assert_eq!(herald_e2e::verify(&secret, &got[0])["uuid"], uuid.as_str());
    stack.stop().await;
}
