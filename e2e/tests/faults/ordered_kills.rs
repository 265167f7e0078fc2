//! Ordered delivery through SIGKILLs: deliverers killed while heads of keys are out, a router
//! killed mid-stream, the broker or Redis killed and started again; every key still arrives
//! complete and in the order intake accepted it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_e2e::ordered::{arrivals, assert_each_key_in_order, payload};
use herald_e2e::procs::{wait_status, DELIVERER, ROUTER};
use herald_e2e::{eventually, Behaviour, Processes, Receiver};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::broker_kill::BrokerKilled;
use crate::outages::OwnRedis;
use crate::serial;

const KEYS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_keys_stay_in_order_through_sigkilled_deliverers_and_a_router() {
    let _turn = serial().await;
    let (receiver, mut stack, pk) = ordered_stack("ordered-kills", &[]).await;
    let producers = OrderedProducers::start(&stack, &pk);
    for victim in [DELIVERER, ROUTER, DELIVERER] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stack.proc_mut(victim).kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.restart(victim);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let expected = producers.stop().await;
    all_in_order(&receiver, &expected, "SIGKILL deliverer x2, router x1").await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_keys_stay_in_order_through_a_sigkill_of_the_broker() {
    let _turn = serial().await;
    let (receiver, stack, pk) = ordered_stack("ordered-broker-kill", &[]).await;
    let producers = OrderedProducers::start(&stack, &pk);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    {
        let _killed = BrokerKilled::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_status(&stack.http, &format!("{}/readyz", stack.url), 200).await;
    // The stream goes on a moment after the broker came back.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let expected = producers.stop().await;
    all_in_order(&receiver, &expected, "SIGKILL of the broker").await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_keys_stay_in_order_through_a_sigkill_of_redis() {
    let _turn = serial().await;
    // A Redis of the test's own, persisting every write as production runs it: the sequences
    // live there.
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let (receiver, stack, pk) =
        ordered_stack("ordered-redis-kill", &[("HERALD_REDIS_URL", &url)]).await;
    let producers = OrderedProducers::start(&stack, &pk);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.spawn();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expected = producers.stop().await;
    all_in_order(&receiver, &expected, "SIGKILL of Redis").await;
    stack.stop().await;
}

/// A receiver failing one request in seven, and the services (with `extra` settings) with a
/// connection delivering per resource to it; answers the publishable key.
async fn ordered_stack(test: &str, extra: &[(&str, &str)]) -> (Receiver, Processes, String) {
    let receiver = Receiver::start().await;
    // One request in seven fails: heads wait in the retry ladder as well as in flight.
    receiver.set("ordered", Behaviour::FailEvery(7, 500));
    // A short admission wait and timeout: a killed deliverer's lease on its heads runs out
    // within 1 s + 2 s + 15 s.
    let mut settings = vec![("HERALD_CONNECTION_WAIT", "1s")];
    settings.extend_from_slice(extra);
    let stack = Processes::start_for_test(test, &settings).await;
    let (_, sk, pk) = stack.workspace().await;
    let (con, _) = stack
        .connection(
            &sk,
            &receiver.url("ordered"),
            json!({"ordering": "per_resource", "timeout_ms": 2000}),
        )
        .await;
    stack.rule(&sk, "*", "*", &con).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (receiver, stack, pk)
}

/// One producer per key, each sending its key's events one request at a time (the next once
/// the last was accepted; a refused one again) until stopped.
struct OrderedProducers {
    accepted: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OrderedProducers {
    fn start(stack: &Processes, pk: &str) -> Self {
        let accepted: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for k in 0..KEYS {
            let key = format!("k{k}");
            let (url, pk, accepted, stop) = (
                stack.url.clone(),
                pk.to_string(),
                accepted.clone(),
                stop.clone(),
            );
            let http = stack.http.clone();
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.is_cancelled() {
                    let body = json!({"event": "order.updated", "resource": "order",
                                      "resource_id": key, "payload": payload(&key, seq)});
                    let status = http
                        .post(format!("{url}/v1/events"))
                        .bearer_auth(&pk)
                        .json(&body)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    match status {
                        Ok(202) => {
                            seq += 1;
                            accepted.lock().expect("lock").insert(key.clone(), seq);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                        // Not accepted (503 while the broker is away): the same event again.
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }));
        }
        Self {
            accepted,
            stop,
            tasks,
        }
    }

    /// Stops sending; answers, per key, how many events were accepted.
    async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("producer");
        }
        let accepted = self.accepted.lock().expect("lock").clone();
        accepted
    }
}

/// Waits for every accepted event at the receiver and checks each key's order.
async fn all_in_order(receiver: &Receiver, expected: &BTreeMap<String, u64>, what: &str) {
    let total: u64 = expected.values().sum();
    assert!(total > 100, "the stream kept going: {expected:?}");
    let stopped = Instant::now();
    eventually(
        "every accepted event delivered",
        Duration::from_secs(150),
        || async {
            let distinct = arrivals(&receiver.received("ordered"))
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64;
            (distinct >= total).then_some(())
        },
    )
    .await;
    let got = receiver.received("ordered");
    assert_each_key_in_order(&got, expected);
    println!(
        "fault report (ordered, {what}): {total} events over {KEYS} keys, all delivered in \
         order {:.1} s after the stream stopped, in {} requests (failed ones and heads sent \
         again included)",
        stopped.elapsed().as_secs_f64(),
        got.len(),
    );
}
