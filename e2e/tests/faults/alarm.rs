//! A broker that blocks publishers (a memory alarm): intake answers 503 at once instead of
//! waiting for a confirm that cannot come, and accepts again once the alarm clears.

use std::time::{Duration, Instant};

use serde_json::json;

use herald_e2e::{eventually, Processes, Receiver};

use crate::{run_quiet, serial};

fn rabbitmqctl(args: &[&str]) -> bool {
    run_quiet("rabbitmqctl", args)
}

/// The broker's memory watermark set so low that it blocks every publisher; set back to
/// RabbitMQ's default when dropped, even if the test fails half-way.
struct MemoryAlarm;

impl MemoryAlarm {
    fn raise() -> Self {
        assert!(
            rabbitmqctl(&["set_vm_memory_high_watermark", "0.0001"]),
            "rabbitmqctl set_vm_memory_high_watermark"
        );
        Self
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        if !rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]) {
            eprintln!("could not set the memory watermark back: rabbitmqctl set_vm_memory_high_watermark 0.4");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_answers_503_at_once_while_the_broker_blocks_publishers() {
    let _turn = serial().await;
    let receiver = Receiver::start().await;
    let stack = Processes::start_for_test("alarm", &[]).await;
    let w = stack.wired(&receiver, &["a"]).await;
    let event =
        json!({"event": "order.created", "resource": "order", "resource_id": "o1", "payload": {}});
    stack.send(&w.pk, "order.created", "order", json!({})).await;

    {
        let _alarm = MemoryAlarm::raise();
        // The broker tells its connections they are blocked as soon as the alarm is raised.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..3 {
            let started = Instant::now();
            let (status, body) = stack
                .call("POST", "/v1/events", &w.pk, Some(event.clone()))
                .await;
            let took = started.elapsed();
            println!("fault report (memory alarm): {status} in {took:?}");
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "broker_unavailable", "{body}");
            assert!(
                took < Duration::from_secs(2),
                "intake waited for a confirm that cannot come: {took:?}"
            );
        }
    }

    // Alarm cleared: accepted and delivered again.
    let uuid = eventually(
        "intake accepting again",
        Duration::from_secs(30),
        || async {
            let (status, body) = stack
                .call("POST", "/v1/events", &w.pk, Some(event.clone()))
                .await;
            (status == 202).then(|| body["uuid"].as_str().unwrap_or_default().to_string())
        },
    )
    .await;
    eventually(
        "the event after the alarm delivered",
        Duration::from_secs(30),
        || async {
            receiver
                .received("a")
                .iter()
                .any(|r| r.headers["webhook-id"] == uuid.as_str())
                .then_some(())
        },
    )
    .await;
    stack.stop().await;
}
