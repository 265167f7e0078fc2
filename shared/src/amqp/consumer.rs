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
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
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
/// handler that panics gets its message once more, then the message goes to quarantine.
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
                    tracker.spawn(async move {
                        let acker = delivery.acker.clone();
                        let redelivered = delivery.redelivered;
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
                                // A bug, not an outage. Try once more (the crash may have been
                                // about this process); a message that crashes its handler again
                                // is set aside in quarantine by the queue's dead-letter exchange.
                                tracing::error!(queue, redelivered, "message handler panicked");
                                metrics::counter!("herald_handler_panics_total", "queue" => queue)
                                    .increment(1);
                                tokio::time::sleep(REQUEUE_PAUSE).await;
                                !redelivered
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
