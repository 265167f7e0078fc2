//! SIGKILL at moments the test does not choose carefully: nothing accepted is lost.

use std::time::Duration;

use rand::Rng;

use herald_e2e::procs::{DELIVERER, INGEST, ROUTER};
use herald_e2e::{Processes, Receiver};

use crate::serial;
use crate::stream::{all_delivered, Producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_services_lose_nothing_that_was_accepted() {
    let _turn = serial().await;
    let receiver = Receiver::start().await;
    let mut stack = Processes::start_for_test("kills", &[]).await;
    let paths = ["a", "b"];
    let sk = stack.wired(&receiver, &paths).await.sk;

    let producer = Producer::start(&stack.url, &sk, 10, Duration::from_millis(20));
    let mut rng = rand::thread_rng();
    // Router and deliverer three times each, ingest once, at random moments mid-stream.
    let victims = [
        "router",
        "deliverer",
        "router",
        "ingest",
        "deliverer",
        "router",
        "deliverer",
    ];
    for victim in victims {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(700..1800))).await;
        match victim {
            "router" => {
                stack.proc_mut(ROUTER).kill();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
                stack.restart(ROUTER);
            }
            "deliverer" => {
                stack.proc_mut(DELIVERER).kill();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
                stack.restart(DELIVERER);
            }
            _ => {
                stack.proc_mut(INGEST).kill();
                stack.restart(INGEST);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = producer.stop().await;
    assert!(sent.accepted.len() > 500, "the stream kept going: {sent:?}");

    let tallies = all_delivered(&receiver, &paths, &sent.accepted, Duration::from_secs(120)).await;
    let duplicates: usize = tallies.iter().map(|t| t.duplicates()).sum();
    println!(
        "fault report (SIGKILL x{}): {} events accepted, {} deliveries expected, all delivered, \
         {} duplicates ({:.2} %), {} requests refused while ingest was down",
        victims.len(),
        sent.accepted.len(),
        sent.accepted.len() * paths.len(),
        duplicates,
        100.0 * duplicates as f64 / (sent.accepted.len() * paths.len()) as f64,
        sent.failed + sent.unavailable,
    );
    stack.stop().await;
}
