//! Routing one event: matching it against a workspace's 50 rules, and packing the jobs of a bulk
//! of 500 events into broker messages; and payload filters: one filter on its own (filters per
//! second), with the payload's parse, and 50 filtered rules.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_router::expand::{connections_for, group, pack};
use herald_shared::filter::{parse_payload, Filter};
use herald_shared::model::{Connection, Event, Rule};
use herald_shared::store::WorkspaceConfig;
use serde_json::value::RawValue;

fn event(kind: &str) -> Event {
    Event {
        uuid: "evt_2mFv0sQ8kX1cRt7LwZp4Yb".into(),
        event: kind.into(),
        resource: "order".into(),
        resource_id: "ord_77".into(),
        payload: RawValue::from_string(r#"{"order_id":"ord_77","total_cents":12900}"#.into())
            .expect("json"),
        time_created: 1_774_137_600_000,
    }
}

fn connection(id: &str) -> Connection {
    Connection {
        timeout_ms: 10_000,
        ..Connection::new(
            "wrk_1",
            id,
            "https://example.com/hook",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            0,
        )
    }
}

/// 50 rules over 50 connections: exact types of ten resources, prefix wildcards and a few
/// catch-alls; `order.completed` matches four of them.
fn workspace() -> WorkspaceConfig {
    let resources = [
        "order", "invoice", "user", "payment", "refund", "cart", "plan", "seat", "team", "file",
    ];
    let rules: Vec<Rule> = (0..50)
        .map(|i| {
            let resource = resources[i % resources.len()];
            let pattern = match i % 5 {
                0 => format!("{resource}.*"),
                1 => format!("{resource}.created"),
                2 => format!("{resource}.updated"),
                3 => format!("{resource}.completed"),
                _ if i % 25 == 4 => "*".to_string(),
                _ => format!("{resource}.deleted"),
            };
            let resource = if pattern == "*" { "*" } else { resource };
            Rule {
                id: format!("rul_{i}"),
                workspace_id: "wrk_1".into(),
                event: pattern,
                resource: resource.into(),
                connection_id: format!("con_{i:02}"),
                action: "send_webhook".into(),
                enabled: true,
                filter: None,
                created_at: 0,
                updated_at: 0,
            }
        })
        .collect();
    let connections: HashMap<String, Arc<Connection>> = (0..50)
        .map(|i| {
            let id = format!("con_{i:02}");
            (id.clone(), Arc::new(connection(&id)))
        })
        .collect();
    WorkspaceConfig {
        exists: true,
        connections,
        rules,
        ordered: false,
    }
}

fn expand(c: &mut Criterion) {
    let config = workspace();
    let hit = event("order.completed");
    let miss = event("ledger.closed");
    let matched = connections_for(&config, &hit);
    let mut g = c.benchmark_group("expand");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        format!("match one event against 50 rules ({} match)", matched.len()),
        |b| b.iter(|| connections_for(black_box(&config), black_box(&hit))),
    );
    g.bench_function("match one event against 50 rules (none match)", |b| {
        b.iter(|| connections_for(black_box(&config), black_box(&miss)))
    });
    g.throughput(Throughput::Elements(500));
    g.bench_function("group and pack 500 events x 1 job, 100 per message", |b| {
        let ids = vec!["con_00".to_string()];
        b.iter(|| {
            let groups = (0..500)
                .map(|_| group("wrk_1", hit.clone(), ids.clone()))
                .collect();
            pack(black_box(groups), 100)
        })
    });
    g.bench_function(
        format!(
            "group and pack 500 events x {} jobs, 100 per message",
            matched.len()
        ),
        |b| {
            b.iter(|| {
                let groups = (0..500)
                    .map(|_| group("wrk_1", hit.clone(), matched.clone()))
                    .collect();
                pack(black_box(groups), 100)
            })
        },
    );
    g.finish();
}

/// A filter of the kind a SaaS team writes: the contract's example, an `$or` over an array
/// element and the resource id, and a `$not`.
fn typical_filter() -> Filter {
    Filter::compile(serde_json::json!({
        "payload.plan": {"$in": ["pro", "team", "enterprise"]},
        "payload.total_cents": {"$gte": 1000},
        "$or": [{"payload.items.0.sku": "SKU-1"}, {"resource_id": {"$ne": "ord_0"}}],
        "$not": {"payload.country": {"$in": ["XX", "YY"]}}
    }))
    .expect("valid filter")
}

fn filters(c: &mut Criterion) {
    let filter = typical_filter();
    let mut passing = event("order.completed");
    passing.payload = RawValue::from_string(
        r#"{"order_id":"ord_77","plan":"team","total_cents":12900,"country":"FR","items":[{"sku":"SKU-1","qty":2},{"sku":"SKU-9","qty":1}],"customer":{"id":"cus_1","email":"a@example.com"}}"#
            .into(),
    )
    .expect("json");
    let parsed = parse_payload(&passing);
    assert!(filter.matches(&passing, parsed.as_ref()));
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("evaluate one filter (7 conditions, payload parsed)", |b| {
        b.iter(|| black_box(&filter).matches(black_box(&passing), black_box(parsed.as_ref())))
    });
    g.bench_function("parse a 200-byte payload and evaluate one filter", |b| {
        b.iter(|| {
            let parsed = parse_payload(black_box(&passing));
            black_box(&filter).matches(&passing, parsed.as_ref())
        })
    });
    let mut config = workspace();
    for rule in &mut config.rules {
        rule.filter = Some(typical_filter());
    }
    let matched = connections_for(&config, &passing);
    g.bench_function(
        format!(
            "match one event against 50 filtered rules ({} pass)",
            matched.len()
        ),
        |b| b.iter(|| connections_for(black_box(&config), black_box(&passing))),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = expand, filters
}
criterion_main!(benches);
