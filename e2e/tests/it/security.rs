//! Hostile input, tenant isolation, secrets at rest, rate limits and the destination guard.

use std::time::{Duration, Instant};

use herald_e2e::{Behaviour, Receiver, Stack, ADMIN};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A request with a raw body (or none) and an optional token: (status, JSON body, headers).
async fn raw(
    stack: &Stack,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value, HeaderMap) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = stack.http.request(method, format!("{}{path}", stack.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("API answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

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
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .expect("hgetall"),
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

/// A hostile request and what it must get: method, path, token, body, status, `error.field`.
type Refusal<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<Vec<u8>>,
    u16,
    Value,
);

fn event(event: &str) -> Value {
    json!({"event": event, "resource": "order", "resource_id": "ord_1", "payload": {"n": 1}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_has_its_status_and_names_its_field_and_the_service_stays_healthy() {
    let stack = Stack::start_with(&[
        ("HERALD_ALLOW_PRIVATE_DESTINATIONS", "false"),
        ("HERALD_MAX_EVENT_BYTES", "4096"),
        ("HERALD_MAX_BULK_BYTES", "65536"),
        ("HERALD_MAX_BULK_EVENTS", "10"),
    ])
    .await;
    let (_, sk, pk) = stack.workspace().await;
    let (con, _) = stack
        .connection(&sk, "https://hooks.example.com/in", json!({}))
        .await;
    let rule = stack.rule(&sk, "order.*", "order", &con).await;
    let (_, before) = stack.call("GET", "/v1/connections", &sk, None).await;
    let (_, rules_before) = stack.call("GET", "/v1/rules", &sk, None).await;

    let deep = format!(
        r#"{{"event":"a","resource":"r","resource_id":"1","payload":{}{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let big_event =
        json!({"event": "a", "resource": "r", "resource_id": "1", "payload": "x".repeat(5000)});
    let many: Vec<Value> = (0..11).map(|_| event("a.b")).collect();
    let huge_bulk: Vec<Value> = (0..10)
        .map(|_| json!({"event": "a", "resource": "r", "resource_id": "1", "payload": "y".repeat(8000)}))
        .collect();
    let headers_33: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let url = |u: &str| json!({"name": "n", "url": u});
    let with = |extra: Value| {
        let mut b = json!({"name": "n", "url": "https://hooks.example.com/x"});
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        b
    };
    let j = |v: Value| Some(serde_json::to_vec(&v).expect("json"));
    let s = |t: &str| Some(t.as_bytes().to_vec());
    let c = format!("/v1/connections/{con}");
    let r = format!("/v1/rules/{rule}");

    let cases: Vec<Refusal> = vec![
        // Events: malformed, wrong types, unknown fields, bad types, limits.
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            s("{"),
            400,
            json!("body"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            s(""),
            400,
            json!("body"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            Some(vec![0xff, 0xfe, b'{']),
            400,
            json!("body"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            s("[]"),
            400,
            json!("body"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            s(&deep),
            400,
            json!("payload"),
        ),
        (
            "POST",
            format!("{r}/test"),
            Some(&sk),
            s(&"["
                .repeat(100)
                .chars()
                .chain("]".repeat(100).chars())
                .collect::<String>()),
            400,
            json!("payload"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"resource": "r", "resource_id": "1", "payload": {}})),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(
                json!({"event": "order..completed", "resource": "r", "resource_id": "1", "payload": {}}),
            ),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"event": "order.", "resource": "r", "resource_id": "1", "payload": {}})),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"event": "order.*", "resource": "r", "resource_id": "1", "payload": {}})),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"event": "a b", "resource": "r", "resource_id": "1", "payload": {}})),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(
                json!({"event": "a".repeat(129), "resource": "r", "resource_id": "1", "payload": {}}),
            ),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"event": 7, "resource": "r", "resource_id": "1", "payload": {}})),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"event": "a", "resource": "", "resource_id": "1", "payload": {}})),
            400,
            json!("resource"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(
                json!({"event": "a", "resource": "r", "resource_id": "x".repeat(257), "payload": {}}),
            ),
            400,
            json!("resource_id"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"event": "a", "resource": "r", "resource_id": "a\u{0}b", "payload": {}})),
            400,
            json!("resource_id"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(json!({"event": "a", "resource": "r", "resource_id": "1"})),
            400,
            json!("payload"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(
                json!({"event": "a", "resource": "r", "resource_id": "1", "payload": {}, "uuid": "has space"}),
            ),
            400,
            json!("uuid"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(
                json!({"event": "a", "resource": "r", "resource_id": "1", "payload": {}, "time_created": 5}),
            ),
            400,
            json!("time_created"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(
                json!({"event": "a", "resource": "r", "resource_id": "1", "payload": {}, "evnt": "typo"}),
            ),
            400,
            json!("evnt"),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&pk),
            j(big_event.clone()),
            413,
            json!("body"),
        ),
        (
            "POST",
            "/v1/events/bulk".into(),
            Some(&pk),
            j(json!({"events": []})),
            400,
            json!("events"),
        ),
        (
            "POST",
            "/v1/events/bulk".into(),
            Some(&pk),
            j(json!({"events": {}})),
            400,
            json!("events"),
        ),
        (
            "POST",
            "/v1/events/bulk".into(),
            Some(&pk),
            j(json!({"events": many})),
            400,
            json!("events"),
        ),
        (
            "POST",
            "/v1/events/bulk".into(),
            Some(&pk),
            j(json!({"evts": []})),
            400,
            json!("evts"),
        ),
        (
            "POST",
            "/v1/events/bulk".into(),
            Some(&pk),
            j(json!({"events": huge_bulk})),
            413,
            json!("body"),
        ),
        // Connections.
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(json!({"url": "https://hooks.example.com"})),
            400,
            json!("name"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(json!({"name": " ", "url": "https://hooks.example.com"})),
            400,
            json!("name"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(json!({"name": "n".repeat(201), "url": "https://hooks.example.com"})),
            400,
            json!("name"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(json!({"name": "a\nb", "url": "https://hooks.example.com"})),
            400,
            json!("name"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(url("ftp://hooks.example.com")),
            400,
            json!("url"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(url("hooks.example.com/x")),
            400,
            json!("url"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(url(&format!(
                "https://hooks.example.com/{}",
                "p".repeat(2048)
            ))),
            400,
            json!("url"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(url("https://user:pw@hooks.example.com/")),
            400,
            json!("url"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(url("https://10.1.2.3/")),
            400,
            json!("url"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"urll": "typo"}))),
            400,
            json!("urll"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"method": "DELETE"}))),
            400,
            json!("method"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"timeout_ms": 50}))),
            400,
            json!("timeout_ms"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"timeout_ms": "fast"}))),
            400,
            json!("timeout_ms"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"timeout_ms": -1}))),
            400,
            json!("timeout_ms"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"rate_limit_per_s": 0}))),
            400,
            json!("rate_limit_per_s"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"enabled": "yes"}))),
            400,
            json!("enabled"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"secret": "not-a-secret"}))),
            400,
            json!("secret"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"headers": headers_33}))),
            400,
            json!("headers"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"headers": {"webhook-id": "x"}}))),
            400,
            json!("headers.webhook-id"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"headers": {"bad name": "x"}}))),
            400,
            json!("headers.bad name"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"headers": {"x-big": "v".repeat(4097)}}))),
            400,
            json!("headers.x-big"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"headers": {"x-nl": "a\r\nb"}}))),
            400,
            json!("headers.x-nl"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"auth": {"type": "bearer"}}))),
            400,
            json!("auth.token"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"auth": {"type": "bearer", "token": ""}}))),
            400,
            json!("auth.token"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(json!({"auth": {"type": "digest", "token": "t"}}))),
            400,
            json!("auth.type"),
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(&sk),
            j(with(
                json!({"auth": {"type": "basic", "username": "a:b", "password": "p"}}),
            )),
            400,
            json!("auth.username"),
        ),
        (
            "PATCH",
            c.clone(),
            Some(&sk),
            j(json!({"name": null})),
            400,
            json!("name"),
        ),
        (
            "PATCH",
            c.clone(),
            Some(&sk),
            j(json!({"colour": "red"})),
            400,
            json!("colour"),
        ),
        (
            "PATCH",
            c.clone(),
            Some(&sk),
            j(json!({"url": "https://[::ffff:127.0.0.1]/"})),
            400,
            json!("url"),
        ),
        (
            "PATCH",
            c.clone(),
            Some(&sk),
            j(json!({"timeout_ms": 999_999})),
            400,
            json!("timeout_ms"),
        ),
        (
            "POST",
            format!("{c}/rotate-secret"),
            Some(&sk),
            j(json!({"secret": "whsec_short"})),
            400,
            json!("secret"),
        ),
        (
            "POST",
            format!("{c}/rotate-secret"),
            Some(&sk),
            j(json!({"secrt": "typo"})),
            400,
            json!("secrt"),
        ),
        (
            "GET",
            "/v1/connections?limit=5".into(),
            Some(&sk),
            None,
            400,
            json!("limit"),
        ),
        // Rules.
        (
            "POST",
            "/v1/rules".into(),
            Some(&sk),
            j(
                json!({"event": "order..*", "resource": "order", "connection_id": con, "action": "send_webhook"}),
            ),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/rules".into(),
            Some(&sk),
            j(
                json!({"event": "*.order", "resource": "order", "connection_id": con, "action": "send_webhook"}),
            ),
            400,
            json!("event"),
        ),
        (
            "POST",
            "/v1/rules".into(),
            Some(&sk),
            j(
                json!({"event": "a", "resource": "order", "connection_id": con, "action": "send_email"}),
            ),
            400,
            json!("action"),
        ),
        (
            "POST",
            "/v1/rules".into(),
            Some(&sk),
            j(
                json!({"event": "a", "resource": "order", "connection_id": "con_nope", "action": "send_webhook"}),
            ),
            400,
            json!("connection_id"),
        ),
        (
            "POST",
            "/v1/rules".into(),
            Some(&sk),
            j(json!({"event": "a", "connection_id": con, "action": "send_webhook"})),
            400,
            json!("resource"),
        ),
        (
            "POST",
            "/v1/rules".into(),
            Some(&sk),
            j(
                json!({"event": "a", "resource": "o r", "connection_id": con, "action": "send_webhook"}),
            ),
            400,
            json!("resource"),
        ),
        (
            "PATCH",
            r.clone(),
            Some(&sk),
            j(json!({"enabled": "yes"})),
            400,
            json!("enabled"),
        ),
        (
            "PATCH",
            r.clone(),
            Some(&sk),
            j(json!({"event": null})),
            400,
            json!("event"),
        ),
        (
            "PATCH",
            r.clone(),
            Some(&sk),
            j(json!({"connection_id": "con_nope"})),
            400,
            json!("connection_id"),
        ),
        (
            "POST",
            format!("{r}/test"),
            Some(&sk),
            s("{not json"),
            400,
            json!("body"),
        ),
        (
            "GET",
            "/v1/rules?x=1".into(),
            Some(&sk),
            None,
            400,
            json!("x"),
        ),
        // History and dead letters: query parameters.
        (
            "GET",
            "/v1/events?limit=0".into(),
            Some(&sk),
            None,
            400,
            json!("limit"),
        ),
        (
            "GET",
            "/v1/events?limit=251".into(),
            Some(&sk),
            None,
            400,
            json!("limit"),
        ),
        (
            "GET",
            "/v1/events?limit=ten".into(),
            Some(&sk),
            None,
            400,
            json!("limit"),
        ),
        (
            "GET",
            "/v1/events?cursor=garbage".into(),
            Some(&sk),
            None,
            400,
            json!("cursor"),
        ),
        (
            "GET",
            "/v1/events?status=lost".into(),
            Some(&sk),
            None,
            400,
            json!("status"),
        ),
        (
            "GET",
            "/v1/events?event=a%20b".into(),
            Some(&sk),
            None,
            400,
            json!("event"),
        ),
        (
            "GET",
            "/v1/events?colour=red".into(),
            Some(&sk),
            None,
            400,
            json!("colour"),
        ),
        (
            "GET",
            "/v1/dead-letters?limit=-1".into(),
            Some(&sk),
            None,
            400,
            json!("limit"),
        ),
        (
            "GET",
            "/v1/dead-letters?connection_id=a%20b".into(),
            Some(&sk),
            None,
            400,
            json!("connection_id"),
        ),
        (
            "POST",
            "/v1/dead-letters/replay".into(),
            Some(&sk),
            j(json!({"connection_id": ""})),
            400,
            json!("connection_id"),
        ),
        (
            "POST",
            "/v1/dead-letters/replay".into(),
            Some(&sk),
            j(json!({"conection_id": con})),
            400,
            json!("conection_id"),
        ),
        // Workspaces and keys.
        (
            "POST",
            "/v1/workspaces".into(),
            Some(ADMIN),
            j(json!({"name": ""})),
            400,
            json!("name"),
        ),
        (
            "POST",
            "/v1/workspaces".into(),
            Some(ADMIN),
            j(json!({"name": "w".repeat(201)})),
            400,
            json!("name"),
        ),
        (
            "POST",
            "/v1/workspaces".into(),
            Some(ADMIN),
            j(json!({"name": "w", "plan": "pro"})),
            400,
            json!("plan"),
        ),
        (
            "GET",
            "/v1/workspaces?limit=0".into(),
            Some(ADMIN),
            None,
            400,
            json!("limit"),
        ),
        (
            "POST",
            "/v1/keys/roll".into(),
            Some(&sk),
            j(json!({"scope": "admin"})),
            400,
            json!("scope"),
        ),
        (
            "POST",
            "/v1/keys/roll".into(),
            Some(&sk),
            j(json!({})),
            400,
            json!("scope"),
        ),
        // Who is calling.
        (
            "GET",
            "/v1/connections".into(),
            None,
            None,
            401,
            Value::Null,
        ),
        (
            "GET",
            "/v1/connections".into(),
            Some("sk_forged"),
            None,
            401,
            Value::Null,
        ),
        (
            "GET",
            "/v1/connections".into(),
            Some("whatever"),
            None,
            401,
            Value::Null,
        ),
        (
            "POST",
            "/v1/events".into(),
            Some("pk_forged"),
            j(event("a.b")),
            401,
            Value::Null,
        ),
        (
            "GET",
            "/v1/nowhere".into(),
            Some(&sk),
            None,
            404,
            Value::Null,
        ),
    ];

    for (method, path, token, body, status, field) in cases {
        let (got, answer, _) = raw(&stack, method, &path, token, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{method} {path}: {answer}");
        assert!(
            answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
            "{method} {path}: the error shape: {answer}"
        );
    }

    // A bulk request answers per event: the oversized one is refused, the valid one accepted.
    let (status, answer) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": [event("a.b"), big_event, {"event": "a..b"}]})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let results = &answer["results"];
    assert!(results[0]["uuid"].is_string(), "{answer}");
    assert_eq!(results[1]["error"]["code"], "payload_too_large", "{answer}");
    assert_eq!(results[1]["error"]["field"], "events[1]", "{answer}");
    assert_eq!(results[2]["error"]["field"], "events[2].event", "{answer}");

    // Nothing was half-stored, and the service is healthy and still takes good input.
    let (_, after) = stack.call("GET", "/v1/connections", &sk, None).await;
    assert_eq!(before, after, "no refused connection was stored or changed");
    let (_, rules_after) = stack.call("GET", "/v1/rules", &sk, None).await;
    assert_eq!(
        rules_before, rules_after,
        "no refused rule was stored or changed"
    );
    let (status, _, _) = raw(&stack, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = raw(&stack, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
    stack.send(&pk, "order.completed", "order", json!({})).await;
    stack.stop().await;
}

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
        .arg(format!("{}:ws:{ws}:conns", stack.prefix))
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
async fn intake_is_rate_limited_per_key_across_ingest_replicas() {
    // One event per second per key; the burst is one second's worth.
    let stack = Stack::start_with(&[("HERALD_INTAKE_RATE_LIMIT_PER_S", "1")]).await;
    let second =
        herald_shared::config::IngestSettings::from_source(stack.source()).expect("settings");
    let cancel = CancellationToken::new();
    let replica = herald_ingest::start(second, cancel.clone())
        .await
        .expect("a second ingest starts");
    let replica_api = format!("http://{}", replica.addr);
    let (_, sk, pk) = stack.workspace().await;
    let three: Vec<Value> = (0..3).map(|_| event("a.b")).collect();

    // A bulk of three passes whole on the first replica and puts the key ~3 s in debt ...
    let (status, body) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": three})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // ... which the second replica sees: 429, Retry-After, the API's error shape.
    let resp = stack
        .http
        .post(format!("{replica_api}/v1/events"))
        .bearer_auth(&pk)
        .json(&event("a.b"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let (status, _) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": [event("a.b")]})),
        )
        .await;
    assert_eq!(status, 429, "bulk requests count against the same limit");

    // Another key is limited separately.
    stack.send(&sk, "a.b", "r", json!({})).await;

    // After Retry-After the key sends again.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    stack.send(&pk, "a.b", "r", json!({})).await;
    cancel.cancel();
    let _ = replica.wait().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_rate_limit_paces_its_deliveries_and_slows_no_other() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, pk) = stack.workspace().await;
    let (slow, _) = stack
        .connection(&sk, &receiver.url("slow"), json!({"rate_limit_per_s": 5}))
        .await;
    let (fast, _) = stack
        .connection(&sk, &receiver.url("fast"), json!({}))
        .await;
    stack.rule(&sk, "slow.*", "*", &slow).await;
    stack.rule(&sk, "fast.*", "*", &fast).await;
    let slow_events: Vec<Value> = (0..20).map(|_| event("slow.tick")).collect();
    let fast_events: Vec<Value> = (0..20).map(|_| event("fast.tick")).collect();

    let started = Instant::now();
    let (status, slow_sent) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": slow_events})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = stack
        .call(
            "POST",
            "/v1/events/bulk",
            &pk,
            Some(json!({"events": fast_events})),
        )
        .await;
    assert_eq!(status, 202);
    receiver.wait_for("fast", 20).await;
    let fast_done = started.elapsed();
    receiver.wait_for("slow", 20).await;
    let slow_done = started.elapsed();

    // 20 at 5/s with a burst of 5: at least ~3 s; the other connection is not held back.
    assert!(slow_done >= Duration::from_millis(2800), "{slow_done:?}");
    assert!(
        fast_done + Duration::from_millis(1500) < slow_done,
        "fast {fast_done:?}, slow {slow_done:?}"
    );
    // Waiting for a slot is not an attempt: each delivery took exactly one.
    for r in slow_sent["results"].as_array().expect("results") {
        let uuid = r["uuid"].as_str().expect("uuid");
        let h = stack
            .event_when(&sk, uuid, "delivered", |b| b["status"] == "delivered")
            .await;
        let attempts = h["deliveries"][0]["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{h}");
        assert_eq!(attempts[0]["status_code"], 200);
    }
    stack.stop().await;
}

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
