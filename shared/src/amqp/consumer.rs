//! A consume loop that survives the broker going away: it reopens its channel with backoff,
//! hands every delivery to a handler task, and on shutdown stops taking messages and waits for
//! the handlers (up to a drain timeout) so in-flight work finishes or goes back to the queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use futures::StreamExt;
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
}

/// Pause before a message that could not be handled goes back to the queue, so a Redis outage
/// does not turn into a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Consumes `queue` until `cancel` fires, running `handler` for each delivery on its own task.
/// The prefetch bounds how many run at once. The handler acks; a `Requeue` is nacked back.
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
                    break 'outer;
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let handler = handler.clone();
                    tracker.spawn(async move {
                        let acker = delivery.acker.clone();
                        if let Handled::Requeue { reason } = handler(delivery).await {
                            tracing::warn!(queue, %reason, "handing a message back to the queue");
                            tokio::time::sleep(REQUEUE_PAUSE).await;
                            let _ = acker
                                .nack(BasicNackOptions {
                                    requeue: true,
                                    ..Default::default()
                                })
                                .await;
                        }
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
}
