//! Ordered delivery through SIGKILLs: deliverers killed while heads of keys are out, a router
//! killed mid-stream; every key still arrives complete and in the order intake accepted it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_e2e::ordered::{arrivals, assert_each_key_in_order, payload};
use herald_e2e::procs::{DELIVERER, ROUTER};
use herald_e2e::{eventually, Behaviour, Processes, Receiver};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::serial;

const KEYS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_keys_stay_in_order_through_sigkilled_deliverers_and_a_router() {
    let _turn = serial().await;
    let receiver = Receiver::start().await;
    // One request in seven fails: heads wait in the retry ladder as well as in flight.
    receiver.set("ordered", Behaviour::FailEvery(7, 500));
    // A short admission wait and timeout: a killed deliverer's lease on its heads runs out
    // within 1 s + 2 s + 15 s.
    let mut stack =
        Processes::start_for_test("ordered-kills", &[("HERALD_CONNECTION_WAIT", "1s")]).await;
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

    // Each key sends its events one request at a time, the next once the last was accepted.
    let accepted: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut producers = Vec::new();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let (url, pk, accepted, stop) = (
            stack.url.clone(),
            pk.clone(),
            accepted.clone(),
            stop.clone(),
        );
        let http = stack.http.clone();
        producers.push(tokio::spawn(async move {
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
                    // Not accepted (ingest is never killed here): the same event again.
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }

    for victim in [DELIVERER, ROUTER, DELIVERER] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stack.proc_mut(victim).kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.restart(victim);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.cancel();
    for p in producers {
        p.await.expect("producer");
    }
    let expected = accepted.lock().expect("lock").clone();
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
    assert_each_key_in_order(&got, &expected);
    println!(
        "fault report (ordered, SIGKILL deliverer x2, router x1): {total} events over {KEYS} \
         keys, all delivered in order {:.1} s after the stream stopped, in {} requests \
         (failed ones and heads sent again included)",
        stopped.elapsed().as_secs_f64(),
        got.len(),
    );
    stack.stop().await;
}
