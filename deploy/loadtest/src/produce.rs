//! The sending end: producers that post events to intake and note, per accepted event, the
//! moment its `202` arrived (on the run's clock). Request bodies are built once and reused, so
//! the producers cost little CPU next to the services they measure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{Mutex, Semaphore};

/// Who sends, where, with which key.
#[derive(Clone)]
pub struct Producer {
    http: reqwest::Client,
    api_url: String,
    key: String,
    clock: Instant,
}

/// What a group of producers achieved.
#[derive(Debug, Default)]
pub struct Sent {
    /// Accepted events: (uuid, microseconds on the run's clock when the 202 arrived).
    pub accepted: Vec<(String, u64)>,
    /// Requests answered 202.
    pub requests: u64,
    /// Requests that failed or were not answered 202.
    pub failed_requests: u64,
    /// Events intake refused inside an accepted bulk request.
    pub rejected_events: u64,
    /// Time from sending each request to its answer, microseconds.
    pub request_us: Vec<u64>,
    /// The first failure, to show.
    pub first_error: Option<String>,
}

impl Sent {
    fn merge(&mut self, other: Sent) {
        self.accepted.extend(other.accepted);
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        self.rejected_events += other.rejected_events;
        self.request_us.extend(other.request_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

#[derive(Deserialize)]
struct Item {
    uuid: Option<String>,
}

#[derive(Deserialize)]
struct BulkAnswer {
    results: Vec<Item>,
}

/// A request body: one envelope (`batch` = 0) or a bulk of `batch` envelopes, each with a payload
/// of about `payload_bytes` (the receiver's body is about 170 bytes more).
pub fn body(batch: usize, payload_bytes: usize) -> Bytes {
    let note = "x".repeat(payload_bytes.saturating_sub(60));
    let one = |i: usize| {
        format!(
            r#"{{"event":"load.tick","resource":"order","resource_id":"ord_{i}","payload":{{"order_id":"ord_{i}","total_cents":12900,"note":"{note}"}}}}"#
        )
    };
    if batch == 0 {
        return Bytes::from(one(0));
    }
    let events: Vec<String> = (0..batch).map(one).collect();
    Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(",")))
}

/// A bulk request of the ordered scenario: events `first..first + batch` of the run, event `g`
/// for key `g % keys` with number `g / keys` in that key (`{"key", "seq"}` in its payload).
pub fn ordered_body(first: u64, batch: u64, keys: u64, payload_bytes: usize) -> Bytes {
    let note = "x".repeat(payload_bytes.saturating_sub(40));
    let events: Vec<String> = (first..first + batch)
        .map(|g| {
            let (key, seq) = (g % keys.max(1), g / keys.max(1));
            format!(
                r#"{{"event":"load.tick","resource":"order","resource_id":"k{key}","payload":{{"key":"k{key}","seq":{seq},"note":"{note}"}}}}"#
            )
        })
        .collect();
    Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(",")))
}

impl Producer {
    /// A producer with its own connection pool.
    pub fn new(api_url: &str, key: &str, clock: Instant) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            api_url: api_url.to_string(),
            key: key.to_string(),
            clock,
        })
    }

    fn now_us(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    /// Sends one request (`bulk` to `/v1/events/bulk`, else `/v1/events`) and notes the result.
    pub async fn send(&self, bulk: bool, body: Bytes, sent: &mut Sent) {
        let path = if bulk {
            "/v1/events/bulk"
        } else {
            "/v1/events"
        };
        let start = self.now_us();
        let result = self
            .http
            .post(format!("{}{path}", self.api_url))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => return fail(sent, format!("{path}: {e}")),
        };
        let status = resp.status();
        let text = match resp.bytes().await {
            Ok(t) => t,
            Err(e) => return fail(sent, format!("{path}: {e}")),
        };
        let at = self.now_us();
        if status != 202 {
            return fail(
                sent,
                format!("{path}: {status}: {}", String::from_utf8_lossy(&text)),
            );
        }
        sent.requests += 1;
        sent.request_us.push(at - start);
        let items = if bulk {
            serde_json::from_slice::<BulkAnswer>(&text).map(|b| b.results)
        } else {
            serde_json::from_slice::<Item>(&text).map(|i| vec![i])
        };
        match items {
            Ok(items) => {
                for item in items {
                    match item.uuid {
                        Some(u) => sent.accepted.push((u, at)),
                        None => sent.rejected_events += 1,
                    }
                }
            }
            Err(e) => fail(sent, format!("{path}: unreadable answer: {e}")),
        }
    }
}

fn fail(sent: &mut Sent, error: String) {
    sent.failed_requests += 1;
    if sent.first_error.is_none() {
        sent.first_error = Some(error);
    }
}

/// `events` events in bulk requests of `--batch`, sent back to back by `--producers`.
pub async fn exactly(args: &crate::Args, producer: &Producer, events: u64) -> Sent {
    let batch = args.batch() as u64;
    closed_loop(
        producer,
        args.producers,
        true,
        body(batch as usize, args.payload_bytes),
        Instant::now() + Duration::from_secs(3600),
        Some(events.div_ceil(batch)),
    )
    .await
}

/// `workers` producers, each sending back to back until `until` (or until `max_requests`
/// requests were sent in all); a failed request is followed by a short pause.
pub async fn closed_loop(
    producer: &Producer,
    workers: usize,
    bulk: bool,
    body: Bytes,
    until: Instant,
    max_requests: Option<u64>,
) -> Sent {
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(
        max_requests.unwrap_or(u64::MAX),
    ));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let p = producer.clone();
            let body = body.clone();
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut sent = Sent::default();
                while Instant::now() < until {
                    let left = budget.fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |b| b.checked_sub(1),
                    );
                    if left.is_err() {
                        break;
                    }
                    let failed = sent.failed_requests;
                    p.send(bulk, body.clone(), &mut sent).await;
                    if sent.failed_requests > failed {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                sent
            })
        })
        .collect();
    let mut all = Sent::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    all
}

/// An open loop: a request every `period` until `until`, whatever the answers take, with at
/// most `max_in_flight` requests outstanding (a request that would exceed it is skipped and
/// counted as failed, so an overloaded intake shows instead of silently lowering the rate).
pub async fn open_loop(
    producer: &Producer,
    period: Duration,
    max_in_flight: usize,
    bulk: bool,
    body: Bytes,
    until: Instant,
) -> Sent {
    let all = Arc::new(Mutex::new(Sent::default()));
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    while Instant::now() < until {
        tick.tick().await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            fail(&mut *all.lock().await, "client limit reached".into());
            continue;
        };
        let p = producer.clone();
        let body = body.clone();
        let all = all.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            p.send(bulk, body, &mut sent).await;
            all.lock().await.merge(sent);
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut guard = all.lock().await;
    std::mem::take(&mut *guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_envelope_or_a_bulk_of_them() {
        let one: serde_json::Value = serde_json::from_slice(&body(0, 240)).expect("json");
        assert_eq!(one["event"], "load.tick");
        let payload = serde_json::to_string(&one["payload"]).expect("json");
        assert!((200..=280).contains(&payload.len()), "{}", payload.len());
        let bulk: serde_json::Value = serde_json::from_slice(&body(500, 240)).expect("json");
        assert_eq!(bulk["events"].as_array().map(Vec::len), Some(500));
    }
}
