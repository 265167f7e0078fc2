//! What one event costs in Redis, through the store's own writes: N events routed to K
//! connections as the router records them (claim, record, mark expanded), then each delivery
//! failing F times before a 2xx as the deliverer records it, attempt by attempt. Prints the
//! growth of Redis `used_memory` per event. Run it against a Redis of its own, so other
//! clients' keys do not count:
//!
//! ```sh
//! redis-server --port 6390 --save '' &
//! cargo run --release -p herald-shared --example redis_footprint -- \
//!     redis://127.0.0.1:6390 20000 1 0 240     # url, events, connections, failures, payload bytes
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use herald_shared::config::{CommonSettings, Source};
use herald_shared::ids::{new_event_id, new_id, random_base62};
use herald_shared::model::{Attempt, Delivery, DeliveryStatus, Event};
use herald_shared::store::dead_letters::OutcomeRow;
use herald_shared::store::history::Routed;
use herald_shared::store::Store;
use tokio_util::sync::CancellationToken;

fn used_memory(c: &mut redis::Connection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query(c)?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO"))
}

/// The headers the history shows for an attempt (as the deliverer masks them).
fn shown_headers(uuid: &str, at: i64) -> BTreeMap<String, String> {
    [
        ("content-type", "application/json".to_string()),
        ("user-agent", herald_shared::USER_AGENT.to_string()),
        ("webhook-id", uuid.to_string()),
        ("webhook-timestamp", (at / 1000).to_string()),
        ("webhook-signature", "v1,********".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    let url = arg(0, "redis://127.0.0.1:6390");
    let events: usize = arg(1, "20000").parse()?;
    let connections: usize = arg(2, "1").parse()?;
    let failures: usize = arg(3, "0").parse()?;
    let payload_bytes: usize = arg(4, "240").parse()?;
    // A prefix as long as herald-load's, so the figures compare with its runs.
    let prefix = format!("herald-load-{}", random_base62(14));
    let settings = CommonSettings::from_source(&Source::from_pairs([
        ("HERALD_REDIS_URL", url.clone()),
        ("HERALD_REDIS_PREFIX", prefix.clone()),
    ]))?;
    let store = Store::connect(&settings, &CancellationToken::new()).await?;
    let mut c = redis::Client::open(url.as_str())?.get_connection()?;
    let ws = new_id("ws");
    let cids: Vec<String> = (0..connections).map(|_| new_id("con")).collect();
    let hook = "http://127.0.0.1:41234/hook";
    let before = used_memory(&mut c)?;

    let note = "x".repeat(payload_bytes.saturating_sub(60));
    let now = herald_shared::now_ms();
    for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Event> = chunk
            .iter()
            .map(|i| Event {
                uuid: new_event_id(),
                event: "load.tick".into(),
                resource: "order".into(),
                resource_id: format!("ord_{}", i % 500),
                payload: serde_json::value::RawValue::from_string(format!(
                    r#"{{"order_id":"ord_{}","total_cents":12900,"note":"{note}"}}"#,
                    i % 500
                ))
                .expect("json"),
                time_created: now,
            })
            .collect();
        let uuids: Vec<&str> = batch.iter().map(|e| e.uuid.as_str()).collect();
        let routed: Vec<Routed> = batch
            .iter()
            .map(|event| Routed {
                workspace_id: &ws,
                event,
                connection_ids: cids.clone(),
                skipped: Vec::new(),
            })
            .collect();
        store
            .claim_for_routing(&ws, &uuids, Duration::from_secs(20))
            .await?;
        store.record_routed(&routed).await?;
        store.mark_expanded(&ws, &uuids).await?;
        // Each attempt is written when it is made, as the deliverer does.
        let mut attempts: Vec<Vec<Attempt>> = vec![Vec::new(); batch.len() * connections];
        for round in 0..=failures {
            let ok = round == failures;
            let deliveries: Vec<Delivery> = batch
                .iter()
                .flat_map(|e| cids.iter().map(move |cid| (e, cid)))
                .zip(attempts.iter_mut())
                .map(|((e, cid), kept)| {
                    let at = now + 5 + 1000 * round as i64;
                    kept.push(Attempt {
                        at,
                        status_code: Some(if ok { 200 } else { 503 }),
                        latency_ms: 2,
                        error: (!ok).then(|| "status 503".to_string()),
                        response_excerpt: (!ok).then(|| "Service Unavailable".to_string()),
                        url: hook.into(),
                        request_headers: shown_headers(&e.uuid, at),
                    });
                    Delivery {
                        connection_id: cid.clone(),
                        status: if ok {
                            DeliveryStatus::Delivered
                        } else {
                            DeliveryStatus::Retrying
                        },
                        attempts: kept.clone(),
                        next_attempt_at: (!ok).then_some(at + 5_000),
                        dead_letter_id: None,
                        updated_at: at + 4,
                    }
                })
                .collect();
            let rows: Vec<OutcomeRow> = deliveries
                .iter()
                .enumerate()
                .map(|(i, delivery)| OutcomeRow {
                    workspace_id: &ws,
                    uuid: &batch[i / connections].uuid,
                    time_created: now,
                    delivery,
                })
                .collect();
            store.record_outcomes(&rows, &[]).await?;
        }
    }

    let after = used_memory(&mut c)?;
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c)?;
    println!(
        "{events} events, {connections} connection(s), {failures} failed attempt(s) before a 2xx, \
         ~{payload_bytes} B payload: used_memory +{} B = {:.0} B per event ({keys} keys in the db)",
        after - before,
        (after - before) as f64 / events as f64
    );
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)?;
        if !batch.is_empty() {
            redis::cmd("UNLINK").arg(batch).query::<()>(&mut c)?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(())
}
