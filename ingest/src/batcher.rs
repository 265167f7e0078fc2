//! Group commit for single-event intake: events sent one per request by many clients at once go
//! to the broker together, as one message per workspace, and each request is answered 202 when
//! the message holding its event is confirmed. Under light load a batch is one event (no wait is
//! added); under heavy load the batch grows while the one before waits for its confirm, so the
//! broker sees far fewer messages than requests, and the router fewer messages than events
//! (each message costs it a few Redis round trips and a confirm, whatever its size).

use std::collections::HashMap;
use std::sync::Arc;

use herald_shared::amqp::{BrokerError, Publisher};
use herald_shared::model::Event;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most events in one batch.
const MAX_BATCH: usize = 500;
/// Most bytes of payload in one batch, far below the broker's largest message (128 MiB by
/// default): 500 events of up to `HERALD_MAX_EVENT_BYTES` each would not be.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches waiting for their confirms at once; while all are out, new events gather. One: with
/// 64 clients, 8 at once made messages of 3.5-4.5 events, and routing them, not intake, bounded
/// single-event traffic (e2e-single 0.17x and 0.21x of the broker hop with 8, 0.27x and 0.33x
/// with 1, alternating in one session: see the README's performance section).
const IN_FLIGHT: usize = 1;

struct Item {
    workspace_id: String,
    /// Whether it goes to the ordered events queue.
    ordered: bool,
    event: Event,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle requests publish through.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Item>,
}

impl Batcher {
    /// Starts the batching task; it ends when every handle is dropped.
    pub fn start(publisher: Publisher) -> Self {
        let (tx, rx) = mpsc::channel(8 * MAX_BATCH);
        tokio::spawn(run(publisher, rx));
        Self { tx }
    }

    /// Publishes one event (to the ordered events queue when `ordered`) and waits for the
    /// broker's confirm of the message that holds it.
    pub async fn publish(
        &self,
        workspace_id: &str,
        event: Event,
        ordered: bool,
    ) -> Result<(), BrokerError> {
        // Fail at once while the broker is away, as a direct publish would.
        let (done, confirmed) = oneshot::channel();
        let item = Item {
            workspace_id: workspace_id.to_string(),
            ordered,
            event,
            done,
        };
        if self.tx.send(item).await.is_err() {
            return Err(BrokerError::Unavailable("intake is shutting down".into()));
        }
        match confirmed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::Unavailable(e)),
            Err(_) => Err(BrokerError::Unavailable("intake is shutting down".into())),
        }
    }
}

async fn run(publisher: Publisher, mut rx: mpsc::Receiver<Item>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Wait for a free slot first: events that arrive meanwhile make the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = first.event.payload.get().len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(item) => {
                    bytes += item.event.payload.get().len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut by_workspace: HashMap<(String, bool), Vec<Item>> = HashMap::new();
            for item in batch {
                by_workspace
                    .entry((item.workspace_id.clone(), item.ordered))
                    .or_default()
                    .push(item);
            }
            futures::future::join_all(
                by_workspace
                    .into_iter()
                    .map(|((ws, ordered), items)| publish(&publisher, ws, ordered, items)),
            )
            .await;
        });
    }
}

async fn publish(publisher: &Publisher, workspace_id: String, ordered: bool, items: Vec<Item>) {
    let events: Vec<&Event> = items.iter().map(|i| &i.event).collect();
    let started = std::time::Instant::now();
    let result = if ordered {
        publisher.events_ordered(&workspace_id, &events).await
    } else {
        publisher.events(&workspace_id, &events).await
    };
    let result = result.map_err(|e| e.to_string());
    metrics::histogram!("herald_intake_confirm_seconds").record(started.elapsed().as_secs_f64());
    for item in items {
        let _ = item.done.send(result.clone());
    }
}
