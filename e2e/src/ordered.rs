//! Checks of ordered delivery: what a receiver got, per key, against the order the events were
//! accepted in. Events carry `{"key", "seq"}` in their payload.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::receiver::Received;

/// An event's payload for key `key`, number `seq`.
pub fn payload(key: &str, seq: u64) -> Value {
    json!({"key": key, "seq": seq})
}

/// The key and number of a request's event.
pub fn key_seq(r: &Received) -> (String, u64) {
    let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
    let payload = &body["payload"];
    (
        payload["key"].as_str().expect("a key").to_string(),
        payload["seq"].as_u64().expect("a seq"),
    )
}

/// The requests in arrival order as (key, seq), a head sent again right after itself (a
/// retry, a redelivery) folded into one.
pub fn arrivals(received: &[Received]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for r in received {
        let ks = key_seq(r);
        if out.last() != Some(&ks) {
            out.push(ks);
        }
    }
    out
}

/// Per key, the numbers in arrival order, a head sent again right after itself folded.
pub fn per_key(received: &[Received]) -> BTreeMap<String, Vec<u64>> {
    let mut keys: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in received {
        let (key, seq) = key_seq(r);
        let seqs = keys.entry(key).or_default();
        if seqs.last() != Some(&seq) {
            seqs.push(seq);
        }
    }
    keys
}

/// Panics unless every key of `expected` got exactly the numbers `0..n` in order: none
/// missing, none after a later one (a head may repeat right after itself, nothing else may).
pub fn assert_each_key_in_order(received: &[Received], expected: &BTreeMap<String, u64>) {
    let got = per_key(received);
    for (key, n) in expected {
        let want: Vec<u64> = (0..*n).collect();
        assert_eq!(
            got.get(key).cloned().unwrap_or_default(),
            want,
            "key {key}: numbers in arrival order"
        );
    }
}
