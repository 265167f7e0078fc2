//! The whole pipeline on a real Redis Cluster (`HERALD_REDIS_MODE=cluster`, three masters from
//! `deploy/services.sh cluster`): workspaces in different slots, events of several workspaces
//! in the same router and deliverer batches, dead letters, replays, a connection's stats, and
//! the console's lookup by uuid.

use std::collections::HashSet;
use std::time::Duration;

use herald_e2e::{cluster, eventually, verify, Behaviour, Receiver, Stack, ADMIN};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_on_a_redis_cluster() {
    let Some(seeds) = cluster::seeds_or_skip("the_pipeline_runs_on_a_redis_cluster") else {
        return;
    };
    // Arrange: three workspaces (their keys in three slots, likely on different masters), each
    // with a connection that answers and one that fails until it is fixed.
    let stack = Stack::start_with(&[
        ("HERALD_REDIS_MODE", "cluster"),
        ("HERALD_REDIS_URL", seeds),
        ("HERALD_RETRY_SCHEDULE", "200ms"),
    ])
    .await;
    let receiver = Receiver::start().await;
    let mut wired = Vec::new();
    for i in 0..3 {
        let (ok, down) = (format!("ok{i}"), format!("down{i}"));
        receiver.set(&down, Behaviour::Always(503));
        wired.push(stack.wired(&receiver, &[&ok, &down]).await);
    }

    // Act: events of every workspace, interleaved, so batches span slots.
    let mut sent = Vec::new();
    for n in 0..5 {
        for (i, w) in wired.iter().enumerate() {
            let uuid = stack
                .send(&w.pk, "order.created", "order", json!({"n": n, "ws": i}))
                .await;
            sent.push((i, uuid));
        }
    }

    // Assert: every event reached its workspace's good connection once, signed.
    for (i, w) in wired.iter().enumerate() {
        let got = receiver.wait_for(&format!("ok{i}"), 5).await;
        let ids: HashSet<String> = got
            .iter()
            .map(|r| {
                verify(&w.connections[0].1, r)["uuid"]
                    .as_str()
                    .unwrap_or_default()
                    .into()
            })
            .collect();
        let want: HashSet<String> = sent
            .iter()
            .filter(|(ws, _)| *ws == i)
            .map(|(_, u)| u.clone())
            .collect();
        assert_eq!(ids, want, "workspace {i}");
    }
    // History: delivered to one connection, dead at the other (two attempts each way).
    for (i, uuid) in &sent {
        let w = &wired[*i];
        let h = stack
            .event_when(&w.sk, uuid, "dead at the failing connection", |b| {
                b["status"] == "dead"
            })
            .await;
        for d in h["deliveries"].as_array().expect("deliveries") {
            if d["connection_id"] == w.connections[0].0.as_str() {
                assert_eq!(d["status"], "delivered", "{h}");
            } else {
                assert_eq!(d["status"], "dead", "{h}");
                assert_eq!(d["attempts"].as_array().expect("attempts").len(), 2, "{h}");
            }
        }
    }
    let (status, listed) = stack
        .call("GET", "/v1/events?limit=100", &wired[1].sk, None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["data"].as_array().expect("data").len(),
        5,
        "{listed}"
    );
    let (status, all) = stack.call("GET", "/v1/workspaces", ADMIN, None).await;
    assert_eq!(status, 200, "{all}");
    let listed_ids: HashSet<&str> = all["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert!(
        wired
            .iter()
            .all(|w| listed_ids.contains(w.workspace.as_str())),
        "{all}"
    );

    // Dead letters are listed per workspace; one replayed after its destination is fixed.
    let w = &wired[2];
    let (con, secret) = w.connections[1].clone();
    let letters = eventually("five dead letters", Duration::from_secs(20), || async {
        let (_, l) = stack
            .call(
                "GET",
                &format!("/v1/dead-letters?connection_id={con}"),
                &w.sk,
                None,
            )
            .await;
        let data = l["data"].as_array().cloned().unwrap_or_default();
        (data.len() == 5).then_some(data)
    })
    .await;
    receiver.set("down2", Behaviour::Ok);
    let id = letters[0]["id"].as_str().expect("id");
    let uuid = letters[0]["event"]["uuid"].as_str().expect("uuid");
    let (status, body) = stack
        .call(
            "POST",
            &format!("/v1/dead-letters/{id}/replay"),
            &w.sk,
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for("down2", 11).await;
    assert!(got
        .iter()
        .any(|r| r.headers.get("webhook-id").is_some_and(|v| v == uuid)
            && verify(&secret, r)["uuid"] == uuid));
    stack
        .event_when(&w.sk, uuid, "delivered after replay", |b| {
            b["status"] == "delivered"
        })
        .await;
    let (_, left) = stack
        .call(
            "GET",
            &format!("/v1/dead-letters?connection_id={con}"),
            &w.sk,
            None,
        )
        .await;
    assert_eq!(left["data"].as_array().expect("data").len(), 4, "{left}");

    // The connection's stats (counters in its workspace's slot): ten failed attempts, five dead
    // letters, then the replay's success.
    eventually(
        "stats count the failures and the replay",
        Duration::from_secs(20),
        || async {
            let (_, stats) = stack
                .call("GET", &format!("/v1/connections/{con}/stats"), &w.sk, None)
                .await;
            let points = stats["data"].as_array().cloned().unwrap_or_default();
            let sum = |name: &str| -> u64 { points.iter().filter_map(|p| p[name].as_u64()).sum() };
            (sum("deliveries") == 11 && sum("failures") == 10 && sum("dead_letters") == 5)
                .then_some(())
        },
    )
    .await;

    // The console finds every event by uuid alone (its locator is a key of its own, in a slot
    // of its own), and a replay by filter walks the rest and leaves its progress to read.
    for (i, uuid) in &sent {
        let (status, found) = stack
            .call("GET", &format!("/v1/admin/events/{uuid}"), ADMIN, None)
            .await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(
            found["workspace_id"],
            wired[*i].workspace.as_str(),
            "{found}"
        );
    }
    let (status, replayed) = stack
        .call(
            "POST",
            "/v1/dead-letters/replay",
            &w.sk,
            Some(json!({"connection_id": con})),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["count"], 4, "{replayed}");
    let replay_id = replayed["replay_id"].as_str().expect("replay_id");
    let (status, progress) = stack
        .call(
            "GET",
            &format!("/v1/dead-letters/replays/{replay_id}"),
            &w.sk,
            None,
        )
        .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(progress["status"], "finished", "{progress}");
    assert_eq!(progress["replayed"], 4, "{progress}");
    receiver.wait_for("down2", 15).await;

    // Each workspace's keys are on the one master that serves its slot.
    let masters = cluster::masters_of("redis://127.0.0.1:7000").expect("masters");
    for w in &wired {
        let pattern = format!("{}:ws:{{{}}}*", stack.prefix, w.workspace);
        let holding: Vec<u16> = masters
            .iter()
            .copied()
            .filter(|port| {
                cluster::command::<Vec<String>>(*port, &["KEYS", &pattern])
                    .is_ok_and(|k| !k.is_empty())
            })
            .collect();
        assert_eq!(holding.len(), 1, "{pattern} on {holding:?}");
    }
    stack.stop().await;
}
