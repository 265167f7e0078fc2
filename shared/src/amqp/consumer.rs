//! A consume loop that survives the broker going away: it reopens its channel with backoff,
//! hands every delivery to a handler task, and on shutdown stops taking messages and waits for
//! the handlers (up to a drain timeout) so in-flight work finishes or goes back to the queue.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Broker;

/// What a handler did with its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Done and acknowledged.
    Acked,
    /// Could not finish now (Redis or broker trouble): handed back to the queue after a pause.
    Requeue {
        /// Why, for the log.
        reason: String,
    },
    /// Not started because the process is shutting down: handed back at once, untouched.
    Release,
}

/// Pause before a message that could not be handled goes back to the queue, so a Redis outage
/// does not turn into a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Consumes `queue` until `cancel` fires, running `handler` for each delivery on its own task.
/// The prefetch bounds how many run at once. The handler acks; a `Requeue` is nacked back; a
/// handler that panics gets its message once more, then the message goes to quarantine with
/// its reason.
pub async fn consume<H, F>(
    broker: Arc<Broker>,
    queue: &'static str,
    prefetch: u16,
    cancel: CancellationToken,
    drain_timeout: Duration,
    handler: H,
) where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Handled> + Send + 'static,
{
    let handler = Arc::new(handler);
    let tracker = TaskTracker::new();
    let mut backoff = backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(5),
        max_elapsed_time: None,
        ..Default::default()
    };
    let mut draining = None;
    'outer: while !cancel.is_cancelled() {
        let channel = match broker.consumer_channel(prefetch).await {
            Ok(c) => c,
            Err(e) => {
                let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                tracing::warn!(queue, error = %e, "cannot consume yet; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let tag = format!("herald-{}", crate::ids::random_base62(10));
        let mut consumer = match channel
            .basic_consume(
                queue,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(queue, error = %e, "basic.consume failed; retrying");
                tokio::time::sleep(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await;
                continue;
            }
        };
        backoff.reset();
        tracing::info!(queue, prefetch, "consuming");
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = channel.basic_cancel(&tag, BasicCancelOptions::default()).await;
                    // The channel must stay open while draining: in-flight handlers ack on it.
                    draining = Some(channel);
                    break 'outer;
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let handler = handler.clone();
                    let broker = broker.clone();
                    tracker.spawn(async move {
                        let acker = delivery.acker.clone();
                        // Kept for the panic path: the handler consumes the delivery.
                        let copy = (delivery.data.clone(), delivery.properties.clone());
                        let requeue = match AssertUnwindSafe(handler(delivery)).catch_unwind().await
                        {
                            Ok(Handled::Acked) => return,
                            Ok(Handled::Requeue { reason }) => {
                                tracing::warn!(queue, %reason, "handing a message back to the queue");
                                tokio::time::sleep(REQUEUE_PAUSE).await;
                                true
                            }
                            Ok(Handled::Release) => true,
                            Err(_) => {
                                metrics::counter!("herald_handler_panics_total", "queue" => queue)
                                    .increment(1);
                                tokio::time::sleep(REQUEUE_PAUSE).await;
                                match set_aside_after_panic(&broker, queue, copy).await {
                                    Ok(()) => {
                                        let _ = acker.ack(BasicAckOptions::default()).await;
                                        return;
                                    }
                                    Err(e) => {
                                        tracing::error!(queue, error = %e, "cannot set a crashing message aside; requeueing it");
                                        true
                                    }
                                }
                            }
                        };
                        let _ = acker
                            .nack(BasicNackOptions {
                                requeue,
                                ..Default::default()
                            })
                            .await;
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(queue, error = %e, "consumer stream failed; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!(queue, "consumer stream ended; reconnecting");
                    break;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(backoff.next_backoff().unwrap_or(Duration::from_secs(1))) => {}
        }
    }
    tracker.close();
    if tokio::time::timeout(drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            queue,
            "drain timeout: unfinished messages go back to the queue"
        );
    }
    if let Some(channel) = draining {
        // Closing hands back whatever is still unacknowledged (prefetched, never started).
        let _ = channel.close(200, "drained").await;
    }
}

/// Header counting how often a message crashed its handler.
const PANICS_HEADER: &str = "herald-panics";

/// A message whose handler panicked (a bug, not an outage). The first time it goes back to its
/// queue with a count in a header (the crash may have been about this process); the second
/// time it is set aside in quarantine with its reason, so it neither loops nor blocks others.
/// Either way it is published (and confirmed) before the original is acked.
async fn set_aside_after_panic(
    broker: &Broker,
    queue: &str,
    (body, properties): (Vec<u8>, lapin::BasicProperties),
) -> Result<(), super::BrokerError> {
    use lapin::types::AMQPValue;
    let mut headers = properties.headers().clone().unwrap_or_default();
    let panics = match headers.inner().get(PANICS_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        _ => 0,
    } + 1;
    headers.insert(PANICS_HEADER.into(), AMQPValue::LongLongInt(panics));
    if panics < 2 {
        tracing::error!(
            queue,
            "message handler panicked; trying the message once more"
        );
        let properties = properties.with_headers(headers);
        // The default exchange routes by queue name: straight back to the same queue.
        return broker.publish("", queue, &body, properties).await;
    }
    tracing::error!(
        queue,
        "message handler panicked again; setting the message aside"
    );
    headers.insert(
        super::REASON_HEADER.into(),
        AMQPValue::LongString(format!("the {queue} handler crashed on this message twice").into()),
    );
    headers.insert(
        "herald-queue".into(),
        AMQPValue::LongString(queue.to_string().into()),
    );
    metrics::counter!("herald_quarantined_total", "reason" => "handler_panicked").increment(1);
    broker
        .publish(
            super::topology::QUARANTINE_EXCHANGE,
            "",
            &body,
            properties.with_headers(headers),
        )
        .await
}
