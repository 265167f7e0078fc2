//! A Redis that stops answering (a wedged server or network: the connection stays open, no byte
//! comes back) never hangs the store: every call ends in time with an error, and the store
//! answers again once Redis does.

use std::time::{Duration, Instant};

use futures::future::join_all;
use herald_e2e::{eventually, random_name, CutRelay, RedisPrefix};
use herald_shared::config::{CommonSettings, Source};
use herald_shared::model::Event;
use herald_shared::store::history::Routed;
use herald_shared::store::Store;
use tokio_util::sync::CancellationToken;

fn big_event(i: usize) -> Event {
    let payload = format!("{{\"blob\":\"{}\"}}", "x".repeat(128 << 10));
    Event {
        uuid: format!("evt_stall_{i}"),
        event: "blob.created".into(),
        resource: "blob".into(),
        resource_id: format!("b{i}"),
        payload: serde_json::value::RawValue::from_string(payload).expect("json"),
        time_created: herald_shared::now_ms(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_redis_that_stops_answering_end_in_time_and_recover() {
    // Arrange: a store reaching Redis through a relay the test holds.
    let relay = CutRelay::start("127.0.0.1:6379".parse().expect("address")).await;
    let prefix = RedisPrefix {
        url: herald_e2e::prefix::REDIS_URL.into(),
        prefix: random_name(),
    };
    let settings = CommonSettings::from_source(&Source::from_pairs([
        ("HERALD_REDIS_URL", format!("redis://{}", relay.addr)),
        ("HERALD_REDIS_PREFIX", prefix.prefix.clone()),
    ]))
    .expect("settings");
    let store = Store::connect(&settings, &CancellationToken::new())
        .await
        .expect("redis");
    assert!(store.ping().await);

    // Act: Redis stops answering while 300 writes of 128 KiB are made: more than the sockets
    // between them buffer, so the client cannot even send them all.
    relay.hold();
    let events: Vec<Event> = (0..300).map(big_event).collect();
    let started = Instant::now();
    let writes = events.iter().map(|event| {
        let store = store.clone();
        async move {
            let routed = [Routed {
                workspace_id: "ws_stall",
                event,
                connection_ids: Vec::new(),
                skipped: Vec::new(),
            }];
            tokio::time::timeout(Duration::from_secs(30), store.record_routed(&routed)).await
        }
    });
    let results = join_all(writes).await;
    let took = started.elapsed();

    // Assert: every write ended with an error well before 30 s, none hangs.
    let hung = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(hung, 0, "{hung} of 300 writes still waiting after 30 s");
    assert!(results.iter().all(|r| matches!(r, Ok(Err(_)))));
    println!("300 writes to a silent Redis failed within {took:?}");
    relay.mend();
    eventually(
        "the store answers again",
        Duration::from_secs(15),
        || async { store.ping().await.then_some(()) },
    )
    .await;
}
