//! Secrets at rest: connection credentials and signing secrets are sealed in Redis, masked in
//! the history and the API, readable only by their owner, and absent from `/metrics`.

use herald_e2e::{Receiver, Stack};
use serde_json::{json, Value};

use super::raw;

/// Every Redis value under the stack's prefix, strings and hash fields, as one text.
async fn everything_in_redis(prefix: &str) -> String {
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    let mut all = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("type");
        let values: Vec<String> = match kind.as_str() {
            "string" => vec![redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .expect("get")],
            // Locator hashes have binary fields (packed uuids).
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async::<Vec<Vec<u8>>>(&mut c)
                .await
                .expect("hgetall")
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut c)
                .await
                .expect("smembers"),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut c)
                .await
                .expect("zrange"),
            _ => Vec::new(),
        };
        all.push_str(&key);
        for v in values {
            all.push('\n');
            all.push_str(&v);
        }
        all.push('\n');
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_are_sealed_in_redis_and_masked_in_the_history() {
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let stack = Stack::start_with(&[("HERALD_SECRETS_KEY", key)]).await;
    let receiver = Receiver::start().await;
    let (ws, sk, pk) = stack.workspace().await;
    let token = "bearer-credential-9f8e7d6c";
    let api_key = "header-credential-1a2b3c4d";
    let (con, first_secret) = stack
        .connection(
            &sk,
            &receiver.url("s"),
            json!({"auth": {"type": "bearer", "token": token}, "headers": {"x-api-key": api_key, "x-team": "payments"}}),
        )
        .await;
    let (status, rotated) = stack
        .call(
            "POST",
            &format!("/v1/connections/{con}/rotate-secret"),
            &sk,
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second_secret = rotated["secret"].as_str().expect("secret").to_string();
    stack.rule(&sk, "*", "*", &con).await;
    let uuid = stack.send(&pk, "order.completed", "order", json!({})).await;

    // The receiver gets the real credentials and both signatures verify.
    let got = receiver.wait_for("s", 1).await;
    assert_eq!(got[0].headers["authorization"], format!("Bearer {token}"));
    assert_eq!(got[0].headers["x-api-key"], api_key);
    herald_e2e::verify(&first_secret, &got[0]);
    herald_e2e::verify(&second_secret, &got[0]);

    // The history shows the request, masked.
    let h = stack
        .event_when(&sk, &uuid, "delivered", |b| b["status"] == "delivered")
        .await;
    let attempt = &h["deliveries"][0]["attempts"][0];
    assert_eq!(attempt["url"], receiver.url("s"));
    let headers = &attempt["request_headers"];
    assert_eq!(headers["authorization"], "Bearer ********", "{attempt}");
    assert_eq!(headers["x-api-key"], "********", "{attempt}");
    assert_eq!(headers["x-team"], "payments", "{attempt}");
    assert_eq!(headers["webhook-id"], uuid.as_str(), "{attempt}");
    assert_eq!(
        headers["webhook-signature"], "v1,******** v1,********",
        "{attempt}"
    );
    let (_, shown) = stack
        .call("GET", &format!("/v1/connections/{con}"), &sk, None)
        .await;
    assert_eq!(shown["headers"]["x-api-key"], "********", "{shown}");
    assert_eq!(shown["auth"]["token"], "********", "{shown}");

    // Redis holds every one of them sealed, and no secret anywhere in any key.
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let stored: String = redis::cmd("HGET")
        .arg(format!("{}:ws:{{{ws}}}:conns", stack.prefix))
        .arg(&con)
        .query_async(&mut c)
        .await
        .expect("stored connection");
    let stored: Value = serde_json::from_str(&stored).expect("json");
    for sealed in [
        &stored["secret"],
        &stored["previous_secrets"][0]["secret"],
        &stored["auth"]["token"],
        &stored["headers"]["x-api-key"],
    ] {
        assert!(
            sealed.as_str().is_some_and(|s| s.starts_with("enc:v1:")),
            "{stored}"
        );
    }
    assert_eq!(stored["headers"]["x-team"], "payments");
    let everything = everything_in_redis(&stack.prefix).await;
    let b64 = |s: &str| s.trim_start_matches("whsec_").to_string();
    for secret in [
        first_secret.as_str(),
        &b64(&first_secret),
        second_secret.as_str(),
        &b64(&second_secret),
        token,
        api_key,
    ] {
        assert!(
            !everything.contains(secret),
            "a secret is readable in Redis: {secret}"
        );
    }

    // The API still hands the secrets back to their owner.
    let (_, secrets) = stack
        .call("GET", &format!("/v1/connections/{con}/secret"), &sk, None)
        .await;
    assert_eq!(secrets["secret"], second_secret.as_str());
    assert_eq!(
        secrets["previous_secrets"][0]["secret"],
        first_secret.as_str()
    );
    // And /metrics carries no secret either.
    let (_, metrics, _) = raw(&stack, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for secret in [
        first_secret.as_str(),
        second_secret.as_str(),
        token,
        api_key,
    ] {
        assert!(!metrics.contains(secret));
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_do_not_follow_a_connection_to_another_host() {
    // Arrange: a connection with a bearer token, a secret header and a plain one.
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (id, _) = stack
        .connection(
            &sk,
            &receiver.url("old"),
            json!({"auth": {"type": "bearer", "token": "tok-precious"},
                   "headers": {"x-api-key": "key-precious", "x-team": "payments"}}),
        )
        .await;
    stack.rule(&sk, "*", "*", &id).await;
    let elsewhere = receiver.url("new").replace("127.0.0.1", "localhost");

    // Act: an editor points it at another host, keeping the masked header as read back.
    let path = format!("/v1/connections/{id}");
    let (status, body) = stack
        .call(
            "PATCH",
            &path,
            &sk,
            Some(json!({"url": elsewhere, "headers": {"x-api-key": "********", "x-team": "payments"}})),
        )
        .await;
    assert_eq!(
        status, 400,
        "a masked secret cannot follow a new host: {body}"
    );
    assert_eq!(body["error"]["field"], "headers.x-api-key", "{body}");
    let (status, body) = stack
        .call("PATCH", &path, &sk, Some(json!({"url": elsewhere})))
        .await;
    assert_eq!(status, 200, "{body}");

    // Assert: the credentials were dropped, the plain header kept, and nothing secret is sent.
    assert!(body["auth"].is_null(), "{body}");
    assert!(body["headers"].get("x-api-key").is_none(), "{body}");
    assert_eq!(body["headers"]["x-team"], "payments", "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stack.send(&sk, "order.created", "order", json!({})).await;
    let got = receiver.wait_for("new", 1).await;
    assert!(got[0].headers.get("authorization").is_none());
    assert!(got[0].headers.get("x-api-key").is_none());
    assert_eq!(got[0].headers["x-team"], "payments");

    // Credentials given again in the same request are kept.
    let (status, body) = stack
        .call(
            "PATCH",
            &path,
            &sk,
            Some(
                json!({"url": receiver.url("old"), "auth": {"type": "bearer", "token": "tok-new"}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auth"]["type"], "bearer", "{body}");
    stack.stop().await;
}
