//! The disk tier of the delivery history: PostgreSQL, when `HERALD_ARCHIVE_URL` is set.
//!
//! An event's compact record (see `store::record`) moves here from Redis once every delivery
//! of it is final and it is older than `HERALD_HOT_WINDOW` (the router moves it, see
//! `store::archiving`). A row keeps the position the event had in its workspace's log (`log_ms`,
//! `log_seq`), so a list walks from Redis into the archive in one order, without a seam.
//!
//! The table is partitioned by range of `log_ms`, a partition per `HERALD_ARCHIVE_PARTITION`
//! (one day by default); a partition is dropped whole once it is older than `HERALD_RETENTION`.
//! The schema is migrated at start-up, versioned (`herald_migrations`) and under an advisory
//! lock, so replicas starting together migrate once.
//!
//! PostgreSQL may be down: the connection is made on first use and made again after a failure,
//! and every call is bounded in time, so a stopped database costs a failed call, never a stall.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// Every archive call gives up after this long (connecting included).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Migrations, in order; version `i + 1` is `MIGRATIONS[i]`. Never edit one that shipped: add.
/// Each is a list of statements, applied in one transaction.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE herald_history (
        workspace_id text NOT NULL,
        log_ms bigint NOT NULL,
        log_seq bigint NOT NULL,
        uuid text NOT NULL,
        time_created bigint NOT NULL,
        record text NOT NULL,
        PRIMARY KEY (workspace_id, log_ms, log_seq)
    ) PARTITION BY RANGE (log_ms)",
    "CREATE INDEX herald_history_uuid ON herald_history (uuid, workspace_id)",
]];

/// Advisory lock key taken while migrating or adding partitions.
const LOCK: i64 = 0x6865_7261_6c64; // "herald"

/// An archive call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// PostgreSQL answered with an error or the connection failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// PostgreSQL did not answer in time.
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
}

/// One event's history as archived.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The workspace.
    pub workspace_id: String,
    /// Its log entry's id, milliseconds part.
    pub log_ms: i64,
    /// Its log entry's id, sequence part.
    pub log_seq: i64,
    /// The event uuid.
    pub uuid: String,
    /// The event's `time_created` (Unix ms).
    pub time_created: i64,
    /// The compact record, as Redis held it.
    pub record: String,
}

/// The archive: a PostgreSQL connection made on demand.
pub struct Archive {
    url: SecretString,
    partition_ms: i64,
    retention_ms: i64,
    client: Mutex<Option<Arc<Client>>>,
    partitions: std::sync::Mutex<HashSet<i64>>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("partition_ms", &self.partition_ms)
            .finish_non_exhaustive()
    }
}

async fn bounded<T, F>(f: F) -> Result<T, ArchiveError>
where
    F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ArchiveError::Timeout(CALL_TIMEOUT)),
    }
}

impl Archive {
    /// An archive at `url` (not connected yet) with partitions of `partition` and rows kept
    /// for `retention`.
    pub fn new(url: SecretString, partition: Duration, retention: Duration) -> Self {
        Self {
            url,
            partition_ms: partition.as_millis().max(1) as i64,
            retention_ms: retention.as_millis() as i64,
            client: Mutex::new(None),
            partitions: std::sync::Mutex::new(HashSet::new()),
        }
    }

    /// The connection, made (and the schema migrated) if there is none or it failed.
    async fn client(&self) -> Result<Arc<Client>, ArchiveError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *slot = None;
        let (client, connection) =
            bounded(tokio_postgres::connect(self.url.expose_secret(), NoTls)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "archive: the PostgreSQL connection closed");
            }
        });
        migrate(&client).await?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `f` on the connection; a failed connection is dropped, to be made again next call.
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, ArchiveError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        let result = bounded(f(client.clone())).await;
        if result.is_err() {
            let mut slot = self.client.lock().await;
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                *slot = None;
            }
        }
        result
    }

    /// How often partitions past the retention are looked for: half a partition, 5 s to 60 s.
    pub fn drop_every(&self) -> Duration {
        Duration::from_millis((self.partition_ms / 2) as u64)
            .clamp(Duration::from_secs(5), Duration::from_secs(60))
    }

    /// True when PostgreSQL answers.
    pub async fn ping(&self) -> bool {
        self.with(|c| async move { c.simple_query("SELECT 1").await.map(|_| ()) })
            .await
            .is_ok()
    }

    /// The first ms of the partition holding `ms`.
    fn partition_start(&self, ms: i64) -> i64 {
        ms.div_euclid(self.partition_ms) * self.partition_ms
    }

    /// Writes rows, in one statement; rows already there are left as they are (a move that
    /// was cut short is made again without writing twice).
    pub async fn insert(&self, rows: &[Row]) -> Result<(), ArchiveError> {
        if rows.is_empty() {
            return Ok(());
        }
        let starts: HashSet<i64> = rows
            .iter()
            .map(|r| self.partition_start(r.log_ms))
            .collect();
        let missing: Vec<i64> = {
            let known = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            starts.into_iter().filter(|s| !known.contains(s)).collect()
        };
        if !missing.is_empty() {
            self.create_partitions(&missing).await?;
        }
        let ws: Vec<&str> = rows.iter().map(|r| r.workspace_id.as_str()).collect();
        let ms: Vec<i64> = rows.iter().map(|r| r.log_ms).collect();
        let seq: Vec<i64> = rows.iter().map(|r| r.log_seq).collect();
        let uuid: Vec<&str> = rows.iter().map(|r| r.uuid.as_str()).collect();
        let created: Vec<i64> = rows.iter().map(|r| r.time_created).collect();
        let record: Vec<&str> = rows.iter().map(|r| r.record.as_str()).collect();
        self.with(|c| async move {
            c.execute(
                "INSERT INTO herald_history \
                 (workspace_id, log_ms, log_seq, uuid, time_created, record) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], \
                 $5::int8[], $6::text[]) ON CONFLICT DO NOTHING",
                &[&ws, &ms, &seq, &uuid, &created, &record],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn create_partitions(&self, starts: &[i64]) -> Result<(), ArchiveError> {
        let len = self.partition_ms;
        let statements: String = starts
            .iter()
            .map(|s| {
                format!(
                    "CREATE TABLE IF NOT EXISTS herald_history_{s} PARTITION OF herald_history \
                     FOR VALUES FROM ({s}) TO ({});",
                    s + len
                )
            })
            .collect();
        self.with(|c| async move {
            c.batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({LOCK}); {statements} COMMIT;"
            ))
            .await
        })
        .await?;
        let mut known = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(starts.iter().copied());
        Ok(())
    }

    /// Drops the partitions that hold nothing younger than the retention: a drop, not a
    /// DELETE. Answers how many went.
    pub async fn drop_expired(&self) -> Result<usize, ArchiveError> {
        let cutoff = crate::now_ms() - self.retention_ms;
        let names: Vec<String> = self
            .with(|c| async move {
                let rows = c
                    .query(
                        "SELECT c.relname FROM pg_inherits i \
                         JOIN pg_class c ON c.oid = i.inhrelid \
                         JOIN pg_class p ON p.oid = i.inhparent \
                         WHERE p.relname = 'herald_history'",
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
            })
            .await?;
        let expired: Vec<(String, i64)> = names
            .into_iter()
            .filter_map(|n| {
                let start: i64 = n.strip_prefix("herald_history_")?.parse().ok()?;
                (start + self.partition_ms <= cutoff).then_some((n, start))
            })
            .collect();
        for (name, start) in &expired {
            self.with(|c| async move {
                c.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .await
            })
            .await?;
            tracing::info!(partition = %name, "archive: dropped a partition past the retention");
            let mut known = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            known.remove(start);
        }
        Ok(expired.len())
    }

    /// The archived history of event `uuid` in workspace `ws`.
    pub async fn get(&self, ws: &str, uuid: &str) -> Result<Option<Row>, ArchiveError> {
        let (ws, uuid) = (ws.to_string(), uuid.to_string());
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT workspace_id, log_ms, log_seq, uuid, time_created, record \
                     FROM herald_history WHERE uuid = $1 AND workspace_id = $2 \
                     ORDER BY log_ms DESC LIMIT 1",
                    &[&uuid, &ws],
                )
                .await?;
            Ok(rows.first().map(row))
        })
        .await
    }

    /// A workspace's archived history, newest first: the rows before log position `before`
    /// (`(ms, seq)`, exclusive; None: from the newest) and at or after `since_ms`, at most
    /// `limit`.
    pub async fn list(
        &self,
        ws: &str,
        before: Option<(i64, i64)>,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, ArchiveError> {
        let ws = ws.to_string();
        let (ms, seq) = before.unwrap_or((i64::MAX, i64::MAX));
        let since = since_ms.unwrap_or(i64::MIN);
        let limit = limit as i64;
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT workspace_id, log_ms, log_seq, uuid, time_created, record \
                     FROM herald_history WHERE workspace_id = $1 \
                     AND (log_ms, log_seq) < ($2, $3) AND log_ms >= $4 \
                     ORDER BY log_ms DESC, log_seq DESC LIMIT $5",
                    &[&ws, &ms, &seq, &since, &limit],
                )
                .await?;
            Ok(rows.iter().map(row).collect())
        })
        .await
    }

    /// The workspaces whose archive holds event `uuid` (the console's lookup), at most 8.
    pub async fn workspaces_with_event(&self, uuid: &str) -> Result<Vec<String>, ArchiveError> {
        let uuid = uuid.to_string();
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT DISTINCT workspace_id FROM herald_history WHERE uuid = $1 LIMIT 8",
                    &[&uuid],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
        .await
    }
}

fn row(r: &tokio_postgres::Row) -> Row {
    Row {
        workspace_id: r.get(0),
        log_ms: r.get(1),
        log_seq: r.get(2),
        uuid: r.get(3),
        time_created: r.get(4),
        record: r.get(5),
    }
}

/// Applies the migrations not applied yet, under the advisory lock.
async fn migrate(client: &Client) -> Result<(), ArchiveError> {
    bounded(client.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({LOCK}); \
         CREATE TABLE IF NOT EXISTS herald_migrations (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now()); COMMIT;"
    )))
    .await?;
    let applied: i32 = bounded(async {
        client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM herald_migrations",
                &[],
            )
            .await
            .map(|r| r.get(0))
    })
    .await?;
    for (i, statements) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        let version = i + 1;
        let execute: String = statements
            .iter()
            .map(|s| format!("EXECUTE {};", quote_literal(s)))
            .collect();
        // Another replica may have applied it since: checked again under the lock.
        bounded(client.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({LOCK}); \
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM herald_migrations WHERE version = {version}) \
             THEN {execute} INSERT INTO herald_migrations (version) VALUES ({version}); \
             END IF; END $$; COMMIT;"
        )))
        .await?;
        tracing::info!(version, "archive: schema migrated");
    }
    Ok(())
}

/// `s` as an SQL string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
