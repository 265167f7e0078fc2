//! Envelope (de)serialisation on the hot path: parsing what a producer sends (one event, and a
//! bulk of 500 as intake reads it), the body each receiver gets, and the jobs message between
//! router and deliverer.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_shared::model::{Envelope, Event, JobGroup, JobItem};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::hint::black_box;
use std::time::Duration;

fn envelope_json(i: usize) -> String {
    let note = "x".repeat(180);
    format!(
        r#"{{"event":"order.completed","resource":"order","resource_id":"ord_{i}","payload":{{"order_id":"ord_{i}","total_cents":12900,"note":"{note}"}}}}"#
    )
}

fn parse_one(json: &[u8], i: usize) -> Event {
    let env: Envelope = serde_json::from_slice(json).expect("envelope");
    env.into_event(|| format!("evt_{i:022}"), 1_774_137_600_000)
        .expect("valid")
}

/// The bulk body as intake reads it: the list first, then each event on its own, so one bad
/// event is answered with its own error.
#[derive(Deserialize)]
struct Bulk {
    events: Vec<Box<RawValue>>,
}

fn envelopes(c: &mut Criterion) {
    let one = envelope_json(0);
    let bulk = format!(
        r#"{{"events":[{}]}}"#,
        (0..500).map(envelope_json).collect::<Vec<_>>().join(",")
    );
    let event = parse_one(one.as_bytes(), 0);
    let groups: Vec<JobGroup> = (0..100)
        .map(|i| JobGroup {
            workspace_id: "wrk_2mFv0sQ8kX1cRt7LwZp4Yb".into(),
            event: parse_one(envelope_json(i).as_bytes(), i),
            jobs: vec![JobItem::new("con_2mFv0sQ8kX1cRt7LwZp4Yb")],
        })
        .collect();
    let jobs_message = serde_json::to_vec(&groups).expect("json");

    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse and validate one intake envelope", |b| {
        b.iter(|| parse_one(black_box(one.as_bytes()), 0))
    });
    g.bench_function(format!("receiver body ({} B)", event.body(0).len()), |b| {
        b.iter(|| black_box(&event).body(1_774_137_600_500))
    });
    g.throughput(Throughput::Elements(500));
    g.bench_function("parse and validate a bulk of 500", |b| {
        b.iter(|| {
            let bulk: Bulk = serde_json::from_str(black_box(&bulk)).expect("bulk");
            bulk.events
                .iter()
                .enumerate()
                .map(|(i, raw)| parse_one(raw.get().as_bytes(), i))
                .collect::<Vec<Event>>()
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function(
        format!("serialise a jobs message of 100 ({} B)", jobs_message.len()),
        |b| b.iter(|| serde_json::to_vec(black_box(&groups)).expect("json")),
    );
    g.bench_function("parse a jobs message of 100", |b| {
        b.iter(|| serde_json::from_slice::<Vec<JobGroup>>(black_box(&jobs_message)).expect("jobs"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = envelopes
}
criterion_main!(benches);
