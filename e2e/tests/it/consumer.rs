//! The consume loop on a real broker: a message that crashes its handler is tried once more
//! (at once set aside when its queue is consumed in order), then set aside in quarantine with
//! its reason; it neither loops nor blocks the queue. A byte
//! budget bounds the bodies handled at once, and a body larger than the budget still goes
//! through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_e2e::{eventually, Vhost};
use herald_shared::amqp::topology::{
    EVENTS_EXCHANGE, EVENTS_ORDERED_EXCHANGE, EVENTS_ORDERED_QUEUE, EVENTS_QUEUE, QUARANTINE_QUEUE,
};
use herald_shared::amqp::{
    consume, header_str, Broker, ByteBudget, ConsumeFrom, Handled, Publisher, REASON_HEADER,
};
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
            ConsumeFrom {
                queue: EVENTS_QUEUE,
                prefetch: 8,
                budget: None,
                in_order: false,
            },
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_of_a_queue_consumed_in_order_is_quarantined_at_its_first_crash() {
    let vhost = Vhost::new();
    let url = vhost.amqp_url(herald_e2e::vhost::AMQP_BASE);
    let settings = CommonSettings::from_source(&Source::from_pairs([("HERALD_AMQP_URL", url)]))
        .expect("settings");
    let broker = Broker::new(&settings, "consumer-test");
    broker.connection().await.expect("broker");

    let crashes = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    let consuming = {
        let (crashes, handled) = (crashes.clone(), handled.clone());
        tokio::spawn(consume(
            Publisher::new(broker.clone()),
            ConsumeFrom {
                queue: EVENTS_ORDERED_QUEUE,
                prefetch: 1,
                budget: None,
                in_order: true,
            },
            cancel.clone(),
            Duration::from_secs(5),
            move |message| {
                let (crashes, handled) = (crashes.clone(), handled.clone());
                async move {
                    if message.data == b"crash" {
                        crashes.fetch_add(1, Ordering::SeqCst);
                        panic!("a handler bug, on purpose");
                    }
                    handled.lock().expect("lock").push(message.data.clone());
                    Handled::Ack
                }
            },
        ))
    };
    for body in [&b"crash"[..], &b"after"[..]] {
        broker
            .publish(
                EVENTS_ORDERED_EXCHANGE,
                "test",
                body,
                BasicProperties::default(),
            )
            .await
            .expect("confirmed");
    }

    // Set aside at once: published again it would come back behind "after".
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
    assert_eq!(
        header_str(headers, "herald-queue"),
        Some(EVENTS_ORDERED_QUEUE)
    );
    eventually(
        "the next message handled",
        Duration::from_secs(20),
        || async { (handled.lock().expect("lock").len() == 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(crashes.load(Ordering::SeqCst), 1, "never tried again");
    assert_eq!(*handled.lock().expect("lock"), vec![b"after".to_vec()]);

    cancel.cancel();
    let _ = consuming.await;
    let _ = channel.close(200, "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_beyond_the_byte_budget_wait_and_one_larger_than_it_still_goes_through() {
    let vhost = Vhost::new();
    let url = vhost.amqp_url(herald_e2e::vhost::AMQP_BASE);
    let settings = CommonSettings::from_source(&Source::from_pairs([("HERALD_AMQP_URL", url)]))
        .expect("settings");
    let broker = Broker::new(&settings, "budget-test");
    broker.connection().await.expect("broker");

    // 3 KiB of bodies at once, 32 messages by count: the bytes bind first.
    let budget = ByteBudget::new(3 * 1024);
    let small = vec![b's'; 1024];
    let large = vec![b'L'; 10 * 1024];
    let in_flight = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<(usize, usize)>::new()));
    let cancel = CancellationToken::new();
    let consuming = {
        let (in_flight, seen) = (in_flight.clone(), seen.clone());
        tokio::spawn(consume(
            Publisher::new(broker.clone()),
            ConsumeFrom {
                queue: EVENTS_QUEUE,
                prefetch: 32,
                budget: Some(budget.clone()),
                in_order: false,
            },
            cancel.clone(),
            Duration::from_secs(5),
            move |message| {
                let (in_flight, seen) = (in_flight.clone(), seen.clone());
                async move {
                    let len = message.data.len();
                    let now = in_flight.fetch_add(len, Ordering::SeqCst) + len;
                    seen.lock().expect("lock").push((len, now));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    in_flight.fetch_sub(len, Ordering::SeqCst);
                    Handled::Ack
                }
            },
        ))
    };

    let bodies: Vec<&[u8]> = (0..12)
        .map(|i| if i == 5 { &large[..] } else { &small[..] })
        .collect();
    for body in &bodies {
        broker
            .publish(EVENTS_EXCHANGE, "test", body, BasicProperties::default())
            .await
            .expect("confirmed");
    }

    eventually(
        "every message handled and settled",
        Duration::from_secs(20),
        || async {
            let handled = seen.lock().expect("lock").len();
            let depth = broker.queue_depths(&[EVENTS_QUEUE.to_string()]).await;
            (handled == bodies.len() && depth == Some(vec![(EVENTS_QUEUE.to_string(), 0)]))
                .then_some(())
        },
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.iter().filter(|(len, _)| *len == large.len()).count(),
        1,
        "the body larger than the whole budget went through"
    );
    for (len, together) in &seen {
        if *len == large.len() {
            assert_eq!(*together, large.len(), "the large body ran alone");
        } else {
            assert!(
                *together <= budget.capacity(),
                "{together} bytes handled at once, over the budget of {}",
                budget.capacity()
            );
        }
    }
    assert!(
        seen.iter().any(|(_, together)| *together > small.len()),
        "small bodies still ran side by side: {seen:?}"
    );
    eventually("the budget given back", Duration::from_secs(5), || async {
        (budget.available() == budget.capacity()).then_some(())
    })
    .await;

    cancel.cancel();
    let _ = consuming.await;
}
