//! A Redis Cluster master SIGKILLed under a stream of events: its replica takes over, and
//! every accepted event is delivered and in the history. The killed node is started again
//! afterwards (it rejoins as a replica), also when the test fails.

use std::time::{Duration, Instant};

use herald_e2e::{cluster, eventually, Processes, Receiver};

use crate::serial;
use crate::stream::{all_delivered, Producer};

/// Starts every node of the local cluster that is down when dropped, so a failing test leaves
/// the cluster whole for the next.
struct RestoreCluster;

impl Drop for RestoreCluster {
    fn drop(&mut self) {
        if let Err(e) = cluster::restore() {
            eprintln!("warning: the Redis Cluster was not restored: {e:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_master_fails_over_to_its_replica_and_nothing_is_lost() {
    let _turn = serial().await;
    let Some(seeds) = cluster::seeds_or_skip(
        "a_killed_redis_master_fails_over_to_its_replica_and_nothing_is_lost",
    ) else {
        return;
    };
    let _restore = RestoreCluster;
    let receiver = Receiver::start().await;
    let mut stack = Processes::start_for_test(
        "redis_failover",
        &[
            ("HERALD_REDIS_MODE", "cluster"),
            ("HERALD_REDIS_URL", seeds),
        ],
    )
    .await;
    let paths = ["a", "b"];
    let w = stack.wired(&receiver, &paths).await;
    // The victim: the master serving the workspace's slot, so the kill hits its history.
    let slot = cluster::slot_of(&w.workspace);
    let nodes = cluster::nodes().expect("cluster nodes");
    let master = nodes
        .iter()
        .find(|n| n.master && n.serves(slot) && !n.down)
        .expect("the workspace's master")
        .clone();
    let replica = nodes
        .iter()
        .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.down)
        .expect("a replica of that master (run deploy/services.sh cluster)")
        .clone();

    // Act: a steady stream; SIGKILL the master mid-stream; its replica is promoted (forced
    // with CLUSTER FAILOVER TAKEOVER if the cluster has not done it within 6 s).
    let producer = Producer::start(&stack.url, &w.sk, 5, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster::kill(master.port).expect("kill the master");
    let killed = Instant::now();
    let mut forced = false;
    while !cluster::is_master(replica.port) {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "replica {} not promoted",
            replica.port
        );
        if !forced && killed.elapsed() > Duration::from_secs(6) {
            forced = cluster::command::<String>(replica.port, &["CLUSTER", "FAILOVER", "TAKEOVER"])
                .is_ok();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted_after = killed.elapsed();
    eventually("the cluster ok again", Duration::from_secs(20), || async {
        cluster::is_up().then_some(())
    })
    .await;
    let accepted_before = producer.accepted();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = producer.stop().await;
    assert!(
        sent.accepted.len() > accepted_before,
        "events are accepted again after the failover: {sent:?}"
    );

    // Assert: every accepted event reached both paths, and its history says delivered.
    let tallies = all_delivered(&receiver, &paths, &sent.accepted, Duration::from_secs(120)).await;
    for uuid in &sent.accepted {
        let h = stack
            .event_when(&w.sk, uuid, "recorded as delivered", |b| {
                b["status"] == "delivered"
            })
            .await;
        assert_eq!(h["deliveries"].as_array().map(Vec::len), Some(2), "{h}");
    }
    let duplicates: usize = tallies.iter().map(|t| t.duplicates()).sum();
    println!(
        "fault report (Redis master {} SIGKILLed): replica {} promoted after {:.1} s{}, \
         {} events accepted, all delivered and recorded, {} duplicates, {} requests refused \
         or failed meanwhile",
        master.port,
        replica.port,
        promoted_after.as_secs_f64(),
        if forced { " (forced)" } else { "" },
        sent.accepted.len(),
        duplicates,
        sent.failed + sent.unavailable,
    );
    stack
        .check_alive()
        .expect("no service died of the failover");
    stack.stop().await;

    // The killed node comes back as a replica of the promoted one.
    cluster::restore().expect("the killed node restarts");
    eventually(
        "the old master rejoined as a replica",
        Duration::from_secs(20),
        || async {
            let nodes = cluster::nodes().ok()?;
            let old = nodes.iter().find(|n| n.port == master.port)?;
            (!old.down && old.master_id.as_deref() == Some(replica.id.as_str())).then_some(())
        },
    )
    .await;
}
