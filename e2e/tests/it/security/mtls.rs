//! Mutual TLS: a connection presents its client certificate to an HTTPS receiver that demands
//! one from a CA made in the test, and trusts that private CA for this connection alone; the
//! key is sealed and never shown; each mistake in the PEM is refused when the connection is
//! made; an expiry within 14 days shows in the health and in a metric.

use std::time::Duration;

use herald_e2e::{Stack, TestPki, TlsReceiver};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_certificate_is_presented_and_the_private_ca_trusted_for_that_connection() {
    // Arrange: a private PKI, a receiver that demands its client certificates, a connection
    // with one (expiring in 10 days) and one without.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let stack = Stack::start_with(&[
        ("HERALD_SECRETS_KEY", key),
        ("HERALD_RETRY_SCHEDULE", "none"),
    ])
    .await;
    let pki = TestPki::new("Bank Test CA");
    let receiver = TlsReceiver::start(&pki, &pki.ca_pem).await;
    let (cert, key_pem) = pki.issue("herald-acme", &["herald.acme.test"], -1, 10);
    let (ws, sk, pk) = stack.workspace().await;
    let tls = json!({"client_cert_pem": cert, "client_key_pem": key_pem, "ca_pem": pki.ca_pem});
    let (con, _) = stack
        .connection(&sk, &receiver.url("m"), json!({"tls": tls}))
        .await;
    stack.rule(&sk, "order.*", "*", &con).await;
    let (bare, _) = stack
        .connection(
            &sk,
            &receiver.url("bare"),
            json!({"tls": {"client_cert_pem": cert, "client_key_pem": key_pem}}),
        )
        .await;
    stack.rule(&sk, "invoice.*", "*", &bare).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act.
    let uuid = stack.send(&pk, "order.created", "order", json!({})).await;
    let untrusted = stack
        .send(&pk, "invoice.created", "invoice", json!({}))
        .await;

    // Assert: delivered with the client certificate; without its CA, the receiver's
    // certificate is not trusted (the public roots do not know it).
    stack
        .event_when(&sk, &uuid, "delivered", |b| b["status"] == "delivered")
        .await;
    let got = receiver.received("m");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.as_deref(), Some("CN=herald-acme"));
    let h = stack
        .event_when(&sk, &untrusted, "dead", |b| b["status"] == "dead")
        .await;
    let error = h["deliveries"][0]["attempts"][0]["error"]
        .as_str()
        .expect("error")
        .to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(receiver.received("bare").is_empty());

    // Reads show the subject and expiry, never the key; the health warns of the expiry.
    let (_, shown) = stack
        .call("GET", &format!("/v1/connections/{con}"), &sk, None)
        .await;
    assert_eq!(shown["tls"]["subject"], "CN=herald-acme", "{shown}");
    assert_eq!(shown["tls"]["client_key_pem"], "********", "{shown}");
    assert_eq!(shown["tls"]["expiring_soon"], true, "{shown}");
    assert!(shown["tls"]["not_after"].as_i64().is_some(), "{shown}");
    assert!(!shown.to_string().contains("PRIVATE KEY"));
    let (_, health) = stack
        .call("GET", &format!("/v1/connections/{con}/health"), &sk, None)
        .await;
    let cert_health = &health["client_certificate"];
    assert_eq!(cert_health["expiring_soon"], true, "{health}");
    assert!(
        (8..=10).contains(&cert_health["expires_in_days"].as_i64().unwrap_or(-1)),
        "{health}"
    );
    let metrics = reqwest::get(format!("{}/metrics", stack.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("herald_client_certificate_expires_in_seconds") && l.contains(&con)
        ),
        "the expiry is a metric"
    );

    // The key is sealed in Redis; a PATCH sending the masked key back keeps it.
    let stored = stored_connection(&stack.prefix, &ws, &con).await;
    let sealed = stored["tls"]["client_key_pem"].as_str().expect("key");
    assert!(sealed.starts_with("enc:v1:"), "{stored}");
    let (later, later_key) = pki.issue("herald-acme-2", &["herald.acme.test"], -1, 90);
    let (status, body) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{con}"),
            &sk,
            Some(json!({"tls": {"client_cert_pem": later, "client_key_pem": "********", "ca_pem": pki.ca_pem}})),
        )
        .await;
    assert_eq!(
        status, 400,
        "the old key does not match the new certificate: {body}"
    );
    assert_eq!(body["error"]["field"], "tls.client_key_pem", "{body}");
    let (status, body) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{con}"),
            &sk,
            Some(json!({"tls": {"client_cert_pem": later, "client_key_pem": later_key, "ca_pem": pki.ca_pem}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tls"]["subject"], "CN=herald-acme-2", "{body}");
    assert_eq!(body["tls"]["expiring_soon"], false, "{body}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_unusable_client_certificate_is_refused_at_creation() {
    let stack = Stack::start_with(&[
        ("HERALD_ALLOW_PRIVATE_DESTINATIONS", "false"),
        ("HERALD_RETRY_SCHEDULE", "none"),
    ])
    .await;
    let pki = TestPki::new("Refusals CA");
    let (_, sk, _) = stack.workspace().await;
    let (cert, key) = pki.issue("ok", &["ok.test"], -1, 30);
    let (_, other_key) = pki.issue("other", &["other.test"], -1, 30);
    let (expired, expired_key) = pki.issue("old", &["old.test"], -60, -1);
    let cases = [
        (
            "a key that does not match",
            json!({"client_cert_pem": cert, "client_key_pem": other_key}),
            "tls.client_key_pem",
        ),
        (
            "an expired certificate",
            json!({"client_cert_pem": expired, "client_key_pem": expired_key}),
            "tls.client_cert_pem",
        ),
        (
            "a certificate that does not parse",
            json!({"client_cert_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "client_key_pem": key}),
            "tls.client_cert_pem",
        ),
        (
            "a key that does not parse",
            json!({"client_cert_pem": cert, "client_key_pem": "not a key"}),
            "tls.client_key_pem",
        ),
        (
            "a CA that does not parse",
            json!({"client_cert_pem": cert, "client_key_pem": key, "ca_pem": "junk"}),
            "tls.ca_pem",
        ),
    ];
    for (what, tls, field) in cases {
        let (status, body) = stack
            .call(
                "POST",
                "/v1/connections",
                &sk,
                Some(json!({"name": "n", "url": "https://example.com/h", "tls": tls})),
            )
            .await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["field"], field, "{what}: {body}");
    }
    let (_, list) = stack.call("GET", "/v1/connections", &sk, None).await;
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );
    stack.stop().await;
}

async fn stored_connection(prefix: &str, ws: &str, con: &str) -> Value {
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let stored: String = redis::cmd("HGET")
        .arg(format!("{prefix}:ws:{{{ws}}}:conns"))
        .arg(con)
        .query_async(&mut c)
        .await
        .expect("stored connection");
    serde_json::from_str(&stored).expect("json")
}
