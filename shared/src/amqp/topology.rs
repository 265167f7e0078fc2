//! The broker topology, in one place. Every service declares all of it at start-up and after
//! every reconnect; declarations are idempotent, so the order services start in does not matter.
//!
//! ```text
//! herald.events (topic) --#--> [herald.events] --> router
//! herald.events.ordered (topic) --#--> [herald.events.ordered] --> one router at a time
//!                                  (single active consumer: events of workspaces with an
//!                                  ordered connection, routed in the order they arrived)
//! herald.jobs   (topic) --#--> [herald.jobs]   --> deliverer
//! herald.ladder (topic) --bits of the delay--> [herald.ladder.<2^k>s] --TTL--> herald.ladder.after.<k>
//!     ... down the ladder, lowest set bit last ...  --> [herald.jobs]
//! [herald.events.wait] --TTL 1 s--> herald.events   events another router is expanding
//! herald.dead   (fanout) --> [herald.dead]        jobs whose schedule ran out (archive;
//!                                                  retention, 1M messages, 4 GiB)
//! herald.quarantine (fanout) --> [herald.quarantine]  messages that are not valid input
//!                                                  (100k messages, 1 GiB)
//! ```
//!
//! Queue type: classic version 2 on one node (`HERALD_QUEUE_TYPE=classic`, the default: the
//! fastest there), quorum queues for a cluster (`quorum`: replicated). Queue arguments cannot
//! change on a live queue: moving an installation from one type to the other means new queues
//! (a new vhost), see the runbook.
//!
//! The waiting queues (the delay ladder and `herald.events.wait`) are quorum queues whatever the
//! type, with at-least-once dead-lettering: a message moves on from a rung only once the next
//! queue confirmed it, so a broker killed mid-move loses no waiting retry. (Classic queues
//! dead-letter at most once, without confirms: a SIGKILL of the node lost retries waiting in
//! them.) The ladder before that change was named `herald.retry`/`herald.delay.*`; on an upgraded
//! broker those queues drain into `herald.jobs` by themselves and can be deleted once empty.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

use crate::config::QueueType;
use crate::retry::LADDER_BITS;

/// Producers publish events here (routing key free; workspace in [`super::WORKSPACE_HEADER`]).
pub const EVENTS_EXCHANGE: &str = "herald.events";
/// The router consumes events from here.
pub const EVENTS_QUEUE: &str = "herald.events";
/// Producers publish events here when their order matters (workspaces with an ordered
/// connection): one router at a time consumes them, one message at a time.
pub const EVENTS_ORDERED_EXCHANGE: &str = "herald.events.ordered";
/// The queue of [`EVENTS_ORDERED_EXCHANGE`] (`x-single-active-consumer`).
pub const EVENTS_ORDERED_QUEUE: &str = "herald.events.ordered";
/// Events another router is expanding right now wait here a moment, then go back to
/// [`EVENTS_EXCHANGE`] (so a router never holds a prefetch slot while it waits).
pub const EVENTS_WAIT_QUEUE: &str = "herald.events.wait";
/// How long an event waits in [`EVENTS_WAIT_QUEUE`].
pub const EVENTS_WAIT: Duration = Duration::from_secs(1);
/// The router publishes delivery jobs here.
pub const JOBS_EXCHANGE: &str = "herald.jobs";
/// Deliverers consume jobs from here.
pub const JOBS_QUEUE: &str = "herald.jobs";
/// A delayed job enters the delay ladder here, with [`crate::retry::ladder_routing_key`].
pub const RETRY_EXCHANGE: &str = "herald.ladder";
/// Jobs whose schedule ran out.
pub const DEAD_EXCHANGE: &str = "herald.dead";
/// The dead-letter archive queue.
pub const DEAD_QUEUE: &str = "herald.dead";
/// Messages that are not valid input, set aside with their reason.
pub const QUARANTINE_EXCHANGE: &str = "herald.quarantine";
/// The quarantine queue.
pub const QUARANTINE_QUEUE: &str = "herald.quarantine";

/// The delay queue of rung `bit` (TTL 2^bit seconds).
pub fn delay_queue(bit: u32) -> String {
    format!("{RETRY_EXCHANGE}.{}s", 1u64 << bit)
}

/// The exchange a rung's expired messages go to. `after(LADDER_BITS)` is the ladder's entry.
fn after_exchange(bit: u32) -> String {
    if bit == LADDER_BITS {
        RETRY_EXCHANGE.to_string()
    } else {
        format!("{RETRY_EXCHANGE}.after.{bit}")
    }
}

/// Every queue whose depth an operator watches.
pub fn all_queues() -> Vec<String> {
    let mut q = vec![
        EVENTS_QUEUE.to_string(),
        EVENTS_ORDERED_QUEUE.to_string(),
        EVENTS_WAIT_QUEUE.to_string(),
        JOBS_QUEUE.to_string(),
        DEAD_QUEUE.to_string(),
        QUARANTINE_QUEUE.to_string(),
    ];
    q.extend((0..LADDER_BITS).map(delay_queue));
    q
}

/// A declaration the broker refused.
#[derive(Debug, thiserror::Error)]
#[error("declaring {what}: {source}{}", hint(source))]
pub struct TopologyError {
    what: String,
    #[source]
    source: lapin::Error,
}

/// What to do when a queue exists with other arguments (an older Herald, or another
/// `HERALD_QUEUE_TYPE`): RabbitMQ never changes a live queue's arguments.
fn hint(source: &lapin::Error) -> &'static str {
    if source.to_string().contains("inequivalent arg") {
        " (the queue exists with other arguments, from another Herald version or \
         HERALD_QUEUE_TYPE; RabbitMQ cannot change them in place: use a new vhost and drain the \
         old one, see docs/operations.md, \"Drain and upgrade without loss\")"
    } else {
        ""
    }
}

/// Binding patterns of the ladder: on exchange `after(k)`, rung j < k gets the messages whose
/// bit j is the highest set bit below k; the jobs queue gets those with no bit set below k.
/// Returns (exchange, queue, pattern) triples.
pub fn ladder_bindings() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for k in 0..=LADDER_BITS {
        let exchange = after_exchange(k);
        for j in 0..k {
            let pattern = (0..LADDER_BITS)
                .rev()
                .map(|b| match b {
                    b if b >= k => "*",
                    b if b > j => "0",
                    b if b == j => "1",
                    _ => "*",
                })
                .collect::<Vec<_>>()
                .join(".");
            out.push((exchange.clone(), delay_queue(j), pattern));
        }
        let pattern = (0..LADDER_BITS)
            .rev()
            .map(|b| if b >= k { "*" } else { "0" })
            .collect::<Vec<_>>()
            .join(".");
        out.push((exchange, JOBS_QUEUE.to_string(), pattern));
    }
    out
}

fn queue_args(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    match queue_type {
        QueueType::Classic => args.insert("x-queue-version".into(), AMQPValue::LongInt(2)),
        QueueType::Quorum => args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        ),
    }
    args
}

/// The arguments of a queue whose messages wait `ttl`, then move on to `exchange`: a quorum
/// queue that dead-letters at least once (see the module's top).
fn delay_args(ttl: Duration, exchange: &str) -> FieldTable {
    let mut args = queue_args(QueueType::Quorum);
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(ttl.as_millis() as i64),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.into()),
    );
    // Without these, a quorum queue dead-letters at most once; with them, at least once.
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    args
}

/// Most messages and bytes a queue that only collects (and is read by people) may hold: past
/// them the oldest are dropped, so a flood of bad input or failing deliveries cannot fill the
/// broker's disk. (The dead-letter index in Redis, which the API reads, is not affected.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `x-max-length`.
    pub messages: i64,
    /// `x-max-length-bytes`.
    pub bytes: i64,
}

/// The dead-letter archive's limits (each message also expires after `HERALD_RETENTION`).
pub const DEAD_LIMITS: QueueLimits = QueueLimits {
    messages: 1_000_000,
    bytes: 4 << 30,
};

/// The quarantine's limits.
pub const QUARANTINE_LIMITS: QueueLimits = QueueLimits {
    messages: 100_000,
    bytes: 1 << 30,
};

fn with_limits(mut args: FieldTable, limits: QueueLimits) -> FieldTable {
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(limits.messages),
    );
    args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(limits.bytes),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    args
}

/// Declares a queue with its limits. A queue declared by an earlier version without them
/// cannot take them in place (RabbitMQ refuses other arguments for a live queue, closing the
/// channel): it is then declared as it was, with a warning that names the policy that applies
/// the same limits to it.
async fn declare_bounded(
    connection: &Connection,
    name: &str,
    args: FieldTable,
    limits: QueueLimits,
) -> Result<(), TopologyError> {
    let err = |source| TopologyError {
        what: name.to_string(),
        source,
    };
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let channel = connection.create_channel().await.map_err(err)?;
    let bounded = channel
        .queue_declare(name, queue, with_limits(args.clone(), limits))
        .await;
    match bounded {
        Ok(_) => {
            let _ = channel.close(200, "declared").await;
            Ok(())
        }
        Err(e) if e.to_string().contains("inequivalent arg") => {
            tracing::warn!(
                queue = name,
                "the queue exists without its length limit (declared by an earlier version); \
                 apply it with: rabbitmqctl set_policy herald-limits '^herald\\.(dead|quarantine)$' \
                 '{{\"max-length\":{},\"max-length-bytes\":{},\"overflow\":\"drop-head\"}}' \
                 --apply-to queues",
                limits.messages,
                limits.bytes
            );
            let channel = connection.create_channel().await.map_err(err)?;
            channel
                .queue_declare(name, queue, args)
                .await
                .map_err(err)?;
            let _ = channel.close(200, "declared").await;
            Ok(())
        }
        Err(e) => Err(err(e)),
    }
}

/// Declares every exchange, queue and binding. Safe to call again at any time.
pub async fn declare(
    connection: &Connection,
    queue_type: QueueType,
    dead_retention: Duration,
) -> Result<(), TopologyError> {
    let channel = &connection
        .create_channel()
        .await
        .map_err(|source| TopologyError {
            what: "a channel".into(),
            source,
        })?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let err = |what: &str| {
        let what = what.to_string();
        move |source| TopologyError { what, source }
    };
    for (name, kind) in [
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (EVENTS_ORDERED_EXCHANGE, ExchangeKind::Topic),
        (JOBS_EXCHANGE, ExchangeKind::Topic),
        (DEAD_EXCHANGE, ExchangeKind::Fanout),
        (QUARANTINE_EXCHANGE, ExchangeKind::Fanout),
    ] {
        channel
            .exchange_declare(name, kind, durable, FieldTable::default())
            .await
            .map_err(err(name))?;
    }
    for k in 0..=LADDER_BITS {
        let name = after_exchange(k);
        channel
            .exchange_declare(&name, ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(err(&name))?;
    }

    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for name in [EVENTS_QUEUE, JOBS_QUEUE] {
        channel
            .queue_declare(name, queue, queue_args(queue_type))
            .await
            .map_err(err(name))?;
    }
    // One router at a time takes the ordered events (the others stand by), so they are routed
    // in the order the queue holds them.
    let mut ordered_args = queue_args(queue_type);
    ordered_args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    channel
        .queue_declare(EVENTS_ORDERED_QUEUE, queue, ordered_args)
        .await
        .map_err(err(EVENTS_ORDERED_QUEUE))?;
    let mut dead_args = queue_args(queue_type);
    dead_args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(dead_retention.as_millis().min(i64::MAX as u128) as i64),
    );
    declare_bounded(connection, DEAD_QUEUE, dead_args, DEAD_LIMITS).await?;
    declare_bounded(
        connection,
        QUARANTINE_QUEUE,
        queue_args(queue_type),
        QUARANTINE_LIMITS,
    )
    .await?;
    for bit in 0..LADDER_BITS {
        let name = delay_queue(bit);
        let ttl = Duration::from_secs(1 << bit);
        let args = delay_args(ttl, &after_exchange(bit));
        channel
            .queue_declare(&name, queue, args)
            .await
            .map_err(err(&name))?;
    }
    let args = delay_args(EVENTS_WAIT, EVENTS_EXCHANGE);
    channel
        .queue_declare(EVENTS_WAIT_QUEUE, queue, args)
        .await
        .map_err(err(EVENTS_WAIT_QUEUE))?;

    let bind = |queue: String, exchange: String, key: String| async move {
        channel
            .queue_bind(
                &queue,
                &exchange,
                &key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err(&format!("binding {queue} to {exchange}")))
    };
    bind(EVENTS_QUEUE.into(), EVENTS_EXCHANGE.into(), "#".into()).await?;
    bind(
        EVENTS_ORDERED_QUEUE.into(),
        EVENTS_ORDERED_EXCHANGE.into(),
        "#".into(),
    )
    .await?;
    bind(JOBS_QUEUE.into(), JOBS_EXCHANGE.into(), "#".into()).await?;
    bind(DEAD_QUEUE.into(), DEAD_EXCHANGE.into(), String::new()).await?;
    bind(
        QUARANTINE_QUEUE.into(),
        QUARANTINE_EXCHANGE.into(),
        String::new(),
    )
    .await?;
    for (exchange, queue, pattern) in ladder_bindings() {
        bind(queue, exchange, pattern).await?;
    }
    let _ = channel.close(200, "topology declared").await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{ladder_path, ladder_routing_key};

    /// Follows a routing key through the bindings as the broker would (topic `*` matches one
    /// word), returning the queues visited until the jobs queue.
    fn walk(key: &str) -> Vec<String> {
        let bindings = ladder_bindings();
        let words: Vec<&str> = key.split('.').collect();
        let mut exchange = RETRY_EXCHANGE.to_string();
        let mut visited = Vec::new();
        loop {
            let targets: Vec<&(String, String, String)> = bindings
                .iter()
                .filter(|(e, _, p)| {
                    *e == exchange
                        && p.split('.')
                            .zip(&words)
                            .all(|(pw, w)| pw == "*" || pw == *w)
                })
                .collect();
            assert_eq!(
                targets.len(),
                1,
                "exactly one route from {exchange} for {key}"
            );
            let queue = targets[0].1.clone();
            visited.push(queue.clone());
            if queue == JOBS_QUEUE {
                return visited;
            }
            let bit: u32 = (0..LADDER_BITS)
                .find(|b| delay_queue(*b) == queue)
                .expect("a rung");
            exchange = after_exchange(bit);
        }
    }

    #[test]
    fn every_delay_walks_its_bits_down_to_the_jobs_queue() {
        for secs in [0u64, 1, 2, 3, 5, 8, 300, 1800, 7200, 36_000, 131_071] {
            let d = Duration::from_secs(secs);
            let visited = walk(&ladder_routing_key(d));
            let mut expected: Vec<String> = ladder_path(d).into_iter().map(delay_queue).collect();
            expected.push(JOBS_QUEUE.to_string());
            assert_eq!(visited, expected, "delay {secs}s");
        }
    }
}
