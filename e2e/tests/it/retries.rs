//! Retries through the broker's delay ladder, dead letters, replay, redirects, rotation.

use std::time::Duration;

use herald_e2e::{verify, Behaviour, CutRelay, Receiver, Stack};
use herald_shared::amqp::topology::RETRY_EXCHANGE;
use herald_shared::amqp::Broker;
use herald_shared::config::CommonSettings;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_fails_twice_gets_three_attempts_in_the_history() {
    let stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "1s,1s,1s")]).await;
    let receiver = Receiver::start().await;
    receiver.set("flaky", Behaviour::FailFirst(2, 500));
    let w = stack.wired(&receiver, &["flaky"]).await;
    let (sk, pk, (_, secret)) = (w.sk, w.pk, w.connections[0].clone());

    let uuid = stack
        .send(&pk, "order.completed", "order", json!({"n": 1}))
        .await;

    let history = stack
        .event_when(&sk, &uuid, "delivered on the third attempt", |b| {
            b["status"] == "delivered"
        })
        .await;
    let attempts = history["deliveries"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .clone();
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status_code"].as_i64().expect("code"))
        .collect();
    assert_eq!(codes, vec![500, 500, 200]);
    assert_eq!(attempts[0]["error"], "status 500");
    let got = receiver.received("flaky");
    assert_eq!(got.len(), 3);
    let ids: Vec<String> = got
        .iter()
        .map(|r| {
            verify(&secret, r)["uuid"]
                .as_str()
                .expect("uuid")
                .to_string()
        })
        .collect();
    assert!(
        ids.iter().all(|id| *id == uuid),
        "the same webhook-id on every retry"
    );
    // The waits happened in the broker: at least about a second between attempts.
    let at: Vec<i64> = attempts
        .iter()
        .map(|a| a["at"].as_i64().expect("at"))
        .collect();
    assert!(at[1] - at[0] >= 700 && at[2] - at[1] >= 700, "{at:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_destination_is_dead_lettered_then_replayed_once_fixed() {
    let stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "1s,1s,1s")]).await;
    let receiver = Receiver::start().await;
    receiver.set("down", Behaviour::Always(503));
    let w = stack.wired(&receiver, &["down"]).await;
    let (sk, pk, (con, secret)) = (w.sk, w.pk, w.connections[0].clone());

    let uuid = stack
        .send(&pk, "invoice.paid", "invoice", json!({"amount": 5}))
        .await;

    // Exactly schedule length + 1 attempts, then dead.
    let history = stack
        .event_when(&sk, &uuid, "dead", |b| b["status"] == "dead")
        .await;
    let delivery = &history["deliveries"][0];
    assert_eq!(delivery["status"], "dead");
    assert_eq!(delivery["attempts"].as_array().expect("attempts").len(), 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received("down").len(),
        4,
        "no attempt after the schedule ran out"
    );

    let (status, listed) = stack
        .call(
            "GET",
            &format!("/v1/dead-letters?connection_id={con}"),
            &sk,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let letters = listed["data"].as_array().expect("data");
    assert_eq!(letters.len(), 1);
    let id = letters[0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        letters[0]["attempts"].as_array().expect("attempts").len(),
        4
    );
    let (status, _) = stack
        .call("GET", "/v1/dead-letters?event=other.type", &sk, None)
        .await;
    assert_eq!(status, 200);

    // Fix the destination and replay: delivered, and the dead letter leaves the list.
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{con}"),
            &sk,
            Some(json!({"url": receiver.url("fixed")})),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = stack
        .call("POST", &format!("/v1/dead-letters/{id}/replay"), &sk, None)
        .await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for("fixed", 1).await;
    assert_eq!(verify(&secret, &got[0])["uuid"], uuid.as_str());
    let history = stack
        .event_when(&sk, &uuid, "delivered after replay", |b| {
            b["status"] == "delivered"
        })
        .await;
    assert_eq!(
        history["deliveries"][0]["attempts"]
            .as_array()
            .expect("attempts")
            .len(),
        5
    );
    let (_, listed) = stack.call("GET", "/v1/dead-letters", &sk, None).await;
    assert_eq!(listed["data"], json!([]));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_counts_as_success_and_is_not_followed() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    receiver.set("moved", Behaviour::RedirectTo("target".into()));
    let w = stack.wired(&receiver, &["moved"]).await;
    let (sk, pk) = (w.sk, w.pk);

    let uuid = stack.send(&pk, "a.b", "r", json!({})).await;

    let history = stack
        .event_when(&sk, &uuid, "delivered", |b| b["status"] == "delivered")
        .await;
    assert_eq!(history["deliveries"][0]["attempts"][0]["status_code"], 302);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.received("target").is_empty(),
        "the redirect target is never called"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_waiting_in_the_broker_survive_the_deliverer_going_away() {
    let mut stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "3s")]).await;
    let receiver = Receiver::start().await;
    receiver.set("later", Behaviour::FailFirst(5, 500));
    let w = stack.wired(&receiver, &["later"]).await;
    let (sk, pk) = (w.sk, w.pk);

    let mut uuids = Vec::new();
    for i in 0..5 {
        uuids.push(stack.send(&pk, "a.b", "r", json!({"i": i})).await);
    }
    receiver.wait_for("later", 5).await;
    // Every first attempt failed; the retries now wait in the delay ladder. No deliverer runs.
    stack.stop_deliverer().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.received("later").len(), 5);
    stack.start_deliverer().await;

    for uuid in &uuids {
        stack
            .event_when(&sk, uuid, "delivered after restart", |b| {
                b["status"] == "delivered"
            })
            .await;
    }
    assert_eq!(receiver.received("later").len(), 10);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_secret_signs_alongside_the_new_one_and_test_events_flow() {
    let stack = Stack::start().await;
    let receiver = Receiver::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (con, old) = stack.connection(&sk, &receiver.url("rot"), json!({})).await;
    let rule = stack.rule(&sk, "order.*", "order", &con).await;

    let (status, rotated) = stack
        .call(
            "POST",
            &format!("/v1/connections/{con}/rotate-secret"),
            &sk,
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().expect("secret").to_string();
    assert_ne!(new, old);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (status, sent) = stack
        .call(
            "POST",
            &format!("/v1/rules/{rule}/test"),
            &sk,
            Some(json!({"hello": "world"})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let uuid = sent["uuid"].as_str().expect("uuid").to_string();
    let got = receiver.wait_for("rot", 1).await;
    assert_eq!(
        got[0].headers["webhook-signature"]
            .to_str()
            .expect("sig")
            .split(' ')
            .count(),
        2
    );
    let body = verify(&new, &got[0]);
    verify(&old, &got[0]);
    assert_eq!(body["uuid"], uuid.as_str());
    assert_eq!(body["event"], "order.test");
    assert_eq!(body["payload"], json!({"hello": "world"}));
    stack
        .event_when(&sk, &uuid, "test event delivered", |b| {
            b["status"] == "delivered"
        })
        .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gone_stops_retries_and_a_filter_replays_every_matching_dead_letter() {
    let stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "1s,1s,1s")]).await;
    let receiver = Receiver::start().await;
    receiver.set("gone", Behaviour::Always(410));
    let w = stack.wired(&receiver, &["gone"]).await;
    let (sk, pk, (con, _)) = (w.sk, w.pk, w.connections[0].clone());

    let first = stack.send(&pk, "a.b", "r", json!({"n": 1})).await;
    let second = stack.send(&pk, "a.c", "r", json!({"n": 2})).await;

    // 410: one attempt, straight to the dead letters.
    for uuid in [&first, &second] {
        let h = stack
            .event_when(&sk, uuid, "dead after 410", |b| b["status"] == "dead")
            .await;
        assert_eq!(
            h["deliveries"][0]["attempts"]
                .as_array()
                .expect("attempts")
                .len(),
            1
        );
        assert_eq!(h["deliveries"][0]["attempts"][0]["status_code"], 410);
    }
    let (_, only_ac) = stack
        .call("GET", "/v1/dead-letters?event=a.c", &sk, None)
        .await;
    assert_eq!(only_ac["data"].as_array().expect("data").len(), 1);
    assert_eq!(only_ac["data"][0]["event"]["uuid"], second.as_str());

    // The receiver comes back; replay everything of the connection at once.
    receiver.set("gone", Behaviour::Ok);
    let (status, body) = stack
        .call(
            "POST",
            "/v1/dead-letters/replay",
            &sk,
            Some(json!({"connection_id": con})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);
    for uuid in [&first, &second] {
        stack
            .event_when(&sk, uuid, "delivered after replay", |b| {
                b["status"] == "delivered"
            })
            .await;
    }
    let (_, listed) = stack.call("GET", "/v1/dead-letters", &sk, None).await;
    assert_eq!(listed["data"], json!([]));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_are_written_once_redis_is_back_for_the_deliverer() {
    // Arrange: the deliverer reaches Redis through a relay the test cuts; one event goes to a
    // slow healthy endpoint and to a slow failing one (one retry, then the dead-letter queue).
    let mut stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "1s")]).await;
    let relay = CutRelay::start("127.0.0.1:6379".parse().expect("address")).await;
    stack.stop_deliverer().await;
    stack
        .start_deliverer_with(&[("HERALD_REDIS_URL", &format!("redis://{}", relay.addr))])
        .await;
    let (receiver, sk, uuid) = slow_pair(&stack, Duration::from_millis(800)).await;

    // Act: Redis goes away for the deliverer alone while both requests are out, so writing
    // their outcomes fails for 2.5 s.
    relay.cut();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    relay.mend();

    // Assert
    both_outcomes_kept(&stack, &receiver, &sk, &uuid).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_whose_settling_fails_again_and_again_keeps_every_outcome() {
    // Arrange: one event to a slow healthy endpoint and a slow failing one (one retry, then the
    // dead-letter queue), so one jobs message carries both.
    let stack = Stack::start_with(&[("HERALD_RETRY_SCHEDULE", "1s")]).await;
    let common = CommonSettings::from_source(stack.source()).expect("settings");
    let (receiver, sk, uuid) = slow_pair(&stack, Duration::from_millis(1500)).await;

    // Act: while both requests are out, the retry ladder's entry exchange disappears from the
    // stack's vhost, so publishing the retry fails (and settling the message with it) every
    // 500 ms until the topology is declared again 3 s later.
    let broker = Broker::new(&common, "test-topology");
    let channel = broker
        .connection()
        .await
        .expect("broker")
        .create_channel()
        .await
        .expect("channel");
    channel
        .exchange_delete(RETRY_EXCHANGE, Default::default())
        .await
        .expect("delete the ladder's entry");
    tokio::time::sleep(Duration::from_secs(3)).await;
    Broker::new(&common, "test-topology-again")
        .connection()
        .await
        .expect("topology declared again");

    // Assert
    both_outcomes_kept(&stack, &receiver, &sk, &uuid).await;
    stack.stop().await;
}

/// One event to a healthy and a failing endpoint that both answer after `pause` (one jobs
/// message carries both), sent once both are wired; returns when both requests are out.
async fn slow_pair(stack: &Stack, pause: Duration) -> (Receiver, String, String) {
    let receiver = Receiver::start().await;
    receiver.set("slow-ok", Behaviour::Slow(pause));
    receiver.set("slow-fail", Behaviour::SlowFail(pause, 500));
    let w = stack.wired(&receiver, &["slow-ok", "slow-fail"]).await;
    let uuid = stack
        .send(&w.pk, "order.completed", "order", json!({"n": 1}))
        .await;
    receiver.wait_for("slow-ok", 1).await;
    receiver.wait_for("slow-fail", 1).await;
    (receiver, w.sk, uuid)
}

/// Nothing of the message was dropped: the healthy delivery is recorded with its one attempt,
/// and the failed one was retried once and dead-lettered with both attempts.
async fn both_outcomes_kept(stack: &Stack, receiver: &Receiver, sk: &str, uuid: &str) {
    let history = stack
        .event_when(sk, uuid, "every outcome written", |b| {
            b["status"] == "dead"
                && b["deliveries"]
                    .as_array()
                    .is_some_and(|d| d.iter().all(|d| d["status"] != "pending"))
        })
        .await;
    let attempts_by_status = |status: &str| {
        history["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .filter(|d| d["status"] == status)
            .map(|d| d["attempts"].as_array().map_or(0, Vec::len))
            .collect::<Vec<_>>()
    };
    assert_eq!(attempts_by_status("delivered"), vec![1], "{history}");
    assert_eq!(attempts_by_status("dead"), vec![2], "{history}");
    assert_eq!(receiver.received("slow-ok").len(), 1);
    assert_eq!(receiver.received("slow-fail").len(), 2);
}
