//! SIGTERM: finish what is in flight, hand back the rest, exit cleanly; nothing sent twice.

use std::time::Duration;

use herald_e2e::procs::DELIVERER;
use herald_e2e::{Behaviour, Processes, Receiver};

use crate::serial;
use crate::stream::{all_delivered, Tally};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_deliverer_finishes_in_flight_work_without_duplicates() {
    let _turn = serial().await;
    let receiver = Receiver::start().await;
    receiver.set("slow", Behaviour::Slow(Duration::from_millis(1500)));
    let mut stack =
        Processes::start_for_test("sigterm", &[("HERALD_CONNECTION_CONCURRENCY", "4")]).await;
    let sk = stack.wired(&receiver, &["slow"]).await.sk;

    let mut accepted = Vec::new();
    for i in 0..40 {
        accepted.push(
            stack
                .send(&sk, "order.created", "order", serde_json::json!({ "i": i }))
                .await,
        );
    }
    // Some requests are at the receiver, waiting for their slow answers; most are queued.
    receiver.wait_for("slow", 2).await;
    let took = stack
        .proc_mut(DELIVERER)
        .terminate(Duration::from_secs(20))
        .expect("the deliverer exits within its drain timeout");
    let sent_before_exit = receiver.received("slow").len();
    assert!(
        sent_before_exit < accepted.len(),
        "the rest was handed back, not sent"
    );

    // Every request that started got its answer and its outcome recorded before the exit.
    for r in receiver.received("slow") {
        let id = r.headers["webhook-id"].to_str().expect("id").to_string();
        stack
            .event_when(&sk, &id, "delivered before the exit", |b| {
                b["deliveries"][0]["status"] == "delivered"
            })
            .await;
    }

    stack.restart(DELIVERER);
    let tallies = all_delivered(&receiver, &["slow"], &accepted, Duration::from_secs(60)).await;
    let tally: &Tally = &tallies[0];
    println!(
        "fault report (SIGTERM): exited in {took:?}, {sent_before_exit} sent before the exit, \
         {} duplicates",
        tally.duplicates()
    );
    assert_eq!(
        tally.duplicates(),
        0,
        "a drained restart sends nothing twice"
    );
    stack.stop().await;
}
