//! Payload filters on rules: a small, Mongo-like query over the event envelope, compiled once
//! when a rule is created or loaded and evaluated by the router for every candidate event.
//!
//! A filter is a JSON object. Each key is either a dotted path of the envelope (`payload.plan`,
//! `payload.items.0.sku`, `resource_id`) or one of `$and`, `$or` (non-empty arrays of filters)
//! and `$not` (a filter). Each path's value is a literal (equality) or an object of operators
//! `$eq $ne $in $nin $gt $gte $lt $lte $exists`. Every key of an object must hold, and every
//! operator of an operator object.
//!
//! Semantics (the README's "Payload filters" section says the same for users):
//! - Paths start at one of `uuid`, `event`, `resource`, `resource_id`, `time_created` or
//!   `payload`; only `payload` has fields below it. A numeric segment indexes an array and is a
//!   key of an object (`items.0` is the first item of an array, or the key `"0"` of an object).
//!   A path that runs into a missing key, an index past the end or a scalar is *missing*.
//! - Equality (`$eq`, a bare literal, `$in`, and their negations) compares JSON values, with
//!   numbers compared by value (`1` equals `1.0`) and objects and arrays compared whole. Arrays
//!   are not searched: `{"payload.tags": "x"}` matches only `"tags": "x"`, not `["x"]`.
//! - A missing value counts as `null` for `$eq $ne $in $nin`: so `$ne` and `$nin` hold when the
//!   field is missing, and `{"$eq": null}` holds for a missing field or a present `null`.
//! - `$gt $gte $lt $lte` take a number or a string. They hold only when the value has the same
//!   kind: numbers by value, strings by Unicode code point (byte-wise UTF-8). A string against a
//!   number, a missing value or `null` never holds (and `$not` of it then does).
//! - `$exists: true` holds when the path resolves to any value, `null` included.
//! - `{}` (or a filter with no keys) matches every event.
//!
//! Limits, checked when a rule is created or changed: at most [`MAX_FILTER_BYTES`] as compact
//! JSON and [`MAX_FILTER_DEPTH`] levels of nested objects and arrays (the filter itself is the
//! first level). Evaluating one allocates nothing; the router parses an event's payload at most
//! once, and only when a filter of a candidate rule looks into it.
//!
//! Checking and compiling a document is `compile`'s; evaluating the compiled clauses is here.

use std::cmp::Ordering;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Number, Value};

use compile::{compact_len, compile_object, too_deep};

use crate::model::{Event, FieldError};

mod compile;

/// The largest filter, in bytes of compact JSON.
pub const MAX_FILTER_BYTES: usize = 4096;

/// The deepest filter, counting nested objects and arrays; the filter object is level 1.
pub const MAX_FILTER_DEPTH: usize = 8;

/// The envelope fields a path may start at.
pub const ROOTS: &[&str] = &[
    "uuid",
    "event",
    "resource",
    "resource_id",
    "time_created",
    "payload",
];

/// The operators a path's value may use.
pub const OPERATORS: &[&str] = &[
    "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists",
];

/// A validated filter: the document as the caller wrote it, and its compiled form.
#[derive(Debug, Clone)]
pub struct Filter {
    source: Value,
    root: Vec<Clause>,
    needs_payload: bool,
}

#[derive(Debug, Clone)]
enum Clause {
    Field { path: Path, conditions: Vec<Cond> },
    And(Vec<Vec<Clause>>),
    Or(Vec<Vec<Clause>>),
    Not(Vec<Clause>),
}

#[derive(Debug, Clone)]
struct Path {
    root: Root,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Uuid,
    Event,
    Resource,
    ResourceId,
    TimeCreated,
    Payload,
}

#[derive(Debug, Clone)]
struct Step {
    key: String,
    index: Option<usize>,
}

#[derive(Debug, Clone)]
enum Cond {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Cmp(CmpOp, Bound),
    Exists(bool),
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone)]
enum Bound {
    Num(Number),
    Str(String),
}

/// What a path found in an event: part of the payload, or one of the envelope's own fields.
#[derive(Clone, Copy)]
enum Found<'a> {
    Json(&'a Value),
    Str(&'a str),
    Int(i64),
}

impl Filter {
    /// Validates and compiles a filter. Errors name the offending part as `filter.<path>`
    /// (`filter.payload.plan.$in`, `filter.$and[1]`).
    pub fn compile(source: Value) -> Result<Self, FieldError> {
        let size = compact_len(&source);
        if size > MAX_FILTER_BYTES {
            return Err(FieldError::new(
                "filter",
                format!(
                    "must be at most {MAX_FILTER_BYTES} bytes as compact JSON; this one is {size}"
                ),
            ));
        }
        let Value::Object(object) = &source else {
            return Err(FieldError::new(
                "filter",
                "must be a JSON object of dotted envelope paths (payload.plan) or $and/$or/$not",
            ));
        };
        if let Some(at) = too_deep(&source, 1, "filter") {
            return Err(FieldError::new(
                at,
                format!("the filter is nested more than {MAX_FILTER_DEPTH} levels deep (objects and arrays)"),
            ));
        }
        let mut needs_payload = false;
        let root = compile_object(object, "filter", &mut needs_payload)?;
        Ok(Self {
            source,
            root,
            needs_payload,
        })
    }

    /// The filter as the caller wrote it.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Whether any path looks into the payload (the caller then parses it for [`Self::matches`]).
    pub fn needs_payload(&self) -> bool {
        self.needs_payload
    }

    /// Whether the event passes. `payload` is the event's parsed payload; when `None`, every
    /// `payload` path is missing.
    pub fn matches(&self, event: &Event, payload: Option<&Value>) -> bool {
        all(&self.root, event, payload)
    }

    /// The first top-level key (a path, `$and`, `$or` or `$not`) the event fails, or `None`
    /// when it passes: what a rule test reports.
    pub fn rejected_by(&self, event: &Event, payload: Option<&Value>) -> Option<&str> {
        let keys = self.source.as_object()?.keys();
        keys.zip(&self.root)
            .find(|(_, clause)| !clause.holds(event, payload))
            .map(|(key, _)| key.as_str())
    }
}

/// Parses an event's payload for [`Filter::matches`]; `None` if it is not JSON (intake has
/// checked it is, so this does not happen).
pub fn parse_payload(event: &Event) -> Option<Value> {
    serde_json::from_str(event.payload.get()).ok()
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Filter {}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = Value::deserialize(d)?;
        Filter::compile(source).map_err(serde::de::Error::custom)
    }
}

// ---- evaluation ------------------------------------------------------------------------------

fn all(clauses: &[Clause], event: &Event, payload: Option<&Value>) -> bool {
    clauses.iter().all(|c| c.holds(event, payload))
}

impl Clause {
    fn holds(&self, event: &Event, payload: Option<&Value>) -> bool {
        match self {
            Clause::Field { path, conditions } => {
                let found = path.resolve(event, payload);
                conditions.iter().all(|c| c.holds(found))
            }
            Clause::And(subs) => subs.iter().all(|s| all(s, event, payload)),
            Clause::Or(subs) => subs.iter().any(|s| all(s, event, payload)),
            Clause::Not(sub) => !all(sub, event, payload),
        }
    }
}

impl Path {
    fn resolve<'a>(&self, event: &'a Event, payload: Option<&'a Value>) -> Option<Found<'a>> {
        Some(match self.root {
            Root::Uuid => Found::Str(&event.uuid),
            Root::Event => Found::Str(&event.event),
            Root::Resource => Found::Str(&event.resource),
            Root::ResourceId => Found::Str(&event.resource_id),
            Root::TimeCreated => Found::Int(event.time_created),
            Root::Payload => {
                let mut at = payload?;
                for step in &self.steps {
                    at = match at {
                        Value::Object(map) => map.get(&step.key)?,
                        Value::Array(items) => items.get(step.index?)?,
                        _ => return None,
                    };
                }
                Found::Json(at)
            }
        })
    }
}

impl Cond {
    fn holds(&self, found: Option<Found<'_>>) -> bool {
        match self {
            Cond::Eq(v) => equals(found, v),
            Cond::Ne(v) => !equals(found, v),
            Cond::In(vs) => vs.iter().any(|v| equals(found, v)),
            Cond::Nin(vs) => !vs.iter().any(|v| equals(found, v)),
            Cond::Exists(want) => found.is_some() == *want,
            Cond::Cmp(op, bound) => {
                let Some(ord) = found.and_then(|f| order(f, bound)) else {
                    return false;
                };
                match op {
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Gte => ord != Ordering::Less,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Lte => ord != Ordering::Greater,
                }
            }
        }
    }
}

/// Equality with a missing value counting as `null`.
fn equals(found: Option<Found<'_>>, v: &Value) -> bool {
    match found {
        None => v.is_null(),
        Some(Found::Json(x)) => json_eq(x, v),
        Some(Found::Str(s)) => v.as_str() == Some(s),
        Some(Found::Int(n)) => {
            matches!(v, Value::Number(m) if num_cmp(&Number::from(n), m) == Some(Ordering::Equal))
        }
    }
}

fn order(found: Found<'_>, bound: &Bound) -> Option<Ordering> {
    match (found, bound) {
        (Found::Json(Value::Number(n)), Bound::Num(b)) => num_cmp(n, b),
        (Found::Int(n), Bound::Num(b)) => num_cmp(&Number::from(n), b),
        (Found::Json(Value::String(s)), Bound::Str(b)) => Some(s.as_str().cmp(b.as_str())),
        (Found::Str(s), Bound::Str(b)) => Some(s.cmp(b.as_str())),
        _ => None,
    }
}

/// JSON equality with numbers compared by value, whatever their representation.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// Orders two JSON numbers by value: exactly between integers, as `f64` otherwise.
pub fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    // One is an integer above i64::MAX, the other a negative integer.
    match (a.as_i64(), b.as_u64(), a.as_u64(), b.as_i64()) {
        (Some(_), Some(_), None, None) => return Some(Ordering::Less),
        (None, None, Some(_), Some(_)) => return Some(Ordering::Greater),
        _ => {}
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

#[cfg(test)]
mod tests;
