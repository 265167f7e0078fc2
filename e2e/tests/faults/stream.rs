//! A producer that keeps sending while a test breaks things, and the count of what arrived.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_e2e::{eventually, Receiver};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// What the producer saw.
#[derive(Default, Debug)]
pub struct Sent {
    /// Uuids intake answered 202 for.
    pub accepted: Vec<String>,
    /// Requests answered 503 (broker or Redis unavailable).
    pub unavailable: usize,
    /// Requests that got no answer (the ingest process was down) or another status.
    pub failed: usize,
    /// When each request was sent and how long its answer took, in order.
    pub answers: Vec<(Instant, Duration)>,
}

impl Sent {
    /// The longest any request sent in `from..until` waited for its answer.
    pub fn slowest_between(&self, from: Instant, until: Instant) -> Duration {
        self.answers
            .iter()
            .filter(|(sent, _)| (from..until).contains(sent))
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    }
}

/// Sends `batch` events per request (bulk when > 1) every `pause` until stopped.
pub struct Producer {
    sent: Arc<Mutex<Sent>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    pub fn start(api: &str, key: &str, batch: usize, pause: Duration) -> Self {
        let sent = Arc::new(Mutex::new(Sent::default()));
        let stop = CancellationToken::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let (api, key) = (api.to_string(), key.to_string());
        let task = {
            let (sent, stop) = (sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    let events: Vec<Value> = (0..batch)
                        .map(|i| {
                            json!({"event": "order.created", "resource": "order",
                                   "resource_id": format!("ord_{n}_{i}"), "payload": {"n": n, "i": i}})
                        })
                        .collect();
                    n += 1;
                    let (path, body) = if batch == 1 {
                        ("/v1/events", events[0].clone())
                    } else {
                        ("/v1/events/bulk", json!({ "events": events }))
                    };
                    let sent_at = Instant::now();
                    let answer = http
                        .post(format!("{api}{path}"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await;
                    let answer = match answer {
                        Ok(r) => Some((r.status().as_u16(), r.json::<Value>().await.ok())),
                        Err(_) => None,
                    };
                    {
                        let mut s = sent.lock().expect("lock");
                        s.answers.push((sent_at, sent_at.elapsed()));
                        match answer {
                            Some((202, Some(body))) => {
                                if let Some(uuid) = body["uuid"].as_str() {
                                    s.accepted.push(uuid.to_string());
                                }
                                for r in body["results"].as_array().into_iter().flatten() {
                                    if let Some(uuid) = r["uuid"].as_str() {
                                        s.accepted.push(uuid.to_string());
                                    }
                                }
                            }
                            Some((503, _)) => s.unavailable += 1,
                            _ => s.failed += 1,
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        };
        Self { sent, stop, task }
    }

    /// How many events were accepted so far.
    pub fn accepted(&self) -> usize {
        self.sent.lock().expect("lock").accepted.len()
    }

    pub async fn stop(self) -> Sent {
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *self.sent.lock().expect("lock"))
    }
}

/// Deliveries counted at the receiver, per path.
#[derive(Debug)]
pub struct Tally {
    /// Requests per webhook-id.
    pub per_id: HashMap<String, usize>,
    pub requests: usize,
}

impl Tally {
    pub fn of(receiver: &Receiver, path: &str) -> Self {
        let mut per_id = HashMap::new();
        let got = receiver.received(path);
        for r in &got {
            let id = r
                .headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
            assert_eq!(body["uuid"], id, "webhook-id is the event uuid");
            *per_id.entry(id).or_insert(0) += 1;
        }
        Self {
            per_id,
            requests: got.len(),
        }
    }

    /// Requests beyond the first for the same webhook-id.
    pub fn duplicates(&self) -> usize {
        self.requests - self.per_id.len()
    }

    pub fn missing<'a>(&self, accepted: &'a [String]) -> Vec<&'a String> {
        accepted
            .iter()
            .filter(|u| !self.per_id.contains_key(*u))
            .collect()
    }
}

/// Waits until every accepted uuid reached every path; returns each path's tally.
pub async fn all_delivered(
    receiver: &Receiver,
    paths: &[&str],
    accepted: &[String],
    limit: Duration,
) -> Vec<Tally> {
    let unique: HashSet<&String> = accepted.iter().collect();
    assert_eq!(
        unique.len(),
        accepted.len(),
        "intake gave every event its own uuid"
    );
    let waited = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(
        limit,
        eventually("every accepted event delivered", limit * 2, || async {
            let tallies: Vec<Tally> = paths.iter().map(|p| Tally::of(receiver, p)).collect();
            tallies
                .iter()
                .all(|t| t.missing(accepted).is_empty())
                .then_some(tallies)
        }),
    )
    .await;
    match outcome {
        Ok(t) => t,
        Err(_) => {
            let lost: Vec<String> = paths
                .iter()
                .map(|p| {
                    let t = Tally::of(receiver, p);
                    let m = t.missing(accepted);
                    format!(
                        "/{p}: {} of {} missing, e.g. {:?}",
                        m.len(),
                        accepted.len(),
                        m.iter().take(5).collect::<Vec<_>>()
                    )
                })
                .collect();
            panic!(
                "not every accepted event arrived within {:?}: {}",
                waited.elapsed(),
                lost.join("; ")
            );
        }
    }
}
