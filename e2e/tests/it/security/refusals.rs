//! Every refusal: malformed, oversized, unknown or unauthorised input gets its status and an
//! `error.field` naming what to fix; nothing refused is half-stored, and the service stays
//! healthy.

use herald_e2e::{Stack, ADMIN};
use serde_json::{json, Value};

use super::{event, raw};

/// A hostile request and what it must get: its status and `error.field` (null: no field).
struct Refusal<'a> {
    method: &'a str,
    path: String,
    key: Option<&'a str>,
    body: Option<Vec<u8>>,
    status: u16,
    field: Value,
}

impl<'a> Refusal<'a> {
    /// The request; its expected answer follows with [`Refusal::gets`] or [`Refusal::gets_status`].
    fn new(method: &'a str, path: &str, key: Option<&'a str>, body: Option<Vec<u8>>) -> Self {
        Self {
            method,
            path: path.to_string(),
            key,
            body,
            status: 0,
            field: Value::Null,
        }
    }

    /// Refused with `status`, naming `field`.
    fn gets(self, status: u16, field: &str) -> Self {
        Self {
            status,
            field: json!(field),
            ..self
        }
    }

    /// Refused with `status`, naming no field (who is calling, not what they sent).
    fn gets_status(self, status: u16) -> Self {
        Self { status, ..self }
    }
}

/// A JSON body.
fn j(v: Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&v).expect("json"))
}

/// A body as it is written, valid JSON or not.
fn s(t: &str) -> Option<Vec<u8>> {
    Some(t.as_bytes().to_vec())
}

/// `base` with `changes` over it; a `null` change drops the field.
fn over(base: Value, changes: Value) -> Value {
    let mut b = base;
    if let (Some(b), Some(changes)) = (b.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            match v {
                Value::Null => b.remove(k),
                v => b.insert(k.clone(), v.clone()),
            };
        }
    }
    b
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
    let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let big_event =
        json!({"event": "a", "resource": "r", "resource_id": "1", "payload": "x".repeat(5000)});
    let many: Vec<Value> = (0..11).map(|_| event("a.b")).collect();
    let huge_bulk: Vec<Value> = (0..10)
        .map(|_| json!({"event": "a", "resource": "r", "resource_id": "1", "payload": "y".repeat(8000)}))
        .collect();
    let headers_33: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let long_url = format!("https://hooks.example.com/{}", "p".repeat(2048));
    let basic_colon = json!({"type": "basic", "username": "a:b", "password": "p"});
    let c = format!("/v1/connections/{con}");
    let rotate = format!("{c}/rotate-secret");
    let r = format!("/v1/rules/{rule}");
    let (by_pk, by_sk) = (Some(pk.as_str()), Some(sk.as_str()));

    // The bodies the cases change one field of.
    let ev = |changes: Value| {
        let valid = json!({"event": "a", "resource": "r", "resource_id": "1", "payload": {}});
        j(over(valid, changes))
    };
    let named = |name: Value| j(json!({"name": name, "url": "https://hooks.example.com"}));
    let url = |u: &str| j(json!({"name": "n", "url": u}));
    let with = |changes: Value| {
        j(over(
            json!({"name": "n", "url": "https://hooks.example.com/x"}),
            changes,
        ))
    };
    let ru = |changes: Value| {
        let valid = json!({"event": "a", "resource": "order", "connection_id": con, "action": "send_webhook"});
        j(over(valid, changes))
    };
    // Who sends them where.
    let events = |body| Refusal::new("POST", "/v1/events", by_pk, body);
    let bulk = |body| Refusal::new("POST", "/v1/events/bulk", by_pk, body);
    let create = |body| Refusal::new("POST", "/v1/connections", by_sk, body);
    let patch = |path: &str, body| Refusal::new("PATCH", path, by_sk, body);
    let post = |path: &str, body| Refusal::new("POST", path, by_sk, body);
    let get = |path: &str| Refusal::new("GET", path, by_sk, None);
    let workspaces = |body| Refusal::new("POST", "/v1/workspaces", Some(ADMIN), body);

    let cases: Vec<Refusal> = vec![
        // Events: malformed, wrong types, unknown fields, bad types, limits.
        events(s("{")).gets(400, "body"),
        events(s("")).gets(400, "body"),
        events(Some(vec![0xff, 0xfe, b'{'])).gets(400, "body"),
        events(s("[]")).gets(400, "body"),
        events(s(&deep)).gets(400, "payload"),
        post(&format!("{r}/test"), s(&nested)).gets(400, "payload"),
        events(ev(json!({"event": null}))).gets(400, "event"),
        events(ev(json!({"event": "order..completed"}))).gets(400, "event"),
        events(ev(json!({"event": "order."}))).gets(400, "event"),
        events(ev(json!({"event": "order.*"}))).gets(400, "event"),
        events(ev(json!({"event": "a b"}))).gets(400, "event"),
        events(ev(json!({"event": "a".repeat(129)}))).gets(400, "event"),
        events(ev(json!({"event": 7}))).gets(400, "event"),
        events(ev(json!({"resource": ""}))).gets(400, "resource"),
        events(ev(json!({"resource_id": "x".repeat(257)}))).gets(400, "resource_id"),
        events(ev(json!({"resource_id": "a\u{0}b"}))).gets(400, "resource_id"),
        events(ev(json!({"payload": null}))).gets(400, "payload"),
        events(ev(json!({"uuid": "has space"}))).gets(400, "uuid"),
        events(ev(json!({"time_created": 5}))).gets(400, "time_created"),
        events(ev(json!({"evnt": "typo"}))).gets(400, "evnt"),
        events(j(big_event.clone())).gets(413, "body"),
        bulk(j(json!({"events": []}))).gets(400, "events"),
        bulk(j(json!({"events": {}}))).gets(400, "events"),
        bulk(j(json!({"events": many}))).gets(400, "events"),
        bulk(j(json!({"evts": []}))).gets(400, "evts"),
        bulk(j(json!({"events": huge_bulk}))).gets(413, "body"),
        // Connections.
        create(j(json!({"url": "https://hooks.example.com"}))).gets(400, "name"),
        create(named(json!(" "))).gets(400, "name"),
        create(named(json!("n".repeat(201)))).gets(400, "name"),
        create(named(json!("a\nb"))).gets(400, "name"),
        create(url("ftp://hooks.example.com")).gets(400, "url"),
        create(url("hooks.example.com/x")).gets(400, "url"),
        create(url(&long_url)).gets(400, "url"),
        create(url("https://user:pw@hooks.example.com/")).gets(400, "url"),
        create(url("https://10.1.2.3/")).gets(400, "url"),
        create(with(json!({"urll": "typo"}))).gets(400, "urll"),
        create(with(json!({"method": "DELETE"}))).gets(400, "method"),
        create(with(json!({"timeout_ms": 50}))).gets(400, "timeout_ms"),
        create(with(json!({"timeout_ms": "fast"}))).gets(400, "timeout_ms"),
        create(with(json!({"timeout_ms": -1}))).gets(400, "timeout_ms"),
        create(with(json!({"rate_limit_per_s": 0}))).gets(400, "rate_limit_per_s"),
        create(with(json!({"enabled": "yes"}))).gets(400, "enabled"),
        create(with(json!({"secret": "not-a-secret"}))).gets(400, "secret"),
        create(with(json!({"headers": headers_33}))).gets(400, "headers"),
        create(with(json!({"headers": {"webhook-id": "x"}}))).gets(400, "headers.webhook-id"),
        create(with(json!({"headers": {"bad name": "x"}}))).gets(400, "headers.bad name"),
        create(with(json!({"headers": {"x-big": "v".repeat(4097)}}))).gets(400, "headers.x-big"),
        create(with(json!({"headers": {"x-nl": "a\r\nb"}}))).gets(400, "headers.x-nl"),
        create(with(json!({"auth": {"type": "bearer"}}))).gets(400, "auth.token"),
        create(with(json!({"auth": {"type": "bearer", "token": ""}}))).gets(400, "auth.token"),
        create(with(json!({"auth": {"type": "digest", "token": "t"}}))).gets(400, "auth.type"),
        create(with(json!({"auth": basic_colon}))).gets(400, "auth.username"),
        patch(&c, j(json!({"name": null}))).gets(400, "name"),
        patch(&c, j(json!({"colour": "red"}))).gets(400, "colour"),
        patch(&c, j(json!({"url": "https://[::ffff:127.0.0.1]/"}))).gets(400, "url"),
        patch(&c, j(json!({"timeout_ms": 999_999}))).gets(400, "timeout_ms"),
        post(&rotate, j(json!({"secret": "whsec_short"}))).gets(400, "secret"),
        post(&rotate, j(json!({"secrt": "typo"}))).gets(400, "secrt"),
        get("/v1/connections?limit=5").gets(400, "limit"),
        // Rules.
        post("/v1/rules", ru(json!({"event": "order..*"}))).gets(400, "event"),
        post("/v1/rules", ru(json!({"event": "*.order"}))).gets(400, "event"),
        post("/v1/rules", ru(json!({"action": "send_email"}))).gets(400, "action"),
        post("/v1/rules", ru(json!({"connection_id": "con_nope"}))).gets(400, "connection_id"),
        post("/v1/rules", ru(json!({"resource": null}))).gets(400, "resource"),
        post("/v1/rules", ru(json!({"resource": "o r"}))).gets(400, "resource"),
        patch(&r, j(json!({"enabled": "yes"}))).gets(400, "enabled"),
        patch(&r, j(json!({"event": null}))).gets(400, "event"),
        patch(&r, j(json!({"connection_id": "con_nope"}))).gets(400, "connection_id"),
        post(&format!("{r}/test"), s("{not json")).gets(400, "body"),
        get("/v1/rules?x=1").gets(400, "x"),
        // History and dead letters: query parameters.
        get("/v1/events?limit=0").gets(400, "limit"),
        get("/v1/events?limit=251").gets(400, "limit"),
        get("/v1/events?limit=ten").gets(400, "limit"),
        get("/v1/events?cursor=garbage").gets(400, "cursor"),
        get("/v1/events?status=lost").gets(400, "status"),
        get("/v1/events?event=a%20b").gets(400, "event"),
        get("/v1/events?colour=red").gets(400, "colour"),
        get("/v1/dead-letters?limit=-1").gets(400, "limit"),
        get("/v1/dead-letters?connection_id=a%20b").gets(400, "connection_id"),
        post("/v1/dead-letters/replay", j(json!({"connection_id": ""}))).gets(400, "connection_id"),
        post("/v1/dead-letters/replay", j(json!({"conection_id": con}))).gets(400, "conection_id"),
        // An array where an object is meant is refused, never read as a struct (a replay of
        // everything, an envelope from its fields in order).
        post("/v1/dead-letters/replay", j(json!([null, null]))).gets(400, "body"),
        post("/v1/dead-letters/replay", j(json!([]))).gets(400, "body"),
        events(j(json!(["a.b", "r", "1", {}, null, null]))).gets(400, "body"),
        bulk(j(json!([[]]))).gets(400, "body"),
        // Workspaces and keys.
        workspaces(j(json!({"name": ""}))).gets(400, "name"),
        workspaces(j(json!({"name": "w".repeat(201)}))).gets(400, "name"),
        workspaces(j(json!({"name": "w", "plan": "pro"}))).gets(400, "plan"),
        Refusal::new("GET", "/v1/workspaces?limit=0", Some(ADMIN), None).gets(400, "limit"),
        post("/v1/keys/roll", j(json!({"scope": "admin"}))).gets(400, "scope"),
        post("/v1/keys/roll", j(json!({}))).gets(400, "scope"),
        // Who is calling.
        Refusal::new("GET", "/v1/connections", None, None).gets_status(401),
        Refusal::new("GET", "/v1/connections", Some("sk_forged"), None).gets_status(401),
        Refusal::new("GET", "/v1/connections", Some("whatever"), None).gets_status(401),
        Refusal::new("POST", "/v1/events", Some("pk_forged"), j(event("a.b"))).gets_status(401),
        get("/v1/nowhere").gets_status(404),
    ];

    for Refusal {
        method,
        path,
        key,
        body,
        status,
        field,
    } in cases
    {
        let (got, answer, _) = raw(&stack, method, &path, key, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{method} {path}: {answer}");
        assert!(
            answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
            "{method} {path}: the error shape: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("expected struct") && !message.contains("elements"),
            "{method} {path}: serde's wording leaks: {message}"
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
