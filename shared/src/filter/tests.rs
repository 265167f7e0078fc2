//! The filter's semantics case by case, its errors, and a property test against a reference
//! evaluator that interprets the filter document directly.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn event(payload: Value) -> Event {
    Event {
        uuid: "evt_1".into(),
        event: "order.completed".into(),
        resource: "order".into(),
        resource_id: "ord_77".into(),
        payload: serde_json::value::RawValue::from_string(payload.to_string()).expect("json"),
        time_created: 1_774_137_600_000,
    }
}

fn passes(filter: Value, payload: Value) -> bool {
    let f = Filter::compile(filter).expect("valid filter");
    let e = event(payload);
    let parsed = parse_payload(&e);
    f.matches(&e, parsed.as_ref())
}

fn refused(filter: Value) -> FieldError {
    Filter::compile(filter.clone()).expect_err(&filter.to_string())
}

#[test]
fn the_contract_example_selects_paid_plans_over_ten_dollars() {
    let f =
        json!({"payload.plan": {"$in": ["pro", "team"]}, "payload.total_cents": {"$gte": 1000}});
    assert!(passes(
        f.clone(),
        json!({"plan": "pro", "total_cents": 1000})
    ));
    assert!(passes(
        f.clone(),
        json!({"plan": "team", "total_cents": 12900.5})
    ));
    assert!(!passes(
        f.clone(),
        json!({"plan": "free", "total_cents": 12900})
    ));
    assert!(!passes(
        f.clone(),
        json!({"plan": "pro", "total_cents": 999})
    ));
    assert!(!passes(f.clone(), json!({"plan": "pro"})));
    assert!(!passes(f, json!([1, 2])));
}

#[test]
fn envelope_fields_and_array_indexes_are_paths() {
    let payload = json!({"items": [{"sku": "A-1"}, {"sku": "B-2"}], "by_id": {"0": "zero"}});
    assert!(passes(
        json!({"payload.items.0.sku": "A-1"}),
        payload.clone()
    ));
    assert!(passes(
        json!({"payload.items.1.sku": "B-2"}),
        payload.clone()
    ));
    assert!(!passes(
        json!({"payload.items.2.sku": {"$exists": true}}),
        payload.clone()
    ));
    assert!(passes(json!({"payload.by_id.0": "zero"}), payload.clone()));
    assert!(passes(
        json!({"resource_id": "ord_77", "event": "order.completed", "resource": "order",
               "uuid": "evt_1", "time_created": {"$gt": 1_700_000_000_000_i64}}),
        payload.clone()
    ));
    assert!(!passes(
        json!({"resource_id": {"$lt": "ord_5"}}),
        payload.clone()
    ));
    assert!(passes(json!({"payload": {"$exists": true}}), payload));
}

#[test]
fn missing_counts_as_null_for_equality_and_never_orders() {
    let p = json!({"present_null": null});
    assert!(passes(json!({"payload.gone": {"$ne": "x"}}), p.clone()));
    assert!(passes(json!({"payload.gone": {"$nin": ["x"]}}), p.clone()));
    assert!(passes(json!({"payload.gone": null}), p.clone()));
    assert!(passes(
        json!({"payload.gone": {"$in": [1, null]}}),
        p.clone()
    ));
    assert!(!passes(
        json!({"payload.gone": {"$exists": true}}),
        p.clone()
    ));
    assert!(passes(
        json!({"payload.gone": {"$exists": false}}),
        p.clone()
    ));
    assert!(passes(
        json!({"payload.present_null": {"$exists": true}}),
        p.clone()
    ));
    assert!(passes(json!({"payload.present_null": null}), p.clone()));
    for op in ["$gt", "$gte", "$lt", "$lte"] {
        assert!(!passes(json!({"payload.gone": {op: 0}}), p.clone()), "{op}");
        assert!(
            !passes(json!({"payload.present_null": {op: 0}}), p.clone()),
            "{op}"
        );
    }
    // Through a scalar: missing too.
    assert!(passes(
        json!({"payload.present_null.x": {"$exists": false}}),
        p
    ));
}

#[test]
fn numbers_compare_by_value_strings_by_code_point_and_kinds_never_mix() {
    let p = json!({"n": 1.0, "big": u64::MAX, "neg": -3, "s": "b", "ns": "10"});
    assert!(passes(json!({"payload.n": 1}), p.clone()));
    assert!(passes(json!({"payload.n": {"$in": [7, 1]}}), p.clone()));
    assert!(passes(json!({"payload.big": {"$gt": i64::MAX}}), p.clone()));
    assert!(passes(json!({"payload.big": u64::MAX}), p.clone()));
    assert!(passes(json!({"payload.neg": {"$lt": u64::MAX}}), p.clone()));
    assert!(passes(
        json!({"payload.neg": {"$gte": -3.5, "$lte": -3}}),
        p.clone()
    ));
    assert!(passes(
        json!({"payload.s": {"$gt": "a", "$lt": "c"}}),
        p.clone()
    ));
    assert!(passes(json!({"payload.s": {"$lt": "é"}}), p.clone()));
    // A string is never greater or smaller than a number, nor equal to one.
    assert!(!passes(json!({"payload.ns": {"$gt": 5}}), p.clone()));
    assert!(!passes(json!({"payload.ns": {"$lte": 5}}), p.clone()));
    assert!(!passes(json!({"payload.ns": 10}), p.clone()));
    assert!(passes(
        json!({"$not": {"payload.ns": {"$gt": 5}}}),
        p.clone()
    ));
    assert!(!passes(json!({"payload.n": {"$gt": "0"}}), p));
}

#[test]
fn objects_and_arrays_compare_whole_and_arrays_are_not_searched() {
    let p = json!({"tags": ["a", "b"], "meta": {"x": 1, "y": [2.0]}});
    assert!(passes(json!({"payload.tags": ["a", "b"]}), p.clone()));
    assert!(!passes(json!({"payload.tags": ["b", "a"]}), p.clone()));
    assert!(!passes(json!({"payload.tags": "a"}), p.clone()));
    assert!(passes(
        json!({"payload.meta": {"y": [2], "x": 1.0}}),
        p.clone()
    ));
    assert!(!passes(json!({"payload.meta": {"x": 1}}), p.clone()));
    assert!(passes(
        json!({"payload.meta": {"$eq": {"x": 1, "y": [2]}}}),
        p
    ));
}

#[test]
fn and_or_not_combine_filters() {
    let f = json!({"$or": [{"payload.plan": "pro"}, {"payload.seats": {"$gte": 10}}],
                   "$not": {"payload.country": {"$in": ["XX", "YY"]}},
                   "$and": [{"resource": "order"}, {"payload.plan": {"$exists": true}}]});
    assert!(passes(f.clone(), json!({"plan": "pro", "country": "FR"})));
    assert!(passes(f.clone(), json!({"plan": "free", "seats": 12})));
    assert!(!passes(f.clone(), json!({"plan": "free", "seats": 2})));
    assert!(!passes(f.clone(), json!({"plan": "pro", "country": "XX"})));
    assert!(!passes(f, json!({"seats": 12})));
    assert!(
        passes(json!({}), json!(null)),
        "an empty filter takes everything"
    );
}

#[test]
fn rejected_by_names_the_first_failing_top_level_key() {
    let f = Filter::compile(json!({"payload.plan": "pro", "payload.total": {"$gt": 5}}))
        .expect("valid");
    let e = event(json!({"plan": "pro", "total": 1}));
    let p = parse_payload(&e);
    assert_eq!(f.rejected_by(&e, p.as_ref()), Some("payload.total"));
    let e = event(json!({"plan": "pro", "total": 9}));
    let p = parse_payload(&e);
    assert_eq!(f.rejected_by(&e, p.as_ref()), None);
    assert!(f.needs_payload());
    let f = Filter::compile(json!({"resource_id": "x"})).expect("valid");
    assert!(!f.needs_payload());
}

#[test]
fn invalid_filters_name_the_offending_part() {
    let cases = [
        (json!([]), "filter"),
        (json!("payload.plan"), "filter"),
        (
            json!({"payload.plan": {"$regex": "^p"}}),
            "filter.payload.plan.$regex",
        ),
        (
            json!({"payload.plan": {"$in": "pro"}}),
            "filter.payload.plan.$in",
        ),
        (
            json!({"payload.plan": {"$nin": {"a": 1}}}),
            "filter.payload.plan.$nin",
        ),
        (
            json!({"payload.plan": {"$exists": 1}}),
            "filter.payload.plan.$exists",
        ),
        (json!({"payload.n": {"$gt": null}}), "filter.payload.n.$gt"),
        (json!({"payload.n": {"$lte": [1]}}), "filter.payload.n.$lte"),
        (json!({"payload.n": {"$gt": 1, "x": 2}}), "filter.payload.n"),
        (
            json!({"payload.n": {"$not": {"$eq": 1}}}),
            "filter.payload.n.$not",
        ),
        (json!({"$and": []}), "filter.$and"),
        (json!({"$or": {"a": 1}}), "filter.$or"),
        (json!({"$or": [{"resource": "a"}, 3]}), "filter.$or[1]"),
        (json!({"$not": [{"resource": "a"}]}), "filter.$not"),
        (json!({"$nor": [{"resource": "a"}]}), "filter.$nor"),
        (
            json!({"$and": [{"payload.x": {"$foo": 1}}]}),
            "filter.$and[0].payload.x.$foo",
        ),
        (json!({"plan": "pro"}), "filter.plan"),
        (json!({"event.type": "x"}), "filter.event.type"),
        (json!({"payload..plan": "x"}), "filter.payload..plan"),
        (json!({"": 1}), "filter."),
    ];
    for (filter, field) in cases {
        assert_eq!(refused(filter.clone()).field, field, "{filter}");
    }
}

#[test]
fn filters_are_bounded_in_size_and_depth() {
    // Eight levels: the filter, $and's array, its filter, $or's array, its filter, an operator
    // object, $in's array, an array literal in it.
    let eight = json!({"$and": [{"$or": [{"payload.x": {"$in": [[1]]}}]}]});
    assert!(Filter::compile(eight).is_ok());
    let nine = json!({"$and": [{"$or": [{"payload.x": {"$in": [[[1]]]}}]}]});
    let e = refused(nine);
    assert_eq!(e.field, "filter.$and[0].$or[0].payload.x.$in[0][0]");
    assert!(e.message.contains("8 levels"), "{}", e.message);

    let long = "x".repeat(MAX_FILTER_BYTES);
    let e = refused(json!({"payload.a": long}));
    assert_eq!(e.field, "filter");
    assert!(e.message.contains("4096"), "{}", e.message);
    let fits = "x".repeat(MAX_FILTER_BYTES - r#"{"payload.a":""}"#.len());
    assert!(Filter::compile(json!({"payload.a": fits})).is_ok());
}

#[test]
fn a_rule_stores_the_source_and_compiles_it_when_read() {
    let source = json!({"payload.plan": {"$in": ["pro"]}});
    let f: Filter = serde_json::from_value(source.clone()).expect("valid");
    assert_eq!(serde_json::to_value(&f).expect("json"), source);
    assert_eq!(f.source(), &source);
    assert!(serde_json::from_value::<Filter>(json!({"payload.plan": {"$bad": 1}})).is_err());
}

// ---- property test against a reference evaluator ---------------------------------------------

/// The envelope as a JSON document, as the reference evaluator walks it.
fn envelope(e: &Event, payload: &Value) -> Value {
    json!({"uuid": e.uuid, "event": e.event, "resource": e.resource,
           "resource_id": e.resource_id, "time_created": e.time_created, "payload": payload})
}

/// The semantics written out plainly, over the filter's JSON and the envelope's JSON.
fn reference(filter: &Value, doc: &Value) -> bool {
    filter
        .as_object()
        .expect("object")
        .iter()
        .all(|(key, value)| match key.as_str() {
            "$and" => value
                .as_array()
                .expect("array")
                .iter()
                .all(|f| reference(f, doc)),
            "$or" => value
                .as_array()
                .expect("array")
                .iter()
                .any(|f| reference(f, doc)),
            "$not" => !reference(value, doc),
            path => {
                let found = lookup(doc, path);
                match value {
                    Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                        ops.iter().all(|(op, arg)| ref_op(op, arg, found))
                    }
                    literal => ref_eq(found, literal),
                }
            }
        })
}

fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = doc;
    for segment in path.split('.') {
        at = match at {
            Value::Object(m) => m.get(segment)?,
            Value::Array(a) if segment.chars().all(|c| c.is_ascii_digit()) => {
                a.get(segment.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(at)
}

fn ref_eq(found: Option<&Value>, literal: &Value) -> bool {
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && (0..x.len()).all(|i| same(&x[i], &y[i]))
            }
            (Value::Object(x), Value::Object(y)) => {
                let mut kx: Vec<_> = x.keys().collect();
                let mut ky: Vec<_> = y.keys().collect();
                kx.sort();
                ky.sort();
                kx == ky && x.keys().all(|k| same(&x[k], &y[k]))
            }
            _ => a == b,
        }
    }
    same(found.unwrap_or(&Value::Null), literal)
}

fn ref_op(op: &str, arg: &Value, found: Option<&Value>) -> bool {
    let ordered = |want: &[std::cmp::Ordering]| -> bool {
        let ord = match (found, arg) {
            (Some(Value::Number(a)), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
            (Some(Value::String(a)), Value::String(b)) => Some(a.cmp(b)),
            _ => None,
        };
        ord.is_some_and(|o| want.contains(&o))
    };
    use std::cmp::Ordering::*;
    match op {
        "$eq" => ref_eq(found, arg),
        "$ne" => !ref_eq(found, arg),
        "$in" => arg
            .as_array()
            .expect("array")
            .iter()
            .any(|v| ref_eq(found, v)),
        "$nin" => !arg
            .as_array()
            .expect("array")
            .iter()
            .any(|v| ref_eq(found, v)),
        "$gt" => ordered(&[Greater]),
        "$gte" => ordered(&[Greater, Equal]),
        "$lt" => ordered(&[Less]),
        "$lte" => ordered(&[Less, Equal]),
        "$exists" => found.is_some() == arg.as_bool().expect("bool"),
        other => panic!("the generator made {other}"),
    }
}

/// Values from a small pool, so filters and payloads often meet.
fn literal() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec![0.0, 1.0, 2.5, -1.5]).prop_map(|f| json!(f)),
        prop::sample::select(vec!["pro", "team", "free", "", "a", "b", "ord_1", "1"])
            .prop_map(|s| json!(s)),
    ];
    scalar.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(vec!["k", "sku"]), inner, 0..3)
                .prop_map(|m| json!(m)),
        ]
    })
}

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "payload",
        "payload.plan",
        "payload.total",
        "payload.items.0.sku",
        "payload.items.1",
        "payload.items.0",
        "payload.meta.k",
        "payload.meta.0",
        "payload.0",
        "payload.missing",
        "resource_id",
        "resource",
        "event",
        "uuid",
        "time_created",
    ])
    .prop_map(String::from)
}

fn operand(op: &'static str) -> BoxedStrategy<Value> {
    match op {
        "$in" | "$nin" => prop::collection::vec(literal(), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        "$gt" | "$gte" | "$lt" | "$lte" => prop_oneof![
            (-3i64..4).prop_map(|n| json!(n)),
            Just(json!(1.5)),
            prop::sample::select(vec!["", "a", "b", "ord_1", "pro", "1"]).prop_map(|s| json!(s)),
        ]
        .boxed(),
        "$exists" => any::<bool>().prop_map(Value::Bool).boxed(),
        _ => literal().boxed(),
    }
}

fn condition() -> impl Strategy<Value = Value> {
    let ops = prop::collection::vec(prop::sample::select(OPERATORS.to_vec()), 1..3)
        .prop_flat_map(|ops| {
            ops.into_iter()
                .map(|op| (Just(op), operand(op)))
                .collect::<Vec<_>>()
        })
        .prop_map(|pairs| {
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(op, v)| (op.to_string(), v))
                    .collect(),
            )
        });
    prop_oneof![literal(), ops]
}

fn filter() -> impl Strategy<Value = Value> {
    let leaf = prop::collection::btree_map(path(), condition(), 0..3).prop_map(|m| json!(m));
    leaf.prop_recursive(2, 12, 3, |inner| {
        (
            prop::collection::btree_map(path(), condition(), 0..2),
            prop::option::of(prop::collection::vec(inner.clone(), 1..3)),
            prop::option::of(prop::collection::vec(inner.clone(), 1..3)),
            prop::option::of(inner),
        )
            .prop_map(|(fields, and, or, not)| {
                let mut m: serde_json::Map<String, Value> = fields.into_iter().collect();
                if let Some(a) = and {
                    m.insert("$and".into(), Value::Array(a));
                }
                if let Some(o) = or {
                    m.insert("$or".into(), Value::Array(o));
                }
                if let Some(n) = not {
                    m.insert("$not".into(), n);
                }
                Value::Object(m)
            })
    })
}

fn subject() -> impl Strategy<Value = (Event, Value)> {
    let payload_object = (
        prop::option::of(literal()),
        prop::option::of(literal()),
        prop::option::of(prop::collection::vec(literal(), 0..3)),
        prop::option::of(literal()),
    )
        .prop_map(|(plan, total, items, meta)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [("plan", plan), ("total", total), ("meta", meta)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if let Some(items) = items {
                m.insert("items".into(), Value::Array(items));
            }
            Value::Object(m)
        });
    (
        prop_oneof![3 => payload_object, 1 => literal()],
        prop::sample::select(vec!["ord_1", "pro", "1", ""]),
        prop::sample::select(vec!["order", "a"]),
        prop::sample::select(vec![-2i64, 0, 1, 3]),
    )
        .prop_map(|(payload, resource_id, resource, time_created)| {
            let mut e = event(payload.clone());
            e.resource_id = resource_id.into();
            e.resource = resource.into();
            e.time_created = time_created;
            (e, payload)
        })
}

proptest! {
    #[test]
    fn the_compiled_filter_agrees_with_the_reference((source, (event, payload)) in (filter(), subject())) {
        let compiled = match Filter::compile(source.clone()) {
            Ok(f) => f,
            // Generated filters can nest past the depth limit; those are refused, not judged.
            Err(e) => {
                prop_assert!(e.message.contains("levels deep"), "{source}: {e}");
                return Ok(());
            }
        };
        let parsed = parse_payload(&event);
        let expected = reference(&source, &envelope(&event, &payload));
        prop_assert_eq!(compiled.matches(&event, parsed.as_ref()), expected, "{} on {}", source, payload);
        prop_assert_eq!(compiled.rejected_by(&event, parsed.as_ref()).is_none(), expected);
    }

    #[test]
    fn any_json_is_compiled_or_refused_without_panicking(v in any_json()) {
        let _ = Filter::compile(v);
    }
}

/// Any JSON, keys drawn so that paths and operators come up.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(OPERATORS.to_vec()).prop_map(String::from),
                    prop::sample::select(vec!["$and", "$or", "$not", "$x"]).prop_map(String::from),
                    path(),
                    ".{0,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| json!(m)),
        ]
    })
}
