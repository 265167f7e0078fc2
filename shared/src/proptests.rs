//! Property tests of every parser that reads outside input: the event envelope, the settings
//! (file lines, durations, retry schedules, subnets, whole settings), sealed secrets, cursors
//! and the small validators. Arbitrary input must never panic; valid input must round-trip.
//!
//! The number of cases is proptest's default (256), which keeps CI fast; run longer locally
//! with e.g. `PROPTEST_CASES=200000 cargo test -p herald-shared proptests`. A failure is
//! written to `proptest-regressions/` and replayed first on every later run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Value};

use crate::config::source::parse_file;
use crate::config::{CommonSettings, DelivererSettings, IngestSettings, RouterSettings, Source};
use crate::duration::parse_duration;
use crate::model::envelope::check_payload_depth;
use crate::model::{check_event_type, check_name, Envelope};
use crate::netguard::{is_public, Subnet};
use crate::retry::{decide, ladder_path, Decision, RetrySchedule, MAX_DELAY};
use crate::secrets::SecretsKeys;

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid envelope as a producer would send it.
fn valid_envelope() -> impl Strategy<Value = Value> {
    (
        "[a-z][a-z0-9_]{0,9}(\\.[a-z0-9_-]{1,10}){0,3}",
        "[a-zA-Z0-9_.:-]{1,40}",
        "[^\\p{Cc}]{1,60}",
        json_value(),
        proptest::option::of("[a-zA-Z0-9_.:-]{1,64}"),
    )
        .prop_map(|(event, resource, resource_id, payload, uuid)| {
            let mut e = json!({"event": event, "resource": resource,
                               "resource_id": resource_id, "payload": payload});
            if let Some(u) = uuid {
                e["uuid"] = json!(u);
            }
            e
        })
}

/// Every setting a service reads.
const SETTINGS: &[&str] = &[
    "HERALD_AMQP_URL",
    "HERALD_REDIS_URL",
    "HERALD_REDIS_PREFIX",
    "HERALD_INGEST_ADDR",
    "HERALD_ROUTER_ADDR",
    "HERALD_DELIVERER_ADDR",
    "HERALD_ADMIN_TOKEN",
    "HERALD_ALLOW_HTTP",
    "HERALD_ALLOW_PRIVATE_DESTINATIONS",
    "HERALD_DESTINATION_ALLOWLIST",
    "HERALD_RETRY_SCHEDULE",
    "HERALD_LOG_FORMAT",
    "HERALD_MAX_EVENT_BYTES",
    "HERALD_MAX_BULK_BYTES",
    "HERALD_MAX_BULK_EVENTS",
    "HERALD_QUEUE_TYPE",
    "HERALD_RETENTION",
    "HERALD_SECRET_GRACE",
    "HERALD_CONFIG_REFRESH",
    "HERALD_ROUTER_PREFETCH",
    "HERALD_DELIVERER_PREFETCH",
    "HERALD_ROUTER_JOBS_PER_MESSAGE",
    "HERALD_ROUTER_INFLIGHT_BYTES",
    "HERALD_DELIVERER_CONCURRENCY",
    "HERALD_CONNECTION_CONCURRENCY",
    "HERALD_DRAIN_TIMEOUT",
    "HERALD_DEFAULT_TIMEOUT",
    "HERALD_SECRETS_KEY",
    "HERALD_SECRETS_KEYS_OLD",
    "HERALD_INTAKE_RATE_LIMIT_PER_S",
];

/// A value for a setting: often near the expected shape, sometimes anything.
fn setting_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,25}(ms|s|m|h|d)?",
        "([0-9]{1,6}[smhd]?,){0,60}[0-9]{0,6}[smhd]?",
        "(true|false|yes|no|on|off|maybe|1|0)",
        "[0-9a-f:.]{0,40}/[0-9]{0,4}(,[0-9.]{0,15}/[0-9]{0,3}){0,3}",
        "(amqp|amqps|redis|http)://[a-z0-9@:./%]{0,40}",
        "[A-Za-z0-9+/=]{0,60}(,[A-Za-z0-9+/=]{0,60}){0,2}",
        "[0-9.]{0,15}:[0-9]{0,6}",
    ]
}

proptest! {
    #[test]
    fn any_bytes_as_an_envelope_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(env) = serde_json::from_slice::<Envelope>(&bytes) {
            if let Ok(event) = env.into_event(|| "evt_x".into(), 1) {
                let body: Value = serde_json::from_slice(&event.body(2)).expect("a body is JSON");
                prop_assert_eq!(body["time_sent"].as_i64(), Some(2));
            }
        }
    }

    #[test]
    fn a_mutated_envelope_never_panics(
        env in valid_envelope(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = serde_json::to_vec(&env).expect("json");
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        if let Ok(env) = serde_json::from_slice::<Envelope>(&bytes) {
            let _ = env.into_event(|| "evt_x".into(), 1);
        }
    }

    #[test]
    fn a_valid_envelope_round_trips_into_the_body_a_receiver_gets(env in valid_envelope()) {
        let text = serde_json::to_string(&env).expect("json");
        let parsed: Envelope = serde_json::from_str(&text).expect("parses");
        let event = parsed.into_event(|| "evt_new".into(), 1_000).expect("valid");
        let body = String::from_utf8(event.body(2_000)).expect("utf8");
        let out: Value = serde_json::from_str(&body).expect("json");
        prop_assert_eq!(&out["event"], &env["event"]);
        prop_assert_eq!(&out["resource"], &env["resource"]);
        prop_assert_eq!(&out["resource_id"], &env["resource_id"]);
        let uuid = env.get("uuid").cloned().unwrap_or(json!("evt_new"));
        prop_assert_eq!(&out["uuid"], &uuid);
        prop_assert_eq!(out["time_created"].as_i64(), Some(1_000));
        let payload = serde_json::to_string(&env["payload"]).expect("json");
        prop_assert!(body.contains(&format!("\"payload\":{payload}")), "byte for byte");
    }

    #[test]
    fn the_depth_check_and_validators_never_panic(s in any::<String>()) {
        let _ = check_payload_depth(&s);
        let _ = check_event_type("event", &s);
        let _ = check_name("name", &s, 200);
        let _ = crate::model::connection::validate_url(&s, true);
        let _ = crate::model::connection::mask_header_value(&s, &s);
        let _ = crate::store::Cursor::decode(&s);
        let _ = crate::model::rule::validate_event_pattern(&s);
    }

    #[test]
    fn cursors_round_trip(score in any::<i64>(), member in ".{0,40}") {
        let c = crate::store::Cursor { score, member };
        prop_assert_eq!(crate::store::Cursor::decode(&c.encode()), Some(c));
    }

    #[test]
    fn any_duration_text_never_panics(s in any::<String>()) {
        let _ = parse_duration(&s);
        let _ = RetrySchedule::parse(&s);
    }

    #[test]
    fn durations_round_trip(n in 0u64..(1 << 40), unit in prop::sample::select(vec!["ms", "s", "m", "h", "d", ""])) {
        let per = match unit { "ms" => 1, "m" => 60_000, "h" => 3_600_000, "d" => 86_400_000, _ => 1_000 };
        let expected = n.checked_mul(per).map(Duration::from_millis);
        prop_assert_eq!(parse_duration(&format!("{n}{unit}")), expected);
    }

    #[test]
    fn retry_schedules_round_trip_and_decisions_stay_in_range(
        secs in prop::collection::vec(0u64..=MAX_DELAY.as_secs(), 1..50),
        attempt in any::<u32>(),
        retry_after in proptest::option::of(any::<u64>()),
        seed in any::<u64>(),
    ) {
        let text = secs.iter().map(|s| format!("{s}s")).collect::<Vec<_>>().join(",");
        let schedule = RetrySchedule::parse(&text).expect("valid");
        prop_assert_eq!(schedule.retries(), secs.len());
        let mut rng = StdRng::seed_from_u64(seed);
        match decide(&schedule, attempt, retry_after.map(Duration::from_secs), &mut rng) {
            Decision::RetryAfter(d) => {
                prop_assert!(d <= MAX_DELAY);
                prop_assert_eq!(ladder_path(d).iter().map(|b| 1u64 << b).sum::<u64>(), d.as_secs());
            }
            Decision::Exhausted => prop_assert!(attempt == 0 || attempt as usize > secs.len()),
        }
    }

    #[test]
    fn subnets_and_address_classes_never_panic(s in any::<String>(), v4 in any::<u32>(), v6 in any::<u128>()) {
        let a = IpAddr::V4(Ipv4Addr::from(v4));
        let b = IpAddr::V6(Ipv6Addr::from(v6));
        if let Ok(net) = s.parse::<Subnet>() {
            let _ = (net.contains(a), net.contains(b));
        }
        let mapped = IpAddr::V6(Ipv4Addr::from(v4).to_ipv6_mapped());
        prop_assert_eq!(is_public(a), is_public(mapped), "a mapped address is its IPv4 address");
        let _ = is_public(b);
    }

    #[test]
    fn subnets_contain_their_own_addresses(v4 in any::<u32>(), prefix in 0u8..=32) {
        let ip = Ipv4Addr::from(v4);
        let net: Subnet = format!("{ip}/{prefix}").parse().expect("valid");
        prop_assert!(net.contains(IpAddr::V4(ip)));
        prop_assert!(net.contains(IpAddr::V6(ip.to_ipv6_mapped())));
    }

    #[test]
    fn any_settings_file_never_panics(text in any::<String>()) {
        let _ = parse_file(&text);
    }

    #[test]
    fn settings_file_lines_round_trip(
        pairs in prop::collection::vec(("HERALD_[A-Z_]{1,20}", "[^\\s\"#=][^\\n\\r\"]{0,30}[^\\s\"]|[^\\s\"#=]"), 0..10),
    ) {
        let text: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n# a comment\n\n")).collect();
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.trim().to_string()))
            .collect();
        prop_assert_eq!(parse_file(&text), expected);
    }

    #[test]
    fn any_settings_never_panic(
        values in prop::collection::vec((prop::sample::select(SETTINGS.to_vec()), setting_value()), 0..12),
    ) {
        let src = Source::from_pairs(values);
        let _ = CommonSettings::from_source(&src);
        let _ = IngestSettings::from_source(&src);
        let _ = RouterSettings::from_source(&src);
        let _ = DelivererSettings::from_source(&src);
    }

    #[test]
    fn any_stored_value_opens_or_fails_cleanly(s in any::<String>(), tail in "[A-Za-z0-9+/=]{0,80}") {
        let keys = SecretsKeys::new(&[9; 32], &[]);
        let _ = keys.open(&s, "con_1");
        let _ = keys.open(&format!("enc:v1:{}:{tail}", keys.current_id()), "con_1");
    }

    #[test]
    fn sealed_values_round_trip(plain in any::<String>(), context in ".{0,30}") {
        let keys = SecretsKeys::new(&[9; 32], &[]);
        let sealed = keys.seal(&plain, &context);
        prop_assert_eq!(keys.open(&sealed, &context), Ok(plain));
    }

    #[test]
    fn rate_arithmetic_never_panics(
        tat in 0i64..(1 << 53), now in 0i64..(1 << 53), per_second in any::<u32>(), cost in any::<u32>(),
    ) {
        let (_, next) = crate::ratelimit::gcra(tat, now, per_second, cost);
        prop_assert!(next >= tat.min(now));
    }
}
