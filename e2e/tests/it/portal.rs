//! The people-facing surface: portal sessions, the pages' security headers, the OpenAPI
//! document, and the portal and console driven in a real browser.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use herald_e2e::{eventually, Behaviour, Receiver, Stack, ADMIN};
use serde_json::{json, Value};

async fn mint(stack: &Stack, sk: &str, role: &str, ttl_s: Option<u64>) -> Value {
    let mut body = json!({"role": role});
    if let Some(t) = ttl_s {
        body["ttl_s"] = json!(t);
    }
    let (status, minted) = stack.call("POST", "/v1/sessions", sk, Some(body)).await;
    assert_eq!(status, 201, "{minted}");
    minted
}

fn token(minted: &Value) -> String {
    minted["token"].as_str().expect("token").to_string()
}

async fn header(stack: &Stack, path: &str, name: &str) -> String {
    let r = stack
        .http
        .get(format!("{}{path}", stack.url))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200, "{path}");
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_act_for_one_workspace_with_their_role_and_never_with_secret_key_powers() {
    // Arrange
    let stack = Stack::start().await;
    let (ws, sk, _) = stack.workspace().await;
    let (_, other_sk, _) = stack.workspace().await;
    let (other_conn, _) = stack
        .connection(&other_sk, "http://127.0.0.1:9/x", json!({}))
        .await;
    let viewer = mint(&stack, &sk, "viewer", None).await;
    let editor = mint(&stack, &sk, "editor", None).await;
    let (viewer, editor_minted) = (token(&viewer), editor);
    let editor = token(&editor_minted);

    // Assert: the launch URL carries the token in its fragment, and the session expires.
    assert!(editor.starts_with("sess_"), "{editor}");
    assert_eq!(
        editor_minted["url"],
        json!(format!("/portal/{ws}/#session={editor}"))
    );
    let left = editor_minted["expires_at"].as_i64().expect("expiry") - herald_shared::now_ms();
    assert!(
        (890_000..=900_000).contains(&left),
        "15 minutes by default: {left}"
    );

    // A viewer reads, and changes nothing.
    for path in [
        "/v1/connections",
        "/v1/rules",
        "/v1/events",
        "/v1/dead-letters",
    ] {
        let (status, body) = stack.call("GET", path, &viewer, None).await;
        assert_eq!(status, 200, "viewer GET {path}: {body}");
    }
    let (status, body) = stack
        .call(
            "POST",
            "/v1/connections",
            &viewer,
            Some(json!({"name": "x", "url": "http://127.0.0.1:9/x"})),
        )
        .await;
    assert_eq!(status, 403, "a viewer cannot create: {body}");

    // An editor manages connections and rules, and sees a secret only when it is made.
    let (status, created) = stack
        .call(
            "POST",
            "/v1/connections",
            &editor,
            Some(json!({"name": "x", "url": "http://127.0.0.1:9/x"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["secret"]
        .as_str()
        .expect("secret")
        .starts_with("whsec_"));
    let id = created["id"].as_str().expect("id");
    let (status, _) = stack
        .call("GET", &format!("/v1/connections/{id}"), &editor, None)
        .await;
    assert_eq!(status, 200);

    // Secret-key powers stay with the secret key.
    let refused: &[(&str, String, Option<Value>)] = &[
        ("GET", format!("/v1/connections/{id}/secret"), None),
        (
            "POST",
            "/v1/keys/roll".into(),
            Some(json!({"scope": "secret"})),
        ),
        (
            "POST",
            "/v1/sessions".into(),
            Some(json!({"role": "editor"})),
        ),
        ("GET", "/v1/workspace/settings".into(), None),
        (
            "PATCH",
            "/v1/workspace/settings".into(),
            Some(json!({"frame_ancestors": ["https://evil.example"]})),
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(json!({"event": "a.b", "resource": "r", "resource_id": "1", "payload": {}})),
        ),
        ("GET", "/v1/workspaces".into(), None),
        ("GET", "/v1/admin/events/evt_x".into(), None),
    ];
    for (method, path, body) in refused {
        let (status, answer) = stack.call(method, path, &editor, body.clone()).await;
        assert_eq!(status, 403, "{method} {path} with a session: {answer}");
    }
    let (status, answer) = stack
        .call("GET", &format!("/v1/connections/{id}/secret"), &sk, None)
        .await;
    assert_eq!(status, 200, "the secret key still reads it: {answer}");

    // Another workspace's objects are out of reach, as if they did not exist.
    let (status, _) = stack
        .call(
            "GET",
            &format!("/v1/connections/{other_conn}"),
            &editor,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{other_conn}"),
            &editor,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 404);

    // Forged, malformed and refused requests.
    for forged in [
        "sess_0000000000000000000000000000000".to_string(),
        format!("{editor}x"),
    ] {
        let (status, _) = stack.call("GET", "/v1/connections", &forged, None).await;
        assert_eq!(status, 401, "{forged}");
    }
    for (body, field) in [
        (json!({"role": "admin"}), "role"),
        (json!({"role": "viewer", "ttl_s": 1}), "ttl_s"),
        (json!({"role": "viewer", "ttl_s": 86_400}), "ttl_s"),
        (json!({"role": "viewer", "scope": "x"}), "scope"),
    ] {
        let (status, answer) = stack.call("POST", "/v1/sessions", &sk, Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], json!(field), "{answer}");
    }

    // A refresh gives a new token with the same workspace and role; it is not a way out.
    let (status, refreshed) = stack
        .call("POST", "/v1/sessions/refresh", &viewer, None)
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let renewed = token(&refreshed);
    assert_ne!(renewed, viewer);
    let (status, current) = stack
        .call("GET", "/v1/sessions/current", &renewed, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(current["workspace_id"], json!(ws));
    assert_eq!(current["role"], json!("viewer"));
    let (status, _) = stack
        .call(
            "POST",
            "/v1/connections",
            &renewed,
            Some(json!({"name": "x", "url": "http://127.0.0.1:9/x"})),
        )
        .await;
    assert_eq!(status, 403, "a refreshed viewer is still a viewer");
    let (status, _) = stack.call("POST", "/v1/sessions/refresh", &sk, None).await;
    assert_eq!(status, 403, "only a session refreshes");

    // A session ends when it expires.
    let short = token(&mint(&stack, &sk, "editor", Some(5)).await);
    let (status, _) = stack.call("GET", "/v1/events", &short, None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(5_300)).await;
    let (status, answer) = stack.call("GET", "/v1/events", &short, None).await;
    assert_eq!(status, 401, "an expired session: {answer}");
    let (status, _) = stack
        .call("POST", "/v1/sessions/refresh", &short, None)
        .await;
    assert_eq!(status, 401, "an expired session cannot be refreshed");

    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_carry_a_strict_policy_and_only_listed_origins_may_frame_the_portal() {
    // Arrange
    let stack = Stack::start().await;
    let (ws, sk, _) = stack.workspace().await;

    // Not yet listed: nobody may frame the portal.
    let csp = header(&stack, &format!("/portal/{ws}/"), "content-security-policy").await;
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }

    // Act: list the SaaS's origins; refuse anything but origins.
    for (bad, field) in [
        (
            json!({"frame_ancestors": ["https://app.example.com/path"]}),
            "frame_ancestors[0]",
        ),
        (
            json!({"frame_ancestors": ["https://ok.example", "*"]}),
            "frame_ancestors[1]",
        ),
        (
            json!({"frame_ancestors": ["https://a.example; script-src *"]}),
            "frame_ancestors[0]",
        ),
        (json!({"frame_ancestors": null}), "frame_ancestors"),
    ] {
        let (status, answer) = stack
            .call("PATCH", "/v1/workspace/settings", &sk, Some(bad))
            .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], json!(field), "{answer}");
    }
    let (status, settings) = stack
        .call(
            "PATCH",
            "/v1/workspace/settings",
            &sk,
            Some(json!({"frame_ancestors": ["https://App.example.com", "http://127.0.0.1:5173"]})),
        )
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(
        settings["frame_ancestors"],
        json!(["https://app.example.com", "http://127.0.0.1:5173"])
    );

    // Assert
    let csp = header(&stack, &format!("/portal/{ws}/"), "content-security-policy").await;
    assert!(
        csp.contains("frame-ancestors https://app.example.com http://127.0.0.1:5173;"),
        "{csp}"
    );
    let csp = header(&stack, "/console/", "content-security-policy").await;
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&stack, "/console/", "x-frame-options").await, "DENY");
    let csp = header(&stack, "/portal/ws_unknown/", "content-security-policy").await;
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    for asset in ["herald.css", "common.js", "portal.js", "console.js"] {
        let kind = header(&stack, &format!("/assets/{asset}"), "content-type").await;
        assert!(kind.starts_with("text/"), "{asset}: {kind}");
    }
    // No page carries inline script or style: the policy would block them.
    for page in [format!("/portal/{ws}/"), "/console/".to_string()] {
        let html = stack
            .http
            .get(format!("{}{page}", stack.url))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "{page}"
        );
        assert!(!html.contains("<style"), "{page}");
    }

    stack.stop().await;
}

/// Every `$ref` in the document points at something that exists.
fn unresolved_refs(doc: &Value, node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or(r);
                if !r.starts_with("#/") || doc.pointer(pointer).is_none() {
                    out.push(r.clone());
                }
            }
            map.values().for_each(|v| unresolved_refs(doc, v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| unresolved_refs(doc, v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_document_is_valid_and_agrees_with_the_routes() {
    // Arrange
    let stack = Stack::start().await;
    let text = stack
        .http
        .get(format!("{}/openapi.json", stack.url))
        .send()
        .await
        .expect("openapi.json")
        .text()
        .await
        .expect("body");

    // Assert: a valid OpenAPI 3.1 document whose references all resolve.
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let parsed: oas3::OpenApiV3Spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(parsed.openapi.starts_with("3.1"), "{}", parsed.openapi);
    let mut broken = Vec::new();
    unresolved_refs(&doc, &doc, &mut broken);
    assert!(broken.is_empty(), "unresolved $ref: {broken:?}");

    let methods = ["get", "post", "put", "patch", "delete"];
    let mut declared = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in methods {
            if let Some(op) = item.get(m) {
                assert!(op["responses"].is_object(), "{m} {path} has responses");
                declared.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    // The fixed interface (CONTRACT.md) and the portal's endpoints are all described.
    for (m, p) in [
        ("POST", "/v1/workspaces"),
        ("GET", "/v1/workspaces"),
        ("POST", "/v1/connections"),
        ("GET", "/v1/connections"),
        ("GET", "/v1/connections/{id}"),
        ("PATCH", "/v1/connections/{id}"),
        ("DELETE", "/v1/connections/{id}"),
        ("POST", "/v1/connections/{id}/rotate-secret"),
        ("POST", "/v1/rules"),
        ("GET", "/v1/rules"),
        ("GET", "/v1/rules/{id}"),
        ("PATCH", "/v1/rules/{id}"),
        ("DELETE", "/v1/rules/{id}"),
        ("POST", "/v1/rules/{id}/test"),
        ("POST", "/v1/events"),
        ("POST", "/v1/events/bulk"),
        ("GET", "/v1/events"),
        ("GET", "/v1/events/{uuid}"),
        ("GET", "/v1/dead-letters"),
        ("GET", "/v1/dead-letters/{id}"),
        ("POST", "/v1/dead-letters/{id}/replay"),
        ("POST", "/v1/dead-letters/replay"),
        ("DELETE", "/v1/dead-letters/{id}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/v1/sessions"),
        ("POST", "/v1/sessions/refresh"),
        ("PATCH", "/v1/workspace/settings"),
        ("GET", "/openapi.json"),
    ] {
        assert!(
            declared.contains(&(m.to_string(), p.to_string())),
            "{m} {p} is missing from the document"
        );
    }

    // Every declared operation is served; no other method is served on a declared path.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for m in methods {
            let r = stack
                .http
                .request(
                    reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).expect("method"),
                    format!("{}{concrete}", stack.url),
                )
                .send()
                .await
                .expect("answer");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if item.get(m).is_some() {
                assert_ne!(status, 405, "{m} {path} is declared but not routed");
                assert!(
                    !body.contains("route not found"),
                    "{m} {path} is declared but not routed"
                );
            } else {
                assert_eq!(status, 405, "{m} {path} is routed but not declared: {body}");
            }
        }
    }

    stack.stop().await;
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn portal_and_console_work_in_a_real_browser() {
    // Arrange: what the browser needs is installed by ./deploy/services.sh.
    let browser_dir = repo_root().join("e2e/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node_ok
            && browser_dir.join("node_modules/playwright-core").is_dir()
            && std::path::Path::new(&chromium).exists(),
        "the browser test needs node, Chromium at {chromium} and e2e/browser/node_modules: \
         run ./deploy/services.sh"
    );
    let stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "1s,1s")]).await;
    let receiver = Receiver::start().await;
    receiver.set("flaky", Behaviour::FailFirst(3, 503));
    let (_, sk, _) = stack.workspace().await;

    // A dead letter in another workspace, for support staff to replay from the console.
    let (dead_ws, dead_sk, _) = stack.workspace().await;
    let (conn, _) = stack
        .connection(
            &dead_sk,
            &receiver.url("flaky"),
            json!({"name": "Flaky endpoint"}),
        )
        .await;
    stack.rule(&dead_sk, "invoice.paid", "invoice", &conn).await;
    let dead_event = stack
        .send(
            &dead_sk,
            "invoice.paid",
            "invoice",
            json!({"invoice": "inv_9"}),
        )
        .await;
    eventually("a dead letter", Duration::from_secs(30), || async {
        let (_, body) = stack.call("GET", "/v1/dead-letters", &dead_sk, None).await;
        (body["data"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;

    // Act
    let started = std::time::Instant::now();
    let screenshots = repo_root().join("test-output/screenshots");
    let out = tokio::process::Command::new("node")
        .arg("portal.mjs")
        .current_dir(&browser_dir)
        .env("HERALD_URL", &stack.url)
        .env("HERALD_SECRET_KEY", &sk)
        .env("HERALD_ADMIN_TOKEN", ADMIN)
        .env("RECEIVER_URL", receiver.url("orders"))
        .env("DEAD_WORKSPACE", &dead_ws)
        .env("DEAD_EVENT", &dead_event)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the browser test finishes within 120 s")
        .expect("node runs");

    // Assert
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{log}");
    println!("{log}browser test took {:.1?}", started.elapsed());
    assert_eq!(
        receiver.received("orders").len(),
        1,
        "the test event arrived"
    );
    assert_eq!(
        receiver.received("flaky").len(),
        4,
        "three failed attempts, then the replay"
    );
    for page in [
        "portal-connections",
        "portal-connection-error",
        "portal-rules",
        "portal-test-event",
        "portal-history",
        "portal-dead-letters",
        "portal-viewer",
        "portal-stats",
        "console-sign-in",
        "console-dead-letters",
        "console-event",
        "console-health",
        "console-stats",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).is_file(),
            "screenshot {page}.png"
        );
    }

    stack.stop().await;
}
