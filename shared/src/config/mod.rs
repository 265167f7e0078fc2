//! Typed settings for each service, read once at start-up from a [`Source`] (defaults, then an
//! optional `HERALD_CONFIG` file, then `HERALD_*` variables); an error names the setting.
//!
//! - [`source`]: where values come from and how one value is read and checked.
//! - this module: the settings of each service and what they share.

pub mod source;

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use crate::retry::RetrySchedule;
use source::invalid;
pub use source::{ConfigError, Source};

/// `text` logs for people, `json` (one object per line) for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which RabbitMQ queue type Herald declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Classic queues, version 2: the fastest choice on one broker node.
    Classic,
    /// Quorum queues: replicated, for a RabbitMQ cluster.
    Quorum,
}

/// How Herald reaches Redis (`HERALD_REDIS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// One Redis server (optionally with replicas behind a failover address).
    Standalone,
    /// A Redis Cluster: `HERALD_REDIS_URL` lists seed nodes, comma-separated.
    Cluster,
}

/// The shortest `HERALD_RETENTION` and `HERALD_DEDUP_WINDOW`: short enough for a test to watch
/// state expire, long enough that an event outlives its own routing.
pub const MIN_WINDOW: Duration = Duration::from_secs(10);

/// What every service needs: the broker, Redis, logging, retry and retention policy.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// `HERALD_AMQP_URL`; its vhost isolates one installation.
    pub amqp_url: SecretString,
    /// `HERALD_REDIS_URL`: one URL, or in cluster mode a comma-separated list of seed nodes.
    pub redis_url: SecretString,
    /// `HERALD_REDIS_MODE`: `standalone` (default) or `cluster`.
    pub redis_mode: RedisMode,
    /// `HERALD_REDIS_PREFIX`: prefix of every Redis key.
    pub redis_prefix: String,
    /// `HERALD_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `HERALD_QUEUE_TYPE`: `classic` (default) or `quorum`.
    pub queue_type: QueueType,
    /// `HERALD_RETRY_SCHEDULE`: the delays between attempts.
    pub retry_schedule: RetrySchedule,
    /// `HERALD_RETENTION`: how long history and dead letters are kept (at least 10 s).
    pub retention: Duration,
    /// `HERALD_DEDUP_WINDOW`: how long a producer's uuid is remembered for duplicate detection
    /// (at least 10 s), independently of the retention.
    pub dedup_window: Duration,
    /// `HERALD_CONFIG_REFRESH`: how often cached configuration is checked for changes.
    pub config_refresh: Duration,
    /// `HERALD_DRAIN_TIMEOUT`: how long shutdown waits for in-flight work.
    pub drain_timeout: Duration,
    /// `HERALD_METRICS_ADDR`: when set, `/metrics` is served there too, on a port of its own
    /// (so it need not be public where the API or health endpoints are).
    pub metrics_addr: Option<SocketAddr>,
    /// `HERALD_SECRETS_KEY` (seals) and `HERALD_SECRETS_KEYS_OLD` (still open): the keys that
    /// encrypt signing secrets and destination credentials in Redis.
    pub secrets: crate::secrets::SecretsKeys,
    /// `HERALD_ARCHIVE_URL` and its companions: the PostgreSQL archive, when on.
    pub archive: Option<ArchiveSettings>,
    /// `HERALD_OPERATIONAL_WEBHOOK_URL` and `HERALD_OPERATIONAL_WEBHOOK_SECRET`: where the
    /// operator's operational webhooks go, when set.
    pub operational_webhook: Option<OperationalWebhookSettings>,
}

/// The operator's operational webhook endpoint.
#[derive(Debug, Clone)]
pub struct OperationalWebhookSettings {
    /// `HERALD_OPERATIONAL_WEBHOOK_URL`: an `http(s)://` URL.
    pub url: String,
    /// `HERALD_OPERATIONAL_WEBHOOK_SECRET`: the `whsec_` secret its requests are signed with.
    pub secret: SecretString,
}

/// The PostgreSQL archive of final history.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// `HERALD_ARCHIVE_URL`: `postgres://...`.
    pub url: SecretString,
    /// `HERALD_HOT_WINDOW`: how long final history stays in Redis (at least 10 s).
    pub hot_window: Duration,
    /// `HERALD_ARCHIVE_PARTITION`: the time range of one partition (default one day, at
    /// least 10 s); a partition is dropped whole once older than the retention.
    pub partition: Duration,
}

impl CommonSettings {
    /// Reads the shared settings.
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let log_format = match src.string("HERALD_LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("HERALD_LOG_FORMAT", "text or json", other)),
        };
        let queue_type = match src.string("HERALD_QUEUE_TYPE", "classic").as_str() {
            "classic" => QueueType::Classic,
            "quorum" => QueueType::Quorum,
            other => return Err(invalid("HERALD_QUEUE_TYPE", "classic or quorum", other)),
        };
        let retry_schedule = match src.get("HERALD_RETRY_SCHEDULE") {
            None => RetrySchedule::default(),
            Some(v) => RetrySchedule::parse(v).map_err(|message| ConfigError::Invalid {
                name: "HERALD_RETRY_SCHEDULE",
                message,
                value: v.to_string(),
            })?,
        };
        let amqp_url = src.string("HERALD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        if !amqp_url.starts_with("amqp://") && !amqp_url.starts_with("amqps://") {
            return Err(invalid(
                "HERALD_AMQP_URL",
                "an amqp:// or amqps:// URL",
                &amqp_url,
            ));
        }
        let redis_mode = match src.string("HERALD_REDIS_MODE", "standalone").as_str() {
            "standalone" => RedisMode::Standalone,
            "cluster" => RedisMode::Cluster,
            other => return Err(invalid("HERALD_REDIS_MODE", "standalone or cluster", other)),
        };
        let redis_url = src.string("HERALD_REDIS_URL", "redis://127.0.0.1:6379");
        let urls_ok = match redis_mode {
            RedisMode::Standalone => redis::parse_redis_url(&redis_url).is_some(),
            RedisMode::Cluster => redis_url
                .split(',')
                .all(|u| redis::parse_redis_url(u.trim()).is_some()),
        };
        if !urls_ok {
            let expected = match redis_mode {
                RedisMode::Standalone if redis_url.contains(',') => {
                    "a redis:// URL (a list of seed nodes needs HERALD_REDIS_MODE=cluster)"
                }
                RedisMode::Standalone => "a redis:// URL",
                RedisMode::Cluster => "comma-separated redis:// URLs of seed nodes",
            };
            return Err(invalid("HERALD_REDIS_URL", expected, &redis_url));
        }
        let redis_prefix = src.string("HERALD_REDIS_PREFIX", "herald");
        // Braces would make the prefix a Redis Cluster hash tag of its own, in place of the
        // workspace id that spreads workspaces over the cluster's slots.
        if redis_prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
            return Err(invalid(
                "HERALD_REDIS_PREFIX",
                "no spaces or braces",
                &redis_prefix,
            ));
        }
        Ok(Self {
            amqp_url: amqp_url.into(),
            redis_url: redis_url.into(),
            redis_mode,
            redis_prefix,
            log_format,
            queue_type,
            retry_schedule,
            retention: src.duration_at_least(
                "HERALD_RETENTION",
                Duration::from_secs(30 * 86_400),
                MIN_WINDOW,
            )?,
            dedup_window: src.duration_at_least(
                "HERALD_DEDUP_WINDOW",
                Duration::from_secs(86_400),
                MIN_WINDOW,
            )?,
            config_refresh: src.duration("HERALD_CONFIG_REFRESH", Duration::from_millis(250))?,
            drain_timeout: src.duration("HERALD_DRAIN_TIMEOUT", Duration::from_secs(30))?,
            metrics_addr: match src.get("HERALD_METRICS_ADDR") {
                None => None,
                Some(_) => Some(src.addr("HERALD_METRICS_ADDR", "127.0.0.1:0")?),
            },
            secrets: src.secrets()?,
            archive: archive_settings(src)?,
            operational_webhook: operational_webhook_settings(src)?,
        })
    }
}

fn operational_webhook_settings(
    src: &Source,
) -> Result<Option<OperationalWebhookSettings>, ConfigError> {
    const URL: &str = "HERALD_OPERATIONAL_WEBHOOK_URL";
    const SECRET: &str = "HERALD_OPERATIONAL_WEBHOOK_SECRET";
    let url = src.get(URL).filter(|u| !u.is_empty());
    let secret = src.get(SECRET).filter(|s| !s.is_empty());
    let (url, secret) = match (url, secret) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(invalid(SECRET, "a whsec_ secret beside the URL", "")),
        (None, Some(_)) => return Err(invalid(URL, "a URL beside the secret", "")),
        (Some(u), Some(s)) => (u, s),
    };
    let parsed = url::Url::parse(url).map_err(|_| invalid(URL, "an http(s):// URL", url))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(URL, "an http(s):// URL", url));
    }
    if crate::signing::SigningKey::parse_strict(secret).is_err() {
        return Err(invalid(
            SECRET,
            "whsec_ and the base64 of 24 or more random bytes",
            "(hidden)",
        ));
    }
    Ok(Some(OperationalWebhookSettings {
        url: url.to_string(),
        secret: secret.to_string().into(),
    }))
}

fn archive_settings(src: &Source) -> Result<Option<ArchiveSettings>, ConfigError> {
    let Some(url) = src.get("HERALD_ARCHIVE_URL").filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(invalid(
            "HERALD_ARCHIVE_URL",
            "a postgres:// URL",
            "(not shown: it may hold a password)",
        ));
    }
    Ok(Some(ArchiveSettings {
        url: url.to_string().into(),
        hot_window: src.duration_at_least(
            "HERALD_HOT_WINDOW",
            Duration::from_secs(3_600),
            MIN_WINDOW,
        )?,
        partition: src.duration_at_least(
            "HERALD_ARCHIVE_PARTITION",
            Duration::from_secs(86_400),
            MIN_WINDOW,
        )?,
    }))
}

/// Settings of `herald-ingest`.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Shared settings.
    pub common: CommonSettings,
    /// `HERALD_INGEST_ADDR`.
    pub addr: SocketAddr,
    /// `HERALD_ADMIN_TOKEN`; the admin API is disabled without it.
    pub admin_token: Option<SecretString>,
    /// `HERALD_ALLOW_HTTP`: accept `http://` destinations (development only).
    pub allow_http: bool,
    /// `HERALD_ALLOW_PRIVATE_DESTINATIONS` and `HERALD_DESTINATION_ALLOWLIST`.
    pub destinations: crate::netguard::DestinationPolicy,
    /// `HERALD_MAX_EVENT_BYTES`: largest single event body.
    pub max_event_bytes: usize,
    /// `HERALD_MAX_BULK_BYTES`: largest bulk request body.
    pub max_bulk_bytes: usize,
    /// `HERALD_MAX_BULK_EVENTS`: most events in one bulk request.
    pub max_bulk_events: usize,
    /// `HERALD_SECRET_GRACE`: how long a rotated-out secret keeps signing.
    pub secret_grace: Duration,
    /// `HERALD_INTAKE_RATE_LIMIT_PER_S`: events per second one API key may send (0: no limit).
    pub intake_rate_limit_per_s: u32,
}

impl IngestSettings {
    /// Reads the environment (and `HERALD_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Source::from_env()?)
    }

    /// Reads the given source.
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let admin_token = src.get("HERALD_ADMIN_TOKEN").map(|t| t.to_string());
        if let Some(t) = &admin_token {
            if t.len() < 16 {
                return Err(invalid(
                    "HERALD_ADMIN_TOKEN",
                    "at least 16 characters",
                    "(hidden)",
                ));
            }
        }
        Ok(Self {
            common: CommonSettings::from_source(src)?,
            addr: src.addr("HERALD_INGEST_ADDR", "127.0.0.1:8080")?,
            admin_token: admin_token.map(Into::into),
            allow_http: src.bool("HERALD_ALLOW_HTTP", false)?,
            destinations: src.policy()?,
            max_event_bytes: src.positive("HERALD_MAX_EVENT_BYTES", 1_048_576)?,
            max_bulk_bytes: src.positive("HERALD_MAX_BULK_BYTES", 16 * 1_048_576)?,
            max_bulk_events: src.positive("HERALD_MAX_BULK_EVENTS", 1_000)?,
            secret_grace: src.duration("HERALD_SECRET_GRACE", Duration::from_secs(86_400))?,
            intake_rate_limit_per_s: src.rate("HERALD_INTAKE_RATE_LIMIT_PER_S")?,
        })
    }
}

/// Settings of `herald-router`.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Shared settings.
    pub common: CommonSettings,
    /// `HERALD_ROUTER_ADDR`: health and metrics.
    pub addr: SocketAddr,
    /// `HERALD_ROUTER_PREFETCH`: unacknowledged event messages held at once.
    pub prefetch: u16,
    /// `HERALD_ROUTER_JOBS_PER_MESSAGE`: most delivery jobs put in one broker message.
    pub jobs_per_message: usize,
    /// `HERALD_ROUTER_INFLIGHT_BYTES`: most bytes of event messages handled at once.
    pub inflight_bytes: usize,
}

impl RouterSettings {
    /// Reads the environment (and `HERALD_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Source::from_env()?)
    }

    /// Reads the given source.
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonSettings::from_source(src)?,
            addr: src.addr("HERALD_ROUTER_ADDR", "127.0.0.1:8081")?,
            prefetch: src.prefetch("HERALD_ROUTER_PREFETCH", 64)?,
            jobs_per_message: src.positive("HERALD_ROUTER_JOBS_PER_MESSAGE", 100)?,
            inflight_bytes: src.positive("HERALD_ROUTER_INFLIGHT_BYTES", 2 * 1_048_576)?,
        })
    }
}

/// Settings of `herald-deliverer`.
#[derive(Debug, Clone)]
pub struct DelivererSettings {
    /// Shared settings.
    pub common: CommonSettings,
    /// `HERALD_DELIVERER_ADDR`: health and metrics.
    pub addr: SocketAddr,
    /// `HERALD_DELIVERER_PREFETCH`: unacknowledged job messages held at once.
    pub prefetch: u16,
    /// `HERALD_DELIVERER_CONCURRENCY`: most HTTP requests in flight.
    pub concurrency: usize,
    /// `HERALD_CONNECTION_CONCURRENCY`: most requests in flight to one connection.
    pub connection_concurrency: usize,
    /// `HERALD_ALLOW_PRIVATE_DESTINATIONS` and `HERALD_DESTINATION_ALLOWLIST`.
    pub destinations: crate::netguard::DestinationPolicy,
    /// `HERALD_DEFAULT_TIMEOUT`: request timeout of a connection that sets none.
    pub default_timeout: Duration,
    /// `HERALD_CONNECTION_WAIT`: how long a job waits for a busy (or rate-limited) connection
    /// before it goes back through the delay ladder, freeing its message for others.
    pub connection_wait: Duration,
    /// `HERALD_BREAKER_FAILURES`: consecutive failed attempts that open a connection's breaker.
    pub breaker_failures: u32,
    /// `HERALD_BREAKER_COOLDOWN`: how long an opened breaker keeps a connection uncalled before
    /// a probe (doubling after each failed probe, up to `HERALD_BREAKER_MAX_COOLDOWN`).
    pub breaker_cooldown: Duration,
    /// `HERALD_EGRESS_PROXY`: an explicit proxy for every delivery (for static egress
    /// addresses); it must enforce the destination policy itself. Proxy variables of the
    /// environment are ignored.
    pub egress_proxy: Option<String>,
    /// `HERALD_BREAKER_MAX_COOLDOWN`: the longest an opened breaker waits between probes.
    pub breaker_max_cooldown: Duration,
    /// `HERALD_BREAKER_PROBE_TIMEOUT`: a probe that has not reported after this long (its
    /// request hung or its task died) no longer blocks the next one.
    pub breaker_probe_timeout: Duration,
    /// `HERALD_AUTO_DISABLE_AFTER`: a connection whose every attempt failed for this long is
    /// disabled (default 5 days, at least 10 s).
    pub auto_disable_after: Duration,
}

impl DelivererSettings {
    /// Reads the environment (and `HERALD_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Source::from_env()?)
    }

    /// Reads the given source.
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let breaker_cooldown = src.duration("HERALD_BREAKER_COOLDOWN", Duration::from_secs(30))?;
        Ok(Self {
            common: CommonSettings::from_source(src)?,
            addr: src.addr("HERALD_DELIVERER_ADDR", "127.0.0.1:8082")?,
            // Above the per-connection concurrency (requests hanging at one connection hold at
            // most that many messages; the rest keeps others flowing), but not far above:
            // measured, 256 cut the throughput to one connection by a third and more than
            // doubled the deliverer's memory.
            prefetch: src.prefetch("HERALD_DELIVERER_PREFETCH", 64)?,
            concurrency: src.positive("HERALD_DELIVERER_CONCURRENCY", 512)?,
            connection_concurrency: src.positive("HERALD_CONNECTION_CONCURRENCY", 32)?,
            destinations: src.policy()?,
            default_timeout: src.duration("HERALD_DEFAULT_TIMEOUT", Duration::from_secs(15))?,
            connection_wait: src.duration("HERALD_CONNECTION_WAIT", Duration::from_secs(10))?,
            breaker_failures: src.positive("HERALD_BREAKER_FAILURES", 20)? as u32,
            breaker_cooldown,
            egress_proxy: src.proxy("HERALD_EGRESS_PROXY")?,
            breaker_max_cooldown: src
                .duration("HERALD_BREAKER_MAX_COOLDOWN", Duration::from_secs(600))?
                .max(breaker_cooldown),
            // Above the longest connection timeout (120 s).
            breaker_probe_timeout: src
                .duration("HERALD_BREAKER_PROBE_TIMEOUT", Duration::from_secs(150))?,
            auto_disable_after: src.duration_at_least(
                "HERALD_AUTO_DISABLE_AFTER",
                Duration::from_secs(5 * 86_400),
                MIN_WINDOW,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_on_one_machine() {
        let s = IngestSettings::from_source(&Source::default()).expect("defaults");
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.max_event_bytes, 1_048_576);
        assert_eq!(s.common.redis_prefix, "herald");
        assert!(s.admin_token.is_none());
        assert_eq!(s.common.retry_schedule.retries(), 7);
    }

    #[test]
    fn the_archive_is_off_without_its_url_and_checks_its_settings() {
        let s = RouterSettings::from_source(&Source::default()).expect("settings");
        assert!(s.common.archive.is_none());
        let src = Source::from_pairs([
            ("HERALD_ARCHIVE_URL", "postgres://u:p@db:5432/herald"),
            ("HERALD_HOT_WINDOW", "10s"),
        ]);
        let a = RouterSettings::from_source(&src)
            .expect("settings")
            .common
            .archive
            .expect("archive on");
        assert_eq!(a.hot_window, Duration::from_secs(10));
        assert_eq!(a.partition, Duration::from_secs(86_400));
        for (name, value) in [
            ("HERALD_ARCHIVE_URL", "mysql://db"),
            ("HERALD_HOT_WINDOW", "9s"),
            ("HERALD_ARCHIVE_PARTITION", "1s"),
        ] {
            let mut pairs = vec![("HERALD_ARCHIVE_URL", "postgres://db/h")];
            pairs.push((name, value));
            let err = RouterSettings::from_source(&Source::from_pairs(pairs)).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn retention_and_dedup_window_accept_ten_seconds_and_no_less() {
        let s = RouterSettings::from_source(&Source::default()).expect("defaults");
        assert_eq!(s.common.dedup_window, Duration::from_secs(86_400));
        assert_eq!(s.common.retention, Duration::from_secs(30 * 86_400));
        let src = Source::from_pairs([("HERALD_RETENTION", "10s"), ("HERALD_DEDUP_WINDOW", "10s")]);
        let s = RouterSettings::from_source(&src).expect("10 s is allowed");
        assert_eq!(s.common.retention, Duration::from_secs(10));
        assert_eq!(s.common.dedup_window, Duration::from_secs(10));
        for name in ["HERALD_RETENTION", "HERALD_DEDUP_WINDOW"] {
            let src = Source::from_pairs([(name, "9s")]);
            let err = RouterSettings::from_source(&src).expect_err("under 10 s");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn redis_mode_is_standalone_by_default_and_cluster_takes_seed_nodes() {
        let s = RouterSettings::from_source(&Source::default()).expect("defaults");
        assert_eq!(s.common.redis_mode, RedisMode::Standalone);
        let seeds = "redis://127.0.0.1:7000, redis://127.0.0.1:7001";
        let src = Source::from_pairs([
            ("HERALD_REDIS_MODE", "cluster"),
            ("HERALD_REDIS_URL", seeds),
        ]);
        let s = RouterSettings::from_source(&src).expect("seed nodes");
        assert_eq!(s.common.redis_mode, RedisMode::Cluster);
        let src = Source::from_pairs([("HERALD_REDIS_URL", seeds)]);
        let err = RouterSettings::from_source(&src).expect_err("a list needs cluster mode");
        assert!(
            err.to_string().contains("HERALD_REDIS_MODE=cluster"),
            "{err}"
        );
        let src = Source::from_pairs([("HERALD_REDIS_MODE", "sentinel")]);
        let err = RouterSettings::from_source(&src).expect_err("unknown mode");
        assert!(err.to_string().contains("HERALD_REDIS_MODE"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        let src = Source::from_pairs([("HERALD_ALLOW_HTTP", "maybe")]);
        let err = IngestSettings::from_source(&src).expect_err("must fail");
        assert!(err.to_string().contains("HERALD_ALLOW_HTTP"), "{err}");
        let src = Source::from_pairs([("HERALD_RETRY_SCHEDULE", "5s,soon")]);
        let err = RouterSettings::from_source(&src).expect_err("must fail");
        assert!(err.to_string().contains("HERALD_RETRY_SCHEDULE"), "{err}");
    }

    #[test]
    fn the_router_bounds_its_bytes_in_flight_and_refuses_no_bound() {
        let s = RouterSettings::from_source(&Source::default()).expect("defaults");
        assert_eq!(s.inflight_bytes, 2 * 1_048_576);
        let src = Source::from_pairs([("HERALD_ROUTER_INFLIGHT_BYTES", "0")]);
        let err = RouterSettings::from_source(&src).expect_err("0 is no bound");
        assert!(
            err.to_string().contains("HERALD_ROUTER_INFLIGHT_BYTES"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_secrets_key_names_its_setting_and_hides_its_value() {
        let src = Source::from_pairs([("HERALD_SECRETS_KEY", "c2hvcnQ=")]);
        let err = IngestSettings::from_source(&src).expect_err("16 bytes is not a key");
        assert!(err.to_string().contains("HERALD_SECRETS_KEY"), "{err}");
        assert!(!err.to_string().contains("c2hvcnQ="), "{err}");
        let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let src = Source::from_pairs([
            ("HERALD_SECRETS_KEY", good),
            ("HERALD_SECRETS_KEYS_OLD", "nope"),
        ]);
        let err = DelivererSettings::from_source(&src).expect_err("bad old key");
        assert!(err.to_string().contains("HERALD_SECRETS_KEYS_OLD"), "{err}");
    }

    #[test]
    fn secrets_keys_default_to_the_development_key_and_rotate() {
        let s = RouterSettings::from_source(&Source::from_pairs::<_, &str, &str>([]))
            .expect("defaults");
        assert!(s.common.secrets.is_development());
        let old = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let new = "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";
        let before =
            CommonSettings::from_source(&Source::from_pairs([("HERALD_SECRETS_KEY", old)]))
                .expect("old key");
        let sealed = before.secrets.seal("whsec_x", "con_1");
        let after = CommonSettings::from_source(&Source::from_pairs([
            ("HERALD_SECRETS_KEY", new),
            ("HERALD_SECRETS_KEYS_OLD", old),
        ]))
        .expect("rotated");
        assert!(!after.secrets.is_development());
        assert_eq!(
            after.secrets.open(&sealed, "con_1").expect("opens"),
            "whsec_x"
        );
    }

    #[test]
    fn auto_disable_defaults_to_five_days_and_accepts_ten_seconds_and_no_less() {
        let s = DelivererSettings::from_source(&Source::default()).expect("defaults");
        assert_eq!(s.auto_disable_after, Duration::from_secs(5 * 86_400));
        let src = Source::from_pairs([("HERALD_AUTO_DISABLE_AFTER", "10s")]);
        let s = DelivererSettings::from_source(&src).expect("10 s is allowed");
        assert_eq!(s.auto_disable_after, Duration::from_secs(10));
        let src = Source::from_pairs([("HERALD_AUTO_DISABLE_AFTER", "9s")]);
        let err = DelivererSettings::from_source(&src).expect_err("under 10 s");
        assert!(
            err.to_string().contains("HERALD_AUTO_DISABLE_AFTER"),
            "{err}"
        );
    }

    #[test]
    fn the_operational_webhook_needs_its_url_and_secret_together() {
        let s = CommonSettings::from_source(&Source::default()).expect("defaults");
        assert!(s.operational_webhook.is_none());
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let src = Source::from_pairs([
            (
                "HERALD_OPERATIONAL_WEBHOOK_URL",
                "https://ops.example.com/hook",
            ),
            ("HERALD_OPERATIONAL_WEBHOOK_SECRET", secret),
        ]);
        let s = CommonSettings::from_source(&src).expect("both");
        assert_eq!(
            s.operational_webhook.expect("on").url,
            "https://ops.example.com/hook"
        );
        for (pairs, name) in [
            (
                vec![("HERALD_OPERATIONAL_WEBHOOK_URL", "https://ops.example.com")],
                "HERALD_OPERATIONAL_WEBHOOK_SECRET",
            ),
            (
                vec![("HERALD_OPERATIONAL_WEBHOOK_SECRET", secret)],
                "HERALD_OPERATIONAL_WEBHOOK_URL",
            ),
            (
                vec![
                    ("HERALD_OPERATIONAL_WEBHOOK_URL", "ftp://ops.example.com"),
                    ("HERALD_OPERATIONAL_WEBHOOK_SECRET", secret),
                ],
                "HERALD_OPERATIONAL_WEBHOOK_URL",
            ),
            (
                vec![
                    ("HERALD_OPERATIONAL_WEBHOOK_URL", "https://ops.example.com"),
                    ("HERALD_OPERATIONAL_WEBHOOK_SECRET", "not-a-secret"),
                ],
                "HERALD_OPERATIONAL_WEBHOOK_SECRET",
            ),
        ] {
            let err = CommonSettings::from_source(&Source::from_pairs(pairs)).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
            assert!(!err.to_string().contains("not-a-secret"), "{err}");
        }
    }

    #[test]
    fn the_intake_rate_limit_is_off_by_default() {
        let s = IngestSettings::from_source(&Source::default()).expect("defaults");
        assert_eq!(s.intake_rate_limit_per_s, 0);
        let src = Source::from_pairs([("HERALD_INTAKE_RATE_LIMIT_PER_S", "-3")]);
        let err = IngestSettings::from_source(&src).expect_err("negative");
        assert!(err.to_string().contains("HERALD_INTAKE_RATE_LIMIT_PER_S"));
    }
}
