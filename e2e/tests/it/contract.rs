//! The served OpenAPI document against the running server, property-based: for every
//! operation, requests generated from the document's schemas that are valid by them are never
//! refused with 400 (nor answered 5xx), and requests that break exactly one stated constraint
//! (a range, a length, a type, a required field, an object body, a non-null field) get a 4xx.
//!
//! Generation is seeded, so a run is the same every time; the deliverer is stopped, so nothing
//! generated is ever sent to a destination.

use std::collections::BTreeMap;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

use herald_e2e::{Stack, ADMIN};

/// Valid requests generated per operation.
const VALID_CASES: usize = 16;
/// Items, entries and free-form values are kept small; bounds are tested by the invalid cases.
const SMALL: usize = 3;

/// Real ids the requests point at, made afresh for each operation (one may delete them).
struct Fixture {
    ws: String,
    secret_key: String,
    session: String,
    connection_id: String,
    rule_id: String,
    event_uuid: String,
    /// A usable client certificate: PEM the schema describes only as strings.
    tls: Value,
}

impl Fixture {
    async fn new(stack: &Stack) -> Self {
        let (ws, secret_key, _) = stack.workspace().await;
        let (connection_id, _) = stack
            .connection(&secret_key, "http://127.0.0.1:9/never", json!({}))
            .await;
        let rule_id = stack.rule(&secret_key, "*", "*", &connection_id).await;
        let event_uuid = stack
            .send(&secret_key, "order.created", "order", json!({"n": 1}))
            .await;
        let (status, minted) = stack
            .call(
                "POST",
                "/v1/sessions",
                &secret_key,
                Some(json!({"role": "editor"})),
            )
            .await;
        assert_eq!(status, 201, "{minted}");
        let pki = herald_e2e::TestPki::new("Contract CA");
        let (cert, key) = pki.issue("contract", &["contract.test"], -1, 30);
        Self {
            tls: json!({"client_cert_pem": cert, "client_key_pem": key, "ca_pem": pki.ca_pem}),
            ws,
            secret_key,
            session: minted["token"].as_str().expect("token").into(),
            connection_id,
            rule_id,
            event_uuid,
        }
    }

    /// The token an operation is called with: the admin token for the console and workspace
    /// administration, a portal session where only one will do, else the secret key.
    fn token(&self, path: &str) -> &str {
        if path.starts_with("/v1/admin") || path == "/v1/workspaces" {
            ADMIN
        } else if path.starts_with("/v1/sessions/") {
            &self.session
        } else {
            &self.secret_key
        }
    }

    /// The path with its parameters filled in with real ids.
    fn path(&self, template: &str) -> String {
        let mut out = Vec::new();
        let mut previous = "";
        for segment in template.split('/') {
            out.push(match segment {
                "{ws}" => self.ws.as_str(),
                "{uuid}" => self.event_uuid.as_str(),
                "{file}" => "herald.css",
                "{id}" if previous == "connections" => self.connection_id.as_str(),
                "{id}" if previous == "rules" => self.rule_id.as_str(),
                "{id}" => "dl_unknown.con_unknown",
                s => s,
            });
            previous = segment;
        }
        out.join("/")
    }

    /// A value a field must have to name something that exists, rather than any value its
    /// schema allows (a rule's connection must be one of the workspace's).
    fn known(&self, field: &str) -> Option<Value> {
        match field {
            "connection_id" => Some(json!(self.connection_id)),
            "workspace_id" => Some(json!(self.ws)),
            // A given `secret` is a `whsec_` one, which only the default scheme takes: Ed25519
            // keys are always generated (the destination security tests cover them).
            "signature_scheme" => Some(json!("hmac_sha256")),
            // A client certificate must be one, with its key: made in the test.
            "tls" => Some(self.tls.clone()),
            _ => None,
        }
    }
}

/// One request: query parameters and an optional JSON body (`None`: no body at all).
#[derive(Clone, Debug)]
struct Request {
    query: Vec<(String, String)>,
    body: Option<Value>,
}

/// An operation of the document.
struct Operation<'a> {
    method: &'a str,
    path: &'a str,
    params: Vec<&'a Value>,
    body: Option<(&'a Value, bool)>,
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let params = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "query").collect())
                .unwrap_or_default();
            let body = op.get("requestBody").map(|b| {
                (
                    &b["content"]["application/json"]["schema"],
                    b["required"] == json!(true),
                )
            });
            out.push(Operation {
                method,
                path,
                params,
                body,
            });
        }
    }
    out
}

/// Generates values from the document's schemas with a seeded runner.
struct Gen<'a> {
    doc: &'a Value,
    runner: TestRunner,
}

impl<'a> Gen<'a> {
    fn new(doc: &'a Value) -> Self {
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
        Self {
            doc,
            runner: TestRunner::new_with_rng(Config::default(), rng),
        }
    }

    fn draw<S: Strategy>(&mut self, strategy: S) -> S::Value {
        strategy
            .new_tree(&mut self.runner)
            .expect("a value")
            .current()
    }

    fn chance(&mut self) -> bool {
        self.draw(proptest::bool::ANY)
    }

    fn pick<T: Clone + std::fmt::Debug>(&mut self, items: &[T]) -> T {
        let i = self.draw(0..items.len());
        items[i].clone()
    }

    /// A value valid by `schema`; `known` supplies fields that must name real things.
    fn valid(&mut self, schema: &Value, known: &dyn Fn(&str) -> Option<Value>) -> Value {
        let s = resolve(self.doc, schema);
        if let Some(values) = s["enum"].as_array() {
            return self.pick(values);
        }
        if let Some(alternatives) = s["oneOf"].as_array().or(s["anyOf"].as_array()) {
            let alternative = self.pick(alternatives);
            return self.valid(&alternative, known);
        }
        let types = own_types(s);
        let t = if types.is_empty() {
            "any".to_string()
        } else {
            self.pick(&types)
        };
        match t.as_str() {
            "null" => Value::Null,
            "boolean" => json!(self.chance()),
            "integer" => {
                let lo = s["minimum"].as_i64().unwrap_or(-1_000_000);
                let hi = s["maximum"].as_i64().unwrap_or(1_000_000);
                // The bounds themselves, half of the time: they are where servers go wrong.
                match self.draw(0..4) {
                    0 => json!(lo),
                    1 => json!(hi),
                    _ => json!(self.draw(lo..=hi)),
                }
            }
            "number" => json!(self.draw(-1e6..1e6f64)),
            "string" => json!(self.string(s)),
            "array" => {
                let min = s["minItems"].as_u64().unwrap_or(0) as usize;
                let max = s["maxItems"].as_u64().map_or(min + SMALL, |m| m as usize);
                let n = self.draw(min..=max.min(min + SMALL));
                (0..n).map(|_| self.valid(&s["items"], known)).collect()
            }
            "object" => self.object(s, known),
            _ => self.any(2),
        }
    }

    fn object(&mut self, s: &Value, known: &dyn Fn(&str) -> Option<Value>) -> Value {
        let required = required(s);
        let mut out = Map::new();
        if let Some(props) = s["properties"].as_object() {
            for (name, schema) in props {
                if required.contains(&name.as_str()) || self.chance() {
                    let v = known(name).unwrap_or_else(|| self.valid(schema, known));
                    out.insert(name.clone(), v);
                }
            }
        }
        if let Some(values) = s.get("additionalProperties").filter(|v| v.is_object()) {
            let max = s["maxProperties"].as_u64().map_or(SMALL, |m| m as usize);
            for _ in 0..self.draw(0..=max.min(SMALL)) {
                let key = self.string(resolve(self.doc, &s["propertyNames"]));
                let value = self.valid(values, known);
                out.insert(key, value);
            }
        }
        Value::Object(out)
    }

    /// A string of the schema's pattern (anchors dropped: the generator takes whole strings)
    /// and length, or of any characters without a pattern.
    fn string(&mut self, s: &Value) -> String {
        let min = s["minLength"].as_u64().unwrap_or(0) as usize;
        let max = s["maxLength"].as_u64().map_or(min + 16, |m| m as usize);
        let pattern = s["pattern"]
            .as_str()
            .map(|p| p.trim_start_matches('^').trim_end_matches('$').to_string())
            .unwrap_or_else(|| format!("\\PC{{{min},{}}}", max.min(min + 16)));
        let strategy = proptest::string::string_regex(&pattern).expect("a usable pattern");
        for _ in 0..1000 {
            let v = self.draw(&strategy);
            if (min..=max).contains(&v.chars().count()) {
                return v;
            }
        }
        panic!("no string of {min} to {max} characters matches {pattern}");
    }

    /// Any small JSON value, nested at most `depth` deep.
    fn any(&mut self, depth: usize) -> Value {
        match self.draw(0..if depth == 0 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => json!(self.chance()),
            2 => json!(self.draw(-1000..1000i64)),
            3 => json!(self.draw("[a-z ]{0,8}")),
            4 => (0..self.draw(0..SMALL))
                .map(|_| self.any(depth - 1))
                .collect(),
            _ => (0..self.draw(0..SMALL))
                .map(|i| (format!("k{i}"), self.any(depth - 1)))
                .collect::<Map<_, _>>()
                .into(),
        }
    }

    /// A valid request; `all` also sends the optional parameters and bodies some of the time.
    fn request(&mut self, op: &Operation, fx: &Fixture, all: bool) -> Request {
        let known = |field: &str| fx.known(field);
        let mut query = Vec::new();
        for p in &op.params {
            let name = p["name"].as_str().expect("name");
            if p["required"] == json!(true) || (all && self.chance()) {
                let v = known(name).unwrap_or_else(|| self.valid(&p["schema"], &known));
                query.push((name.to_string(), scalar(&v)));
            }
        }
        let body = match op.body {
            Some((schema, required)) if required || (all && self.chance()) => {
                if all {
                    Some(self.valid(schema, &known))
                } else {
                    Some(self.minimal(schema, &known))
                }
            }
            _ => None,
        };
        Request { query, body }
    }

    /// A valid value with only what is required: the base that invalid cases change once.
    fn minimal(&mut self, schema: &Value, known: &dyn Fn(&str) -> Option<Value>) -> Value {
        let s = resolve(self.doc, schema);
        if own_types(s) != ["object"] || s.get("properties").is_none() {
            return self.valid(schema, known);
        }
        let mut out = Map::new();
        for name in required(s) {
            let v = known(name).unwrap_or_else(|| self.valid(&s["properties"][name], known));
            out.insert(name.to_string(), v);
        }
        Value::Object(out)
    }
}

/// Follows `$ref`s to the schema itself.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema["$ref"].as_str() {
        schema = doc
            .pointer(r.trim_start_matches('#'))
            .expect("the $ref resolves");
    }
    schema
}

/// The JSON types a schema names itself (empty: any, or given by its alternatives).
fn own_types(s: &Value) -> Vec<String> {
    match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// Every JSON type a value of the schema may have; `None` when any value is allowed.
fn types(doc: &Value, schema: &Value) -> Option<Vec<String>> {
    let s = resolve(doc, schema);
    if let Some(values) = s["enum"].as_array() {
        return Some(values.iter().map(json_type).collect());
    }
    if let Some(alternatives) = s["oneOf"].as_array().or(s["anyOf"].as_array()) {
        let mut all = Vec::new();
        for a in alternatives {
            all.extend(types(doc, a)?);
        }
        return Some(all);
    }
    let own = own_types(s);
    (!own.is_empty()).then_some(own)
}

fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
    .to_string()
}

fn required(s: &Value) -> Vec<&str> {
    s["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A query parameter's text.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The ways a body field of `schema` can be broken once, each with what it breaks: the wrong
/// type, `null` where not nullable, out of range, too long, too many or too few items or
/// entries. `item` is a valid item, for arrays.
fn breakages(doc: &Value, schema: &Value, item: Option<Value>) -> Vec<(String, Value)> {
    let s = resolve(doc, schema);
    let mut out = Vec::new();
    let Some(allowed) = types(doc, schema) else {
        return out;
    };
    let allows = |t: &str| allowed.iter().any(|a| a == t);
    if !allows("null") {
        out.push(("null where not nullable".into(), Value::Null));
    }
    if !allows("string") {
        out.push(("a string where none is allowed".into(), json!("x")));
    } else if !allows("integer") && !allows("number") {
        out.push(("a number where a string is meant".into(), json!(12345)));
    }
    if let Some(min) = s["minimum"].as_i64() {
        out.push((format!("below the minimum {min}"), json!(min - 1)));
    }
    if let Some(max) = s["maximum"].as_i64() {
        out.push((format!("above the maximum {max}"), json!(max + 1)));
    }
    if let Some(max) = s["maxLength"].as_u64() {
        let long = "a".repeat(max as usize + 1);
        out.push((format!("longer than {max} characters"), json!(long)));
    }
    if let (Some(max), Some(item)) = (s["maxItems"].as_u64(), &item) {
        let items = vec![item.clone(); max as usize + 1];
        out.push((format!("more than {max} items"), Value::Array(items)));
    }
    if let (Some(min), Some(item)) = (s["minItems"].as_u64().filter(|m| *m > 0), &item) {
        let items = vec![item.clone(); min as usize - 1];
        out.push((format!("fewer than {min} items"), Value::Array(items)));
    }
    let values = s.get("additionalProperties").filter(|v| v.is_object());
    if let (Some(max), Some(_)) = (s["maxProperties"].as_u64(), values) {
        let many = (0..=max).map(|i| (format!("X-Extra-{i}"), json!("v")));
        let many: Map<String, Value> = many.collect();
        out.push((format!("more than {max} entries"), many.into()));
    }
    if let Some(max) = values.and_then(|v| resolve(doc, v)["maxLength"].as_u64()) {
        let long = json!({"X-Long": "a".repeat(max as usize + 1)});
        out.push((format!("an entry longer than {max} characters"), long));
    }
    out
}

/// The ways a query parameter can be broken once: text where a number is meant, out of range,
/// too long, or left out when required.
fn query_breakages(doc: &Value, param: &Value) -> Vec<(String, Option<String>)> {
    let s = resolve(doc, &param["schema"]);
    let mut out = Vec::new();
    if param["required"] == json!(true) {
        out.push(("left out though required".into(), None));
    }
    if own_types(s).iter().any(|t| t == "integer") {
        out.push(("not a number".into(), Some("x".into())));
    }
    if let Some(min) = s["minimum"].as_i64() {
        out.push((
            format!("below the minimum {min}"),
            Some((min - 1).to_string()),
        ));
    }
    if let Some(max) = s["maximum"].as_i64() {
        out.push((
            format!("above the maximum {max}"),
            Some((max + 1).to_string()),
        ));
    }
    if let Some(max) = s["maxLength"].as_u64() {
        let long = "a".repeat(max as usize + 1);
        out.push((format!("longer than {max} characters"), Some(long)));
    }
    out
}

/// Requests that break exactly one constraint of the operation, each with what it breaks.
fn invalid_requests(gen: &mut Gen, op: &Operation, base: &Request) -> Vec<(String, Request)> {
    let doc = gen.doc;
    let mut out = Vec::new();
    let with_body = |body: Value| Request {
        query: base.query.clone(),
        body: Some(body),
    };
    for p in &op.params {
        let name = p["name"].as_str().expect("name");
        for (what, v) in query_breakages(doc, p) {
            let mut r = base.clone();
            r.query.retain(|(n, _)| n != name);
            r.query.extend(v.map(|v| (name.to_string(), v)));
            out.push((format!("query {name}: {what}"), r));
        }
    }
    let Some((schema, _)) = op.body else {
        return out;
    };
    let s = resolve(doc, schema);
    if own_types(s) != ["object"] {
        return out;
    }
    for not_object in [json!([]), json!("x"), json!(1), Value::Null] {
        let what = format!("body {not_object} instead of an object");
        out.push((what, with_body(not_object)));
    }
    let body = base.body.clone().unwrap_or_else(|| json!({}));
    for name in required(s) {
        let mut b = body.clone();
        b.as_object_mut().expect("object").remove(name);
        out.push((format!("body without required {name}"), with_body(b)));
    }
    let no_known = |_: &str| None;
    for (name, prop) in s["properties"].as_object().into_iter().flatten() {
        let items = &resolve(doc, prop)["items"];
        let item = (!items.is_null()).then(|| gen.valid(items, &no_known));
        for (what, v) in breakages(doc, prop, item) {
            let mut b = body.clone();
            b[name.as_str()] = v;
            out.push((format!("body {name}: {what}"), with_body(b)));
        }
    }
    out
}

async fn send(stack: &Stack, op: &Operation<'_>, fx: &Fixture, r: &Request) -> (u16, String) {
    let method = reqwest::Method::from_bytes(op.method.to_uppercase().as_bytes()).expect("method");
    let mut req = stack
        .http
        .request(method, format!("{}{}", stack.url, fx.path(op.path)))
        .bearer_auth(fx.token(op.path))
        .query(&r.query);
    if let Some(body) = &r.body {
        req = req.json(body);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_served_document_and_the_server_agree_on_every_operation() {
    // Arrange: the stack without a deliverer, and the document it serves.
    let mut stack = Stack::start().await;
    stack.stop_deliverer().await;
    let doc: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.url))
        .send()
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("JSON");
    let mut gen = Gen::new(&doc);
    let mut disagreements = Vec::new();
    let mut counted = BTreeMap::<&str, usize>::new();

    for op in operations(&doc) {
        let fx = Fixture::new(&stack).await;
        let label = format!("{} {}", op.method.to_uppercase(), op.path);

        // Act and assert: invalid requests first, while the fixture's ids all exist.
        let base = gen.request(&op, &fx, false);
        for (what, r) in invalid_requests(&mut gen, &op, &base) {
            let (status, body) = send(&stack, &op, &fx, &r).await;
            *counted.entry("invalid").or_default() += 1;
            if !(400..500).contains(&status) {
                disagreements.push(format!(
                    "{label} ({what}) accepted with {status}: query {:?} body {:?}: {body}",
                    r.query, r.body
                ));
            }
        }
        for _ in 0..VALID_CASES {
            let r = gen.request(&op, &fx, true);
            let (status, body) = send(&stack, &op, &fx, &r).await;
            *counted.entry("valid").or_default() += 1;
            if status == 400 || status >= 500 {
                disagreements.push(format!(
                    "{label} valid by the document, refused with {status}: query {:?} body {:?}: {body}",
                    r.query, r.body
                ));
            }
        }
    }

    assert!(
        disagreements.is_empty(),
        "{} disagreements between /openapi.json and the server ({counted:?} requests):\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(
        counted["valid"] > 500 && counted["invalid"] > 100,
        "{counted:?}"
    );
    stack.stop().await;
}
