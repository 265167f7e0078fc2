//! The broker node SIGKILLed while retries wait in the delay ladder: every one is attempted
//! again once the node is back (the ladder dead-letters at least once).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use herald_e2e::procs::wait_status;
use herald_e2e::{eventually, Behaviour, Processes, Receiver};

use crate::{run_quiet, serial};

/// The machine's RabbitMQ node, killed with SIGKILL as a crash would; started again when
/// dropped, even if the test fails half-way.
pub(crate) struct BrokerKilled;

impl BrokerKilled {
    pub(crate) fn now() -> Self {
        assert!(
            run_quiet("pkill", &["-9", "-x", "beam.smp"]),
            "kill -9 beam.smp"
        );
        Self
    }
}

impl Drop for BrokerKilled {
    fn drop(&mut self) {
        for _ in 0..50 {
            if !run_quiet("pgrep", &["-x", "beam.smp"]) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !run_quiet("rabbitmq-server", &["-detached"]) {
            eprintln!("rabbitmq-server -detached failed; start RabbitMQ by hand");
        }
        for _ in 0..120 {
            if run_quiet("rabbitmq-diagnostics", &["-q", "check_running"]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("RabbitMQ did not come back within a minute; start it by hand");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_waiting_in_the_ladder_survive_a_sigkill_of_the_broker() {
    let _turn = serial().await;
    // Arrange: 100 connections, 15 events each, every first attempt failing; the retries wait
    // 7 s (the 4 s, 2 s and 1 s rungs).
    let receiver = Receiver::start().await;
    let paths: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    for p in &paths {
        receiver.set(p, Behaviour::FailFirst(15, 500));
    }
    let stack = Processes::start_for_test(
        "broker-kill",
        &[
            ("HERALD_RETRY_SCHEDULE", "7s"),
            ("HERALD_BREAKER_FAILURES", "1000"),
        ],
    )
    .await;
    let sk = stack.wired(&receiver, &paths).await.sk;
    // Five bulk requests 600 ms apart, so the retries cross from rung to rung over several
    // seconds (4 s rung, then 2 s, then 1 s) rather than all at once.
    let started = tokio::time::Instant::now();
    for chunk in 0..5 {
        let events: Vec<_> = (chunk * 3..chunk * 3 + 3)
            .map(|i| json!({"event": "order.created", "resource": "order", "resource_id": format!("o{i}"), "payload": {"i": i}}))
            .collect();
        let (status, body) = stack
            .call(
                "POST",
                "/v1/events/bulk",
                &sk,
                Some(json!({ "events": events })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // On a loaded machine, jobs of a slow message step aside and come back through the ladder:
    // give the first attempts time, the test is about what happens after them.
    eventually(
        "every first attempt made",
        Duration::from_secs(60),
        || async {
            paths
                .iter()
                .all(|p| receiver.received(p).len() >= 15)
                .then_some(())
        },
    )
    .await;
    // Every first attempt failed; their retries are in the ladder, moving between rungs.
    tokio::time::sleep_until(started + Duration::from_millis(5500)).await;

    // Act: SIGKILL the node mid-ladder, then start it again.
    {
        let _killed = BrokerKilled::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for url in [format!("{}/readyz", stack.url)] {
        wait_status(&stack.http, &url, 200).await;
    }

    // Assert: every delivery is attempted again.
    let retried = || -> Vec<usize> {
        paths
            .iter()
            .map(|p| {
                let mut per_id: HashMap<String, usize> = HashMap::new();
                for r in receiver.received(p) {
                    let id = r.headers["webhook-id"].to_str().unwrap_or("").to_string();
                    *per_id.entry(id).or_default() += 1;
                }
                per_id.values().filter(|n| **n >= 2).count()
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while retried().iter().any(|n| *n < 15) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let per_path = retried();
    println!(
        "fault report (broker SIGKILL): {} of 1500 deliveries retried after the node came back",
        per_path.iter().sum::<usize>()
    );
    assert!(
        per_path.iter().all(|n| *n == 15),
        "retries lost in the ladder, per connection: {per_path:?}"
    );
    stack.stop().await;
}
