//! SIGKILL at moments the test does not choose carefully: nothing accepted is lost.

use std::time::Duration;

use rand::Rng;

use crate::helpers::TestReceiver;
use crate::procs::ProcStack;
use crate::stream::{all_delivered, Producer};
use crate::{serial, wire};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_services_lose_nothing_that_was_accepted() {
    let _turn = serial().await;
    let receiver = TestReceiver::start().await;
    let mut stack = ProcStack::start("kills", &[]).await;
    let paths = ["a", "b"];
    let sk = wire(&stack, &receiver, &paths).await;

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
                stack.router.as_mut().expect("router").kill();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
                stack.start_router();
            }
            "deliverer" => {
                stack.deliverer.as_mut().expect("deliverer").kill();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
                stack.start_deliverer();
            }
            _ => {
                stack.ingest.as_mut().expect("ingest").kill();
                stack.start_ingest();
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
