//! The yardstick: one raw RabbitMQ hop measured in the same run, so Herald's figures can be read
//! as ratios of what the broker itself does on this machine right now.
//!
//! A producer publishes persistent (`delivery_mode=2`) 400-byte messages with publisher
//! confirms, keeping up to `window` unconfirmed at once; a consumer on its own connection takes
//! them with manual acknowledgements, one `basic.ack` per message (not `multiple`, as Herald's
//! services ack), with a prefetch of 500. Both run at once; the rate is messages over the time
//! from the first publish to the last ack.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Prefetch of the hop's consumer.
pub const PREFETCH: u16 = 500;

/// What the hop measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HopReport {
    /// `classic` (version 2) or `quorum`.
    pub queue_type: String,
    /// Messages sent and received.
    pub messages: u64,
    /// Body size, bytes.
    pub message_bytes: usize,
    /// Unconfirmed publishes allowed at once.
    pub confirm_window: usize,
    /// Consumer prefetch.
    pub prefetch: u16,
    /// How acks were sent.
    pub ack_mode: &'static str,
    /// Seconds from the first publish to the last confirm.
    pub publish_seconds: f64,
    /// Seconds from the first publish to the last ack.
    pub seconds: f64,
    /// Messages per second through the hop (publish, confirm, deliver, ack).
    pub messages_per_s: f64,
    /// Publishes confirmed per second.
    pub confirms_per_s: f64,
}

async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .with_context(|| format!("connecting to the broker for the {name}"))
}

/// Runs the hop on a fresh queue in the run's vhost and deletes the queue afterwards.
pub async fn run(
    amqp_url: &str,
    quorum: bool,
    messages: u64,
    window: usize,
) -> anyhow::Result<HopReport> {
    const BYTES: usize = 400;
    let queue = "herald-load.hop";
    let producer = connect(amqp_url, "herald-load hop producer").await?;
    let consumer_conn = connect(amqp_url, "herald-load hop consumer").await?;
    let pub_ch = producer.create_channel().await?;
    let mut args = FieldTable::default();
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    } else {
        args.insert("x-queue-version".into(), AMQPValue::LongInt(2));
    }
    pub_ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .context("declaring the hop queue")?;
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let sub_ch = consumer_conn.create_channel().await?;
    sub_ch
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut deliveries = sub_ch
        .basic_consume(
            queue,
            "herald-load-hop",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut got = 0u64;
        while got < messages {
            match tokio::time::timeout(Duration::from_secs(30), deliveries.next()).await {
                Ok(Some(Ok(d))) => {
                    d.ack(BasicAckOptions::default()).await?;
                    got += 1;
                }
                Ok(Some(Err(e))) => return Err(anyhow::Error::from(e)),
                Ok(None) => bail!("the hop consumer was cancelled after {got} messages"),
                Err(_) => bail!("the hop consumer saw nothing for 30 s after {got} messages"),
            }
        }
        Ok(started.elapsed())
    });

    let body = vec![b'x'; BYTES];
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut pending = VecDeque::with_capacity(window);
    let mut nacked = 0u64;
    for _ in 0..messages {
        if pending.len() >= window {
            if let Some(c) = pending.pop_front() {
                nacked += u64::from(!is_ack(c).await?);
            }
        }
        let confirm = pub_ch
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?;
        pending.push_back(confirm);
    }
    for c in pending {
        nacked += u64::from(!is_ack(c).await?);
    }
    let published = started.elapsed();
    if nacked > 0 {
        bail!("the broker refused {nacked} hop messages");
    }
    let consumed = consume.await.context("hop consumer")??;
    let _ = pub_ch
        .queue_delete(queue, QueueDeleteOptions::default())
        .await;
    let _ = producer.close(200, "done").await;
    let _ = consumer_conn.close(200, "done").await;
    let seconds = consumed.as_secs_f64();
    Ok(HopReport {
        queue_type: if quorum { "quorum" } else { "classic v2" }.into(),
        messages,
        message_bytes: BYTES,
        confirm_window: window,
        prefetch: PREFETCH,
        ack_mode: "one basic.ack per message",
        publish_seconds: published.as_secs_f64(),
        seconds,
        messages_per_s: messages as f64 / seconds,
        confirms_per_s: messages as f64 / published.as_secs_f64(),
    })
}

async fn is_ack(c: lapin::publisher_confirm::PublisherConfirm) -> anyhow::Result<bool> {
    Ok(matches!(c.await?, Confirmation::Ack(_)))
}
