//! OAuth2 client credentials: the deliverers fetch one token per lifetime and share it through
//! Redis, send it as a bearer token, fetch a new one once when the endpoint answers 401, and
//! record a token failure as an attempt that follows the retry schedule. The client secret and
//! the tokens are never readable in Redis, the API or the history.

use std::time::Duration;

use herald_e2e::oauth::{CLIENT_ID, CLIENT_SECRET};
use herald_e2e::{Stack, TokenServer};
use serde_json::{json, Value};

fn oauth(server: &TokenServer, secret: &str, client_auth: &str) -> Value {
    json!({"auth": {"type": "oauth2_client_credentials", "token_url": server.token_url(),
                    "client_id": CLIENT_ID, "client_secret": secret, "scope": "webhooks:write",
                    "audience": "https://bank.example", "client_auth": client_auth}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_per_lifetime_is_shared_by_every_deliverer() {
    // Arrange: two deliverers, tokens that live 8 s (so each is used for 4 s: long enough for
    // a burst on a busy machine).
    let mut stack = Stack::start().await;
    stack.add_deliverer().await;
    let server = TokenServer::start(8.0).await;
    let (_, sk, pk) = stack.workspace().await;
    let (con, _) = stack
        .connection(
            &sk,
            &server.hook_url("h"),
            oauth(&server, CLIENT_SECRET, "basic"),
        )
        .await;
    stack.rule(&sk, "*", "*", &con).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act: a burst of events, which both deliverers take.
    for i in 0..30 {
        stack
            .send(&pk, "order.created", "order", json!({"i": i}))
            .await;
    }
    let got = wait_for(&server, "h", 30).await;

    // Assert: one token for the whole burst, on every request; the form as RFC 6749 says.
    assert_eq!(server.issued(), 1, "one token for the burst");
    let token = bearer(&got[0]);
    assert!(got.iter().all(|r| bearer(r) == token));
    let (form, basic) = server.token_requests()[0].clone();
    assert!(basic, "client_auth basic uses HTTP Basic");
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains("scope=webhooks%3Awrite"), "{form}");
    assert!(
        form.contains("audience=https%3A%2F%2Fbank.example"),
        "{form}"
    );
    assert!(!form.contains("client_secret"), "{form}");

    // Past half its lifetime, one new token.
    tokio::time::sleep(Duration::from_millis(4600)).await;
    for i in 0..10 {
        stack
            .send(&pk, "order.created", "order", json!({"j": i}))
            .await;
    }
    let got = wait_for(&server, "h", 40).await;
    assert_eq!(
        server.issued(),
        2,
        "one more token after the first's use ran out"
    );
    assert!(got[30..].iter().all(|r| bearer(r) != token));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_is_replaced_once_within_the_same_attempt() {
    let stack = Stack::start().await;
    let server = TokenServer::start(3600.0).await;
    let (_, sk, pk) = stack.workspace().await;
    let (con, _) = stack
        .connection(
            &sk,
            &server.hook_url("r"),
            oauth(&server, CLIENT_SECRET, "post"),
        )
        .await;
    stack.rule(&sk, "*", "*", &con).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = stack.send(&pk, "order.created", "order", json!({})).await;
    stack
        .event_when(&sk, &first, "delivered", |b| b["status"] == "delivered")
        .await;
    let (form, basic) = server.token_requests()[0].clone();
    assert!(!basic && form.contains("client_id=herald-client"), "{form}");

    // Act: the server revokes the token before its time.
    server.revoke_all();
    let uuid = stack.send(&pk, "order.created", "order", json!({})).await;

    // Assert: one attempt, delivered, with a second token; the refused request came first.
    let h = stack
        .event_when(&sk, &uuid, "delivered", |b| b["status"] == "delivered")
        .await;
    let attempts = h["deliveries"][0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{h}");
    assert_eq!(attempts[0]["status_code"], 200, "{h}");
    assert_eq!(server.issued(), 2);
    let got = server.received("r");
    assert_eq!(got.len(), 3, "delivered, refused, delivered again");
    assert_ne!(bearer(&got[1]), bearer(&got[2]));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_failure_is_an_attempt_retried_on_schedule_and_secrets_stay_hidden() {
    // Arrange: a client secret the token endpoint does not know.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let stack = Stack::start_with(&[
        ("HERALD_RETRY_SCHEDULE", "1s,1s,1s,1s"),
        ("HERALD_SECRETS_KEY", key),
    ])
    .await;
    let server = TokenServer::start(3600.0).await;
    let (ws, sk, pk) = stack.workspace().await;
    let wrong = "not-the-secret-7f3a";
    let (con, _) = stack
        .connection(&sk, &server.hook_url("f"), oauth(&server, wrong, "basic"))
        .await;
    stack.rule(&sk, "*", "*", &con).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act: an event, which cannot get a token.
    let uuid = stack.send(&pk, "order.created", "order", json!({})).await;
    let h = stack
        .event_when(&sk, &uuid, "a failed attempt", |b| {
            b["deliveries"][0]["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .await;

    // Assert: the attempt says why, nothing reached the endpoint, and it is retried.
    let attempt = &h["deliveries"][0]["attempts"][0];
    assert_eq!(
        attempt["error"], "token endpoint answered 401: invalid_client",
        "{attempt}"
    );
    assert!(attempt["status_code"].is_null(), "{attempt}");
    assert_eq!(h["deliveries"][0]["status"], "retrying", "{h}");
    assert!(server.received("f").is_empty());

    // The secret is masked on read; a masked value sent back keeps it; the real one fixes it.
    let path = format!("/v1/connections/{con}");
    let (_, shown) = stack.call("GET", &path, &sk, None).await;
    assert_eq!(shown["auth"]["client_secret"], "********", "{shown}");
    assert_eq!(shown["auth"]["client_id"], CLIENT_ID, "{shown}");
    let mut fixed = oauth(&server, CLIENT_SECRET, "basic");
    let (status, body) = stack.call("PATCH", &path, &sk, Some(fixed.clone())).await;
    assert_eq!(status, 200, "{body}");
    let h = stack
        .event_when(&sk, &uuid, "delivered on a retry", |b| {
            b["status"] == "delivered"
        })
        .await;
    let attempts = h["deliveries"][0]["attempts"].as_array().expect("attempts");
    let last = attempts.last().expect("attempt");
    assert_eq!(last["status_code"], 200, "{h}");
    assert_eq!(
        last["request_headers"]["authorization"], "Bearer ********",
        "{last}"
    );
    fixed["auth"]["client_secret"] = json!("********");
    fixed["auth"]["token_url"] = json!(server.token_url().replace("127.0.0.1", "localhost"));
    let (status, body) = stack.call("PATCH", &path, &sk, Some(fixed)).await;
    assert_eq!(
        status, 400,
        "a masked secret does not follow another token URL: {body}"
    );
    assert_eq!(body["error"]["field"], "auth.client_secret", "{body}");

    // Neither the client secret nor the token is readable in Redis or the history.
    let token = bearer(&server.received("f")[0]);
    let history = h.to_string();
    assert!(!history.contains(&token) && !history.contains(CLIENT_SECRET));
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", stack.prefix))
        .query_async(&mut c)
        .await
        .expect("keys");
    for key in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("dump");
        let text = String::from_utf8_lossy(&dump.unwrap_or_default()).into_owned();
        assert!(!text.contains(&token), "the token is readable in {key}");
        assert!(
            !text.contains(CLIENT_SECRET),
            "the secret is readable in {key}"
        );
    }
    let stored: String = redis::cmd("HGET")
        .arg(format!("{}:ws:{{{ws}}}:conns", stack.prefix))
        .arg(&con)
        .query_async(&mut c)
        .await
        .expect("connection");
    assert!(stored.contains(r#""client_secret":"enc:v1:"#), "{stored}");
    stack.stop().await;
}

fn bearer(r: &herald_e2e::Received) -> String {
    r.headers["authorization"]
        .to_str()
        .expect("ascii")
        .strip_prefix("Bearer ")
        .expect("a bearer token")
        .to_string()
}

async fn wait_for(server: &TokenServer, path: &str, n: usize) -> Vec<herald_e2e::Received> {
    herald_e2e::eventually(
        &format!("{n} requests at {path}"),
        Duration::from_secs(30),
        || async {
            let got = server.received(path);
            (got.len() >= n).then_some(got)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_url_is_held_to_the_destination_policy() {
    let stack = Stack::start_with(&[
        ("HERALD_ALLOW_PRIVATE_DESTINATIONS", "false"),
        ("HERALD_RETRY_SCHEDULE", "none"),
    ])
    .await;
    let server = TokenServer::start(3600.0).await;
    let (_, sk, pk) = stack.workspace().await;
    let mut body = oauth(&server, CLIENT_SECRET, "basic");
    body["name"] = json!("n");
    body["url"] = json!("https://example.com/hook");
    let (status, refused) = stack
        .call("POST", "/v1/connections", &sk, Some(body.clone()))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "auth.token_url", "{refused}");

    // A name is checked against what it resolves to, when the token is fetched.
    let by_name = server.token_url().replace("127.0.0.1", "localhost");
    body["auth"]["token_url"] = json!(by_name);
    let (status, created) = stack.call("POST", "/v1/connections", &sk, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let con = created["id"].as_str().expect("id");
    stack.rule(&sk, "*", "*", con).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let uuid = stack.send(&pk, "order.created", "order", json!({})).await;
    let h = stack
        .event_when(&sk, &uuid, "dead", |b| b["status"] == "dead")
        .await;
    let error = h["deliveries"][0]["attempts"][0]["error"]
        .as_str()
        .expect("error")
        .to_string();
    assert!(
        error.starts_with("token endpoint:") && error.contains("forbidden"),
        "{error}"
    );
    assert!(server.token_requests().is_empty());
    stack.stop().await;
}
