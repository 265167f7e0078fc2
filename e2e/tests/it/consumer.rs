//! The consume loop on a real broker: a message that crashes its handler is tried once more,
//! then set aside in quarantine with its reason; it neither loops nor blocks the queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_e2e::{eventually, Vhost};
use herald_shared::amqp::topology::{EVENTS_EXCHANGE, EVENTS_QUEUE, QUARANTINE_QUEUE};
use herald_shared::amqp::{consume, header_str, Broker, Handled, Publisher, REASON_HEADER};
use herald_shared::config::{CommonSettings, Source};
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_that_crashes_its_handler_twice_is_quarantined_with_its_reason() {
    let vhost = Vhost::new();
    let url = vhost.amqp_url(herald_e2e::vhost::AMQP_BASE);
    let settings = CommonSettings::from_source(&Source::from_pairs([("HERALD_AMQP_URL", url)]))
        .expect("settings");
    let broker = Broker::new(&settings, "consumer-test");
    broker.connection().await.expect("broker");

    let crashes = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let consuming = {
        let (crashes, handled) = (crashes.clone(), handled.clone());
        tokio::spawn(consume(
            Publisher::new(broker.clone()),
            EVENTS_QUEUE,
            8,
            cancel.clone(),
            Duration::from_secs(5),
            move |message| {
                let (crashes, handled) = (crashes.clone(), handled.clone());
                async move {
                    if message.data == b"crash" {
                        crashes.fetch_add(1, Ordering::SeqCst);
                        panic!("a handler bug, on purpose");
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    Handled::Ack
                }
            },
        ))
    };
    for body in [&b"crash"[..], &b"fine"[..]] {
        broker
            .publish(EVENTS_EXCHANGE, "test", body, BasicProperties::default())
            .await
            .expect("confirmed");
    }

    // The good message is handled; the bad one lands in quarantine after exactly two tries.
    let connection = broker.connection().await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let set_aside = eventually(
        "the crashing message in quarantine",
        Duration::from_secs(20),
        || async {
            channel
                .basic_get(QUARANTINE_QUEUE, BasicGetOptions::default())
                .await
                .ok()
                .flatten()
        },
    )
    .await;
    assert_eq!(set_aside.delivery.data, b"crash");
    let headers = set_aside.delivery.properties.headers();
    let reason = header_str(headers, REASON_HEADER).expect("reason");
    assert!(reason.contains("crashed"), "{reason}");
    assert_eq!(header_str(headers, "herald-queue"), Some(EVENTS_QUEUE));
    let panics = headers
        .as_ref()
        .and_then(|h| h.inner().get("herald-panics").cloned());
    assert_eq!(panics, Some(AMQPValue::LongLongInt(2)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        crashes.load(Ordering::SeqCst),
        2,
        "tried twice, then set aside"
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "the other message was not blocked"
    );
    assert_eq!(
        broker.queue_depths(&[EVENTS_QUEUE.to_string()]).await,
        Some(vec![(EVENTS_QUEUE.to_string(), 0)])
    );

    cancel.cancel();
    let _ = consuming.await;
    let _ = channel.close(200, "done").await;
}
