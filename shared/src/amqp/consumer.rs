//! A consume loop that survives the broker going away: it reopens its channel with backoff,
//! hands every delivery to a handler task, and on shutdown stops taking messages and waits for
//! the handlers (up to a drain timeout) so in-flight work finishes or goes back to the queue.
//!
//! The loop owns the acknowledgement: a handler only says what should happen ([`Handled`]) and
//! never sees the acker, so ack, requeue and quarantine are written once, here.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use futures::{FutureExt, StreamExt};
use lapin::acker::Acker;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ByteBudget, Origin, PublishError, Publisher, Rejection};

/// A consumed message as a handler sees it: what it says, not how to acknowledge it.
#[derive(Debug)]
pub struct Message {
    /// The body.
    pub data: Vec<u8>,
    /// Its properties (headers, message id).
    pub properties: BasicProperties,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The queue it was consumed from.
    pub queue: &'static str,
}

/// The queue a consume loop takes from, and how.
#[derive(Debug)]
pub struct ConsumeFrom {
    /// The queue.
    pub queue: &'static str,
    /// Unacknowledged messages held at once.
    pub prefetch: u16,
    /// Bytes of message bodies handled at once, when bounded.
    pub budget: Option<ByteBudget>,
    /// Its messages are handled one after the other, in queue order (prefetch 1): one that
    /// crashed its handler is set aside at once, never published again behind later ones.
    pub in_order: bool,
}

/// What should happen to a message once its handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Done: acknowledge it.
    Ack,
    /// Could not finish now (Redis or broker trouble): handed back to the queue after a pause.
    Requeue {
        /// Why, for the log.
        reason: String,
    },
    /// Not started because the process is shutting down: handed back at once, untouched.
    Release,
    /// Not valid input: set aside in quarantine with its reason, then acknowledged.
    Quarantine(Rejection),
}

/// Pause before a message that could not be handled goes back to the queue, so a Redis outage
/// does not turn into a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Consumes `queue` until `cancel` fires, running `handler` for each message on its own task.
/// The prefetch bounds how many messages are held at once and `budget`, when given, how many
/// bytes of bodies are being handled (a message waits for room before its handler starts and
/// gives its bytes back once settled). What the handler returns is carried out here: ack, nack
/// back to the queue, or quarantine then ack. A handler that panics gets its message once more,
/// then the message goes to quarantine with its reason.
pub async fn consume<H, F>(
    publisher: Publisher,
    from: ConsumeFrom,
    cancel: CancellationToken,
    drain_timeout: Duration,
    handler: H,
) where
    H: Fn(Arc<Message>) -> F + Send + Sync + 'static,
    F: Future<Output = Handled> + Send + 'static,
{
    let ConsumeFrom {
        queue,
        prefetch,
        budget,
        in_order,
    } = from;
    let broker = publisher.broker().clone();
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
        tracing::info!(
            queue,
            prefetch,
            budget_bytes = budget.as_ref().map(ByteBudget::capacity),
            "consuming"
        );
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
                    let held = match &budget {
                        None => None,
                        Some(budget) => tokio::select! {
                            held = budget.take(delivery.data.len()) => Some(held),
                            _ = cancel.cancelled() => {
                                // Not started: closing the channel hands it back with the rest.
                                let _ = channel.basic_cancel(&tag, BasicCancelOptions::default()).await;
                                draining = Some(channel);
                                break 'outer;
                            }
                        },
                    };
                    let handler = handler.clone();
                    let publisher = publisher.clone();
                    let acker = delivery.acker;
                    let message = Arc::new(Message {
                        data: delivery.data,
                        properties: delivery.properties,
                        routing_key: delivery.routing_key.to_string(),
                        queue,
                    });
                    tracker.spawn(async move {
                        let handled = AssertUnwindSafe(handler(message.clone()))
                            .catch_unwind()
                            .await;
                        // Boxed: the task of every prefetched message would otherwise carry
                        // room for settling while its handler runs.
                        Box::pin(settle(&publisher, &acker, &message, handled, in_order)).await;
                        // The body's bytes go back to the budget once the message is settled.
                        drop(held);
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

/// Carries out what the handler decided (or what follows its crash).
async fn settle(
    publisher: &Publisher,
    acker: &Acker,
    message: &Message,
    handled: std::thread::Result<Handled>,
    in_order: bool,
) {
    let queue = message.queue;
    let requeue = match handled {
        Ok(Handled::Ack) => false,
        Ok(Handled::Requeue { reason }) => {
            tracing::warn!(queue, %reason, "handing a message back to the queue");
            tokio::time::sleep(REQUEUE_PAUSE).await;
            true
        }
        Ok(Handled::Release) => true,
        Ok(Handled::Quarantine(rejection)) => {
            let origin = Origin {
                queue,
                routing_key: Some(&message.routing_key),
                workspace_id: None,
            };
            match publisher
                .quarantine(&message.data, &rejection, origin, Some(&message.properties))
                .await
            {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(queue, error = %e, "cannot quarantine a message; requeueing it");
                    tokio::time::sleep(REQUEUE_PAUSE).await;
                    true
                }
            }
        }
        Err(_) => {
            metrics::counter!("herald_handler_panics_total", "queue" => queue).increment(1);
            tokio::time::sleep(REQUEUE_PAUSE).await;
            match set_aside_after_panic(publisher, message, in_order).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::error!(queue, error = %e, "cannot set a crashing message aside; requeueing it");
                    true
                }
            }
        }
    };
    let result = if requeue {
        acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
    } else {
        acker.ack(BasicAckOptions::default()).await
    };
    if let Err(e) = result {
        // The channel is gone: the broker hands the message to another consumer.
        tracing::warn!(queue, error = %e, "cannot settle a message; the broker will redeliver it");
        metrics::counter!("herald_ack_failures_total", "queue" => queue).increment(1);
    }
}

/// A message whose handler panicked (a bug, not an outage). The first time it goes back to its
/// queue with a count in a header (the crash may have been about this process); the second
/// time it is set aside in quarantine with its reason, so it neither loops nor blocks others.
/// A message of a queue consumed `in_order` is set aside at its first crash: published again,
/// it would go behind later ones. Either way it is published (and confirmed) before the
/// original is acked.
async fn set_aside_after_panic(
    publisher: &Publisher,
    message: &Message,
    in_order: bool,
) -> Result<(), PublishError> {
    let queue = message.queue;
    let mut headers = message.properties.headers().clone().unwrap_or_default();
    let panics = match headers.inner().get(PANICS_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        _ => 0,
    } + 1;
    headers.insert(PANICS_HEADER.into(), AMQPValue::LongLongInt(panics));
    let properties = message.properties.clone().with_headers(headers);
    if panics < 2 && !in_order {
        tracing::error!(
            queue,
            "message handler panicked; trying the message once more"
        );
        return publisher
            .again_after_crash(queue, &message.data, properties)
            .await;
    }
    tracing::error!(
        queue,
        panics,
        "message handler panicked; setting the message aside"
    );
    let rejection = Rejection::new(
        "handler_panicked",
        format!("the {queue} handler crashed on this message ({panics} times)"),
    );
    let origin = Origin {
        queue,
        ..Default::default()
    };
    publisher
        .quarantine(&message.data, &rejection, origin, Some(&properties))
        .await
}
