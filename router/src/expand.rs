//! Rule matching and job expansion: pure functions, no I/O.

use std::cell::OnceCell;

use herald_shared::filter::parse_payload;
use herald_shared::model::{Event, JobGroup, JobItem, Rule};
use herald_shared::store::WorkspaceConfig;
use serde_json::Value;

/// Whether an enabled rule's event pattern and resource match the event (its filter aside:
/// see [`filter_passes`]).
pub fn rule_matches(rule: &Rule, event: &Event) -> bool {
    rule.enabled
        && event_matches(&rule.event, &event.event)
        && resource_matches(&rule.resource, &event.resource)
}

/// Whether the event passes the rule's filter (a rule without one takes every event). The
/// payload is parsed into `payload` the first time a filter looks into it, so an event is
/// parsed at most once however many rules filter it, and never when no filter needs it.
pub fn filter_passes(rule: &Rule, event: &Event, payload: &OnceCell<Option<Value>>) -> bool {
    let Some(filter) = &rule.filter else {
        return true;
    };
    let parsed = if filter.needs_payload() {
        payload.get_or_init(|| parse_payload(event)).as_ref()
    } else {
        None
    };
    filter.matches(event, parsed)
}

/// `*` matches everything; `order.*` matches `order.completed` and `order.item.added` (not
/// `order` itself); anything else matches exactly.
pub fn event_matches(pattern: &str, event: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => {
            event.len() > prefix.len() && event.starts_with(prefix)
        }
        _ => pattern == event,
    }
}

fn resource_matches(pattern: &str, resource: &str) -> bool {
    pattern == "*" || pattern == resource
}

/// The connections an event goes to: those of matching rules (their filters passed) that exist
/// and are enabled, each once however many rules point at it, in a stable order.
pub fn connections_for(config: &WorkspaceConfig, event: &Event) -> Vec<String> {
    route(config, event).0
}

/// The disabled connections an event's matching rules (their filters passed) point at: it is
/// recorded as skipped for each (nothing is queued for them), in a stable order.
pub fn disabled_for(config: &WorkspaceConfig, event: &Event) -> Vec<String> {
    route(config, event).1
}

/// Both at once, in one walk of the rules and at most one parse of the payload: the enabled
/// connections the event goes to and the disabled ones it is skipped for.
pub fn route(config: &WorkspaceConfig, event: &Event) -> (Vec<String>, Vec<String>) {
    let payload = OnceCell::new();
    let (mut send, mut skip) = (Vec::new(), Vec::new());
    for rule in config.rules.iter().filter(|r| rule_matches(r, event)) {
        let Some(conn) = config.connections.get(&rule.connection_id) else {
            continue;
        };
        if filter_passes(rule, event, &payload) {
            let to = if conn.enabled { &mut send } else { &mut skip };
            to.push(rule.connection_id.clone());
        }
    }
    for ids in [&mut send, &mut skip] {
        ids.sort();
        ids.dedup();
    }
    (send, skip)
}

/// Packs groups into broker messages of at most `max_jobs` jobs each. A group bigger than that
/// is split, so one message never carries an unbounded amount of work. Each group's event moves
/// into the message that takes its last jobs; only the earlier parts of a split group carry a
/// copy of it.
pub fn pack(groups: Vec<JobGroup>, max_jobs: usize) -> Vec<Vec<JobGroup>> {
    let max_jobs = max_jobs.max(1);
    let mut messages = Vec::new();
    let mut current: Vec<JobGroup> = Vec::new();
    let mut count = 0;
    for group in groups {
        let JobGroup {
            workspace_id,
            event,
            mut jobs,
        } = group;
        if jobs.is_empty() {
            continue;
        }
        loop {
            if count == max_jobs {
                messages.push(std::mem::take(&mut current));
                count = 0;
            }
            let take = max_jobs - count;
            if jobs.len() <= take {
                count += jobs.len();
                current.push(JobGroup {
                    workspace_id,
                    event,
                    jobs,
                });
                break;
            }
            let rest = jobs.split_off(take);
            count += take;
            current.push(JobGroup {
                workspace_id: workspace_id.clone(),
                event: event.clone(),
                jobs,
            });
            jobs = rest;
        }
    }
    if !current.is_empty() {
        messages.push(current);
    }
    messages
}

/// One group per event with a job per connection; the event moves in, it is not copied.
pub fn group(workspace_id: &str, event: Event, connection_ids: Vec<String>) -> JobGroup {
    JobGroup {
        workspace_id: workspace_id.to_string(),
        event,
        jobs: connection_ids.into_iter().map(JobItem::new).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn event(kind: &str, resource: &str) -> Event {
        Event {
            uuid: "evt_1".into(),
            event: kind.into(),
            resource: resource.into(),
            resource_id: "r1".into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
            time_created: 1,
        }
    }

    fn rule(id: &str, pattern: &str, resource: &str, conn: &str) -> Rule {
        Rule {
            id: id.into(),
            workspace_id: "ws".into(),
            event: pattern.into(),
            resource: resource.into(),
            connection_id: conn.into(),
            action: "send_webhook".into(),
            enabled: true,
            filter: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn config(rules: Vec<Rule>, conns: &[(&str, bool)]) -> WorkspaceConfig {
        let connections = conns
            .iter()
            .map(|(id, enabled)| {
                let c = herald_shared::model::Connection {
                    name: "n".into(),
                    timeout_ms: 1000,
                    enabled: *enabled,
                    ..herald_shared::model::Connection::new(
                        "ws",
                        id,
                        "https://example.com",
                        "whsec_x".into(),
                        0,
                    )
                };
                (id.to_string(), Arc::new(c))
            })
            .collect::<HashMap<_, _>>();
        WorkspaceConfig {
            exists: true,
            connections,
            rules,
            ordered: false,
        }
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_all() {
        assert!(event_matches("order.completed", "order.completed"));
        assert!(!event_matches("order.completed", "order.created"));
        assert!(event_matches("order.*", "order.completed"));
        assert!(event_matches("order.*", "order.item.added"));
        assert!(!event_matches("order.*", "order"));
        assert!(!event_matches("order.*", "orders.completed"));
        assert!(event_matches("*", "anything.at.all"));
    }

    #[test]
    fn one_event_fans_out_to_each_matching_connection_once() {
        let c = config(
            vec![
                rule("r1", "order.*", "order", "con_a"),
                rule("r2", "*", "*", "con_b"),
                rule("r3", "order.completed", "order", "con_a"),
                rule("r4", "order.completed", "invoice", "con_c"),
            ],
            &[("con_a", true), ("con_b", true), ("con_c", true)],
        );
        assert_eq!(
            connections_for(&c, &event("order.completed", "order")),
            vec!["con_a", "con_b"]
        );
        assert_eq!(
            connections_for(&c, &event("user.created", "user")),
            vec!["con_b"]
        );
    }

    #[test]
    fn disabled_rules_and_connections_and_dangling_rules_match_nothing() {
        let mut off = rule("r1", "*", "*", "con_a");
        off.enabled = false;
        let c = config(
            vec![
                off,
                rule("r2", "*", "*", "con_off"),
                rule("r3", "*", "*", "con_gone"),
            ],
            &[("con_a", true), ("con_off", false)],
        );
        assert!(connections_for(&c, &event("a", "b")).is_empty());
    }

    #[test]
    fn filters_narrow_a_rule_and_rejected_events_match_nothing() {
        let mut paid = rule("r1", "order.*", "order", "con_paid");
        paid.filter = Some(
            herald_shared::filter::Filter::compile(serde_json::json!({
                "payload.plan": {"$in": ["pro", "team"]}, "resource_id": {"$ne": "r_skip"}
            }))
            .expect("valid filter"),
        );
        let c = config(
            vec![paid, rule("r2", "user.*", "*", "con_users")],
            &[("con_paid", true), ("con_users", true)],
        );
        let with = |payload: &str, resource_id: &str| {
            let mut e = event("order.completed", "order");
            e.payload = serde_json::value::RawValue::from_string(payload.into()).expect("json");
            e.resource_id = resource_id.into();
            e
        };
        assert_eq!(
            connections_for(&c, &with(r#"{"plan":"pro"}"#, "r1")),
            vec!["con_paid"]
        );
        assert!(connections_for(&c, &with(r#"{"plan":"free"}"#, "r1")).is_empty());
        assert!(connections_for(&c, &with(r#"{"plan":"team"}"#, "r_skip")).is_empty());
        assert!(connections_for(&c, &with("[1]", "r1")).is_empty());
    }

    #[test]
    fn a_disabled_connection_skips_only_the_events_its_filter_takes() {
        let mut paid = rule("r1", "order.*", "order", "con_paid");
        paid.filter = Some(
            herald_shared::filter::Filter::compile(serde_json::json!({"payload.plan": "pro"}))
                .expect("valid filter"),
        );
        let c = config(vec![paid], &[("con_paid", false)]);
        let with = |payload: &str| {
            let mut e = event("order.completed", "order");
            e.payload = serde_json::value::RawValue::from_string(payload.into()).expect("json");
            e
        };
        assert_eq!(
            disabled_for(&c, &with(r#"{"plan":"pro"}"#)),
            vec!["con_paid"]
        );
        assert!(disabled_for(&c, &with(r#"{"plan":"free"}"#)).is_empty());
        assert!(connections_for(&c, &with(r#"{"plan":"pro"}"#)).is_empty());
    }

    #[test]
    fn packing_bounds_jobs_per_message_and_keeps_every_job() {
        let e = event("a", "b");
        let ids: Vec<String> = (0..7).map(|i| format!("con_{i}")).collect();
        let groups = vec![
            group("ws", e.clone(), ids.clone()),
            group("ws", e.clone(), ids[..2].to_vec()),
            group("ws", e, Vec::new()),
        ];
        let messages = pack(groups, 3);
        let sizes: Vec<usize> = messages
            .iter()
            .map(|m| m.iter().map(|g| g.jobs.len()).sum())
            .collect();
        assert_eq!(sizes, vec![3, 3, 3]);
        let connections: Vec<&str> = messages
            .iter()
            .flatten()
            .flat_map(|g| g.jobs.iter().map(|j| j.connection_id.as_str()))
            .collect();
        let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        expected.extend(["con_0", "con_1"]);
        assert_eq!(connections, expected, "every job once, in order");
        assert!(messages.iter().flatten().all(|g| !g.jobs.is_empty()));
        assert_eq!(pack(Vec::new(), 3).len(), 0);
    }
}
