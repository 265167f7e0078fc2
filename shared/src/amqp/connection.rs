//! One broker connection per process, re-established with backoff when it drops, and a
//! confirm-mode channel that many tasks publish on at once (their confirms pipeline instead of
//! waiting for each other).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::{CommonSettings, QueueType};

/// How long a connection attempt may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a publish may wait for the broker's confirm (a blocked or wedged broker) before it
/// counts as failed. The message may still be confirmed later: the caller's retry makes a
/// duplicate, never a loss.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest frame a connection asks the broker for, unless the URL names one
/// (`?frame_max=`). lapin keeps 32 frames of buffer each way per connection, zeroed when the
/// connection opens: at RabbitMQ's default of 128 KiB that is 8 MiB resident in every process,
/// at 32 KiB 2 MiB. A larger body goes as several frames.
pub const FRAME_MAX: u32 = 32 * 1024;

/// How often a publish waiting for its confirm looks whether the broker blocked the connection.
const BLOCKED_CHECK: Duration = Duration::from_millis(50);

/// The error of a publish the broker will not take now (a memory or disk alarm). The message
/// may still be confirmed once the alarm clears: the caller's retry makes a duplicate, never a
/// loss.
fn blocked() -> BrokerError {
    BrokerError::Unavailable("the broker is blocking publishers (a memory or disk alarm)".into())
}

/// The broker could not take a message or a command.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection right now (the supervisor keeps trying).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a publish (negative acknowledgement).
    #[error("broker did not confirm the message")]
    Nacked,
    /// No queue is bound for the message.
    #[error("message was unroutable on exchange {0}")]
    Unroutable(String),
    /// A protocol or I/O error.
    #[error("broker: {0}")]
    Lapin(#[from] lapin::Error),
    /// Declaring the topology failed.
    #[error(transparent)]
    Topology(#[from] super::topology::TopologyError),
}

struct Live {
    connection: Arc<Connection>,
    publisher: Channel,
}

/// A reconnecting broker connection.
pub struct Broker {
    url: SecretString,
    queue_type: QueueType,
    dead_retention: Duration,
    name: String,
    live: Mutex<Option<Live>>,
    ready: AtomicBool,
}

impl Broker {
    /// A broker handle; nothing is connected until first use or [`Broker::supervise`].
    pub fn new(settings: &CommonSettings, name: &str) -> Arc<Self> {
        Arc::new(Self {
            url: settings.amqp_url.clone(),
            queue_type: settings.queue_type,
            dead_retention: settings.retention,
            name: name.to_string(),
            live: Mutex::new(None),
            ready: AtomicBool::new(false),
        })
    }

    /// True while connected with the topology declared.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Runs one step of talking to the broker with the connect timeout: a wedged broker makes it
    /// fail instead of hanging whoever waits on it.
    async fn bounded<T>(
        what: &str,
        step: impl std::future::Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        tokio::time::timeout(CONNECT_TIMEOUT, step)
            .await
            .map_err(|_| BrokerError::Unavailable(format!("{what} timed out")))?
    }

    /// A confirm-mode channel to publish on.
    async fn publisher_channel(connection: &Connection) -> Result<Channel, BrokerError> {
        Self::bounded("opening the publisher channel", async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok(channel)
        })
        .await
    }

    async fn connect(&self) -> Result<Live, BrokerError> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name(self.name.clone().into());
        let mut uri: AMQPUri = self
            .url
            .expose_secret()
            .parse()
            .map_err(|e| BrokerError::Unavailable(format!("invalid broker URL: {e}")))?;
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, props))
            .await
            .map_err(|_| BrokerError::Unavailable("connection attempt timed out".into()))??;
        Self::bounded("declaring the topology", async {
            super::topology::declare(&connection, self.queue_type, self.dead_retention).await?;
            Ok(())
        })
        .await?;
        let publisher = Self::publisher_channel(&connection).await?;
        Ok(Live {
            connection: Arc::new(connection),
            publisher,
        })
    }

    /// The live connection and publisher channel, connecting once if there is none.
    async fn live(&self) -> Result<(Arc<Connection>, Channel), BrokerError> {
        let mut guard = self.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.connection.status().connected() && live.publisher.status().connected() {
                return Ok((live.connection.clone(), live.publisher.clone()));
            }
            if live.connection.status().connected() {
                // Only the publisher channel died (e.g. a refused publish): open another.
                let publisher = Self::publisher_channel(&live.connection).await?;
                let connection = live.connection.clone();
                *guard = Some(Live {
                    connection: connection.clone(),
                    publisher: publisher.clone(),
                });
                return Ok((connection, publisher));
            }
            tracing::warn!("broker connection lost");
            metrics::counter!("herald_broker_disconnects_total").increment(1);
            self.set_ready(false);
            *guard = None;
        }
        match self.connect().await {
            Ok(live) => {
                let out = (live.connection.clone(), live.publisher.clone());
                *guard = Some(live);
                self.set_ready(true);
                tracing::info!("connected to the broker, topology declared");
                Ok(out)
            }
            Err(e) => {
                self.set_ready(false);
                Err(e)
            }
        }
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        metrics::gauge!("herald_broker_connected").set(if ready { 1.0 } else { 0.0 });
    }

    /// The current connection (to open consumer channels on).
    pub async fn connection(&self) -> Result<Arc<Connection>, BrokerError> {
        self.live().await.map(|(c, _)| c)
    }

    /// Publishes a persistent message and waits for the broker's confirm. With `mandatory`,
    /// a message no queue takes is an error instead of silently dropped.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        // While the broker is away, fail at once (intake answers 503) and leave reconnecting to
        // the supervisor instead of queueing every request behind a connection attempt.
        if !self.is_ready() {
            return Err(BrokerError::Unavailable("not connected".into()));
        }
        let confirmed = self.publish_confirmed(exchange, routing_key, body, properties);
        let timeout = tokio::time::sleep(CONFIRM_TIMEOUT);
        tokio::pin!(confirmed, timeout);
        // The broker blocks a connection when it publishes during a memory or disk alarm, and
        // then holds the confirm until the alarm clears: watch for that instead of waiting.
        // A publish confirmed within the first check (nearly all of them) never looks.
        let mut watch =
            tokio::time::interval_at(tokio::time::Instant::now() + BLOCKED_CHECK, BLOCKED_CHECK);
        loop {
            tokio::select! {
                result = &mut confirmed => return result,
                _ = &mut timeout => {
                    return Err(BrokerError::Unavailable("no confirm from the broker in time".into()))
                }
                _ = watch.tick() => {
                    if self.blocked_now() {
                        return Err(blocked());
                    }
                }
            }
        }
    }

    /// True while the broker blocks this connection's publishers. Never waits for the lock:
    /// the publish being watched may itself be queued for it, unpolled while this runs, and
    /// queueing behind it would hand the lock to a future nobody polls, hanging every publisher
    /// of the process. While the lock is busy the answer is no; the next check looks again.
    fn blocked_now(&self) -> bool {
        self.live.try_lock().is_ok_and(|guard| {
            guard
                .as_ref()
                .is_some_and(|live| live.connection.status().blocked())
        })
    }

    /// The publisher channel as it is now. A publish never connects (the supervisor does, so
    /// requests do not queue behind a connection attempt) and never waits on a broker that
    /// blocks publishers (a memory or disk alarm): both fail at once.
    async fn publisher_now(&self) -> Result<Channel, BrokerError> {
        {
            let guard = self.live.lock().await;
            match guard.as_ref() {
                Some(live) if live.connection.status().connected() => {
                    if live.connection.status().blocked() {
                        return Err(blocked());
                    }
                    if live.publisher.status().connected() {
                        return Ok(live.publisher.clone());
                    }
                }
                _ => {
                    self.set_ready(false);
                    return Err(BrokerError::Unavailable("not connected".into()));
                }
            }
        }
        // Only the publisher channel died (a refused publish): open another, bounded.
        self.live().await.map(|(_, channel)| channel)
    }

    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let channel = self.publisher_now().await?;
        let confirm = channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await?;
        match confirm.await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(BrokerError::Unroutable(exchange.into())),
            Confirmation::Nack(_) => Err(BrokerError::Nacked),
            Confirmation::NotRequested => Err(BrokerError::Unavailable(
                "publisher channel is not in confirm mode".into(),
            )),
        }
    }

    /// Keeps the connection up until cancelled: checks it every second and reconnects with
    /// exponential backoff (500 ms up to 10 s) while the broker is away.
    pub async fn supervise(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(10),
            max_elapsed_time: None,
            ..Default::default()
        };
        loop {
            let wait = match self.live().await {
                Ok(_) => {
                    backoff.reset();
                    Duration::from_secs(1)
                }
                Err(e) => {
                    let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "broker unreachable");
                    wait
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let live = self.live.lock().await.take();
        if let Some(live) = live {
            let _ = live.publisher.close(200, "shutting down").await;
            let _ = live.connection.close(200, "shutting down").await;
        }
        self.set_ready(false);
    }

    /// A channel with a prefetch limit, for consuming.
    pub async fn consumer_channel(&self, prefetch: u16) -> Result<Channel, BrokerError> {
        let connection = self.connection().await?;
        Self::bounded("opening a consumer channel", async {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
                .await?;
            Ok(channel)
        })
        .await
    }

    /// Messages waiting in each queue, for metrics (None when the broker is unreachable; a
    /// queue the broker does not know is left out).
    pub async fn queue_depths(&self, queues: &[String]) -> Option<Vec<(String, u32)>> {
        if !self.is_ready() {
            return None;
        }
        let connection = self.connection().await.ok()?;
        let mut out = Vec::with_capacity(queues.len());
        let mut channel = connection.create_channel().await.ok()?;
        for queue in queues {
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            match channel
                .queue_declare(queue, passive, Default::default())
                .await
            {
                Ok(q) => out.push((queue.clone(), q.message_count())),
                // A failed passive declare closes the channel: open another for the rest.
                Err(_) => channel = connection.create_channel().await.ok()?,
            }
        }
        let _ = channel.close(200, "depths read").await;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use lapin::types::FieldTable;

    /// A vhost of the test's own on the local broker, deleted on drop (also when it fails).
    struct TestVhost(String);

    fn rabbitmqctl(args: &[&str]) {
        let out = std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("rabbitmqctl (RabbitMQ on this machine)");
        assert!(out.status.success(), "rabbitmqctl {args:?} failed");
    }

    impl TestVhost {
        fn new() -> Self {
            let name = format!("herald-unit-{}", uuid::Uuid::new_v4().simple());
            rabbitmqctl(&["add_vhost", &name]);
            let vhost = Self(name);
            rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"]);
            vhost
        }
    }

    impl Drop for TestVhost {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["delete_vhost", &self.0])
                .output();
        }
    }

    /// A publish that has to wait for the connection lock (the supervisor holds it a moment)
    /// while its blocked check comes due must still finish once the lock is free. The check
    /// used to queue for the lock behind its own publish, which it no longer polled: the lock
    /// went to that publish and nobody ever took it, hanging every publisher of the process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_waiting_for_the_lock_survives_its_blocked_check() {
        let vhost = TestVhost::new();
        let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.0);
        let settings = CommonSettings::from_source(&Source::from_pairs([("HERALD_AMQP_URL", url)]))
            .expect("settings");
        let broker = Broker::new(&settings, "unit-test");
        broker.live().await.expect("connected");

        let held = broker.live.lock().await;
        let publishing = tokio::spawn({
            let broker = broker.clone();
            async move {
                broker
                    .publish(
                        "",
                        super::super::topology::JOBS_QUEUE,
                        b"[]",
                        BasicProperties::default(),
                    )
                    .await
            }
        });
        // Several blocked checks come due while the publish waits for the lock.
        tokio::time::sleep(BLOCKED_CHECK * 4).await;
        drop(held);
        let published = tokio::time::timeout(Duration::from_secs(5), publishing)
            .await
            .expect("the publish finished once the lock was free")
            .expect("the publishing task");
        published.expect("the broker confirmed the message");
    }
    /// Connections ask the broker for frames of [`FRAME_MAX`] (its buffers are 32 frames each
    /// way), unless the URL names a size; a body larger than a frame arrives whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_ask_for_small_frames_unless_the_url_names_a_size() {
        let vhost = TestVhost::new();
        let base = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.0);
        for (url, expected) in [
            (base.clone(), FRAME_MAX),
            (format!("{base}?frame_max=65536"), 65_536),
        ] {
            let settings =
                CommonSettings::from_source(&Source::from_pairs([("HERALD_AMQP_URL", url)]))
                    .expect("settings");
            let broker = Broker::new(&settings, "unit-test");
            let connection = broker.connection().await.expect("connected");
            assert_eq!(connection.configuration().frame_max(), expected);

            let channel = connection.create_channel().await.expect("channel");
            let queue = channel
                .queue_declare(
                    "",
                    lapin::options::QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("queue");
            let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            broker
                .publish("", queue.name().as_str(), &body, BasicProperties::default())
                .await
                .expect("confirmed");
            let got = channel
                .basic_get(
                    queue.name().as_str(),
                    lapin::options::BasicGetOptions::default(),
                )
                .await
                .expect("get")
                .expect("the message");
            assert_eq!(
                got.delivery.data, body,
                "a body of several frames arrives whole"
            );
        }
    }
}
