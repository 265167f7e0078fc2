//! Compilation: a filter document checked against its limits and turned into clauses, with
//! every error naming the part at fault (`filter.payload.plan.$in`).

use serde_json::{Map, Value};

use super::{Bound, Clause, CmpOp, Cond, Path, Root, Step, MAX_FILTER_DEPTH, OPERATORS, ROOTS};
use crate::model::FieldError;

pub(super) fn compact_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, v) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Where the first object or array deeper than the limit is, if one is.
pub(super) fn too_deep(v: &Value, level: usize, at: &str) -> Option<String> {
    let children: Box<dyn Iterator<Item = (String, &Value)>> = match v {
        Value::Object(map) => Box::new(map.iter().map(|(k, v)| (format!("{at}.{k}"), v))),
        Value::Array(items) => Box::new(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{at}[{i}]"), v)),
        ),
        _ => return None,
    };
    if level > MAX_FILTER_DEPTH {
        return Some(at.to_string());
    }
    for (child_at, child) in children {
        if let Some(deep) = too_deep(child, level + 1, &child_at) {
            return Some(deep);
        }
    }
    None
}

pub(super) fn compile_object(
    object: &Map<String, Value>,
    at: &str,
    needs_payload: &mut bool,
) -> Result<Vec<Clause>, FieldError> {
    let mut clauses = Vec::with_capacity(object.len());
    for (key, value) in object {
        let here = format!("{at}.{key}");
        let clause = match key.as_str() {
            "$and" | "$or" => {
                let items = value
                    .as_array()
                    .filter(|items| !items.is_empty())
                    .ok_or_else(|| {
                        FieldError::new(&here, "must be a non-empty array of filter objects")
                    })?;
                let subs = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = format!("{here}[{i}]");
                        match item {
                            Value::Object(o) => compile_object(o, &at, needs_payload),
                            _ => Err(FieldError::new(at, "must be a filter object")),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Clause::And(subs)
                } else {
                    Clause::Or(subs)
                }
            }
            "$not" => match value {
                Value::Object(o) => Clause::Not(compile_object(o, &here, needs_payload)?),
                _ => return Err(FieldError::new(here, "must be a filter object")),
            },
            k if k.starts_with('$') => {
                return Err(FieldError::new(
                    here,
                    format!(
                        "unknown operator {k}: a filter's keys are $and, $or, $not or dotted \
                         envelope paths; operators ({}) go inside a path's value",
                        OPERATORS.join(" ")
                    ),
                ))
            }
            path => {
                let path = parse_path(path).map_err(|m| FieldError::new(&here, m))?;
                *needs_payload |= path.root == Root::Payload;
                Clause::Field {
                    path,
                    conditions: compile_conditions(value, &here)?,
                }
            }
        };
        clauses.push(clause);
    }
    Ok(clauses)
}

fn parse_path(path: &str) -> Result<Path, String> {
    let mut segments = path.split('.');
    let first = segments.next().unwrap_or_default();
    let root = match first {
        "uuid" => Root::Uuid,
        "event" => Root::Event,
        "resource" => Root::Resource,
        "resource_id" => Root::ResourceId,
        "time_created" => Root::TimeCreated,
        "payload" => Root::Payload,
        _ => {
            return Err(format!(
                "unknown path: a path starts at one of {} (e.g. payload.plan)",
                ROOTS.join(", ")
            ))
        }
    };
    let mut steps = Vec::new();
    for segment in segments {
        if segment.is_empty() {
            return Err("a path is dot-separated names, none of them empty".into());
        }
        if root != Root::Payload {
            return Err(format!("{first} has no fields below it; only payload does"));
        }
        let index = if segment.bytes().all(|b| b.is_ascii_digit()) {
            segment.parse().ok()
        } else {
            None
        };
        steps.push(Step {
            key: segment.to_string(),
            index,
        });
    }
    Ok(Path { root, steps })
}

fn compile_conditions(value: &Value, at: &str) -> Result<Vec<Cond>, FieldError> {
    let operators = match value {
        Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => map,
        literal => return Ok(vec![Cond::Eq(literal.clone())]),
    };
    let mut conditions = Vec::with_capacity(operators.len());
    for (op, operand) in operators {
        let here = format!("{at}.{op}");
        let cond = match op.as_str() {
            "$eq" => Cond::Eq(operand.clone()),
            "$ne" => Cond::Ne(operand.clone()),
            "$in" | "$nin" => {
                let Value::Array(items) = operand else {
                    return Err(FieldError::new(here, "must be an array of values"));
                };
                if op == "$in" {
                    Cond::In(items.clone())
                } else {
                    Cond::Nin(items.clone())
                }
            }
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let bound = match operand {
                    Value::Number(n) => Bound::Num(n.clone()),
                    Value::String(s) => Bound::Str(s.clone()),
                    _ => return Err(FieldError::new(here, "must be a number or a string")),
                };
                let cmp = match op.as_str() {
                    "$gt" => CmpOp::Gt,
                    "$gte" => CmpOp::Gte,
                    "$lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                Cond::Cmp(cmp, bound)
            }
            "$exists" => match operand {
                Value::Bool(b) => Cond::Exists(*b),
                _ => return Err(FieldError::new(here, "must be true or false")),
            },
            k if k.starts_with('$') => {
                let hint = if matches!(k, "$and" | "$or" | "$not") {
                    " ($and, $or and $not combine whole filters, at a filter's top level)"
                } else {
                    ""
                };
                return Err(FieldError::new(
                    here,
                    format!(
                        "unknown operator {k}: use one of {}{hint}",
                        OPERATORS.join(" ")
                    ),
                ));
            }
            _ => {
                return Err(FieldError::new(
                    at,
                    "mixes operators ($...) with plain keys: write a literal object without \
                     $ keys, or operators only",
                ))
            }
        };
        conditions.push(cond);
    }
    Ok(conditions)
}
