//! A connection's charts: attempts, failures, dead letters and latency percentiles over time,
//! from the per-connection counters the deliverers keep (never a scan of history).

use axum::extract::{Path, State};
use axum::Json;
use herald_shared::duration::parse_duration;
use herald_shared::store::stats::{StatsPoint, BUCKET_MS, KEPT_MS};
use serde::{Deserialize, Serialize};

use super::load;
use crate::auth::Reader;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::Refused;
use crate::schemas::StatsBucket;
use crate::state::AppState;

/// `GET /v1/connections/{id}/stats` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Unix milliseconds of the first point wanted (rounded down to 5 minutes); 24 hours ago by
    /// default, and never earlier (older counters are not kept). In the future: no point.
    since: Option<i64>,
    /// Width of each point: a multiple of 5 minutes up to a day, as `5m`, `15m`, `1h`, `24h`
    /// or seconds (`300`); `5m` by default.
    #[param(value_type = Option<StatsBucket>)]
    bucket: Option<String>,
}

/// One point of the chart: the bucket that starts at `at`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatsPointSchema {
    /// Unix milliseconds of the bucket's start.
    at: i64,
    /// Attempts made in the bucket (each retry is one more).
    deliveries: u64,
    /// Of those, how many failed (no 2xx or 3xx, no response, or refused by the breaker).
    failures: u64,
    /// Deliveries dead-lettered in the bucket.
    dead_letters: u64,
    /// Median latency of the requests made, ms; `null` without any. Read from a histogram, so
    /// within its bucket's width (e.g. 100-150 ms).
    p50_ms: Option<u64>,
    /// 95th percentile latency, ms; `null` without any.
    p95_ms: Option<u64>,
    /// `(deliveries - failures) / deliveries`; `null` without any attempt.
    success_rate: Option<f64>,
}

/// A connection's points, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionStats {
    /// Every point from `since` to now, oldest first; quiet ones with zeros (none when `since`
    /// is in the future).
    #[schema(value_type = Vec<StatsPointSchema>)]
    data: Vec<StatsPoint>,
    /// The width of each point, ms.
    bucket_ms: i64,
}

/// A connection's attempts, failures, dead letters and p50/p95 latency over time (the last 24
/// hours in 5-minute points by default), oldest first. Success rate = 1 - failures /
/// deliveries.
#[utoipa::path(get, path = "/v1/connections/{id}/stats", tag = "connections",
    params(("id" = String, Path, description = "Connection id"), StatsQuery),
    responses((status = 200, description = "The points, oldest first", body = ConnectionStats), Refused))]
pub async fn stats(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<ConnectionStats>, ApiError> {
    stats_of(&state, &ws, &id, q).await.map(Json)
}

/// The stats of connection `id` of workspace `ws` (404 when it is not one of its connections).
pub async fn stats_of(
    state: &AppState,
    ws: &str,
    id: &str,
    q: StatsQuery,
) -> Result<ConnectionStats, ApiError> {
    let per_point = buckets_per_point(q.bucket.as_deref())?;
    let now = herald_shared::now_ms();
    let since = q.since.unwrap_or(now - KEPT_MS);
    let c = load(state, ws, id).await?;
    let data = if since > now {
        Vec::new()
    } else {
        state
            .store
            .connection_stats(ws, &c.id, since, per_point)
            .await?
    };
    Ok(ConnectionStats {
        data,
        bucket_ms: BUCKET_MS * i64::from(per_point),
    })
}

/// How many 5-minute buckets one point of `bucket` spans.
fn buckets_per_point(bucket: Option<&str>) -> Result<u32, ApiError> {
    let Some(text) = bucket else {
        return Ok(1);
    };
    let ms = parse_duration(text).map(|d| d.as_millis() as i64);
    match ms {
        Some(ms) if ms > 0 && ms % BUCKET_MS == 0 && ms <= KEPT_MS => Ok((ms / BUCKET_MS) as u32),
        _ => Err(ApiError::field(
            "bucket",
            "must be a multiple of 5 minutes from 5m to 24h, e.g. 5m, 15m, 1h",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_multiples_of_five_minutes_up_to_a_day() {
        assert_eq!(buckets_per_point(None).ok(), Some(1));
        assert_eq!(buckets_per_point(Some("5m")).ok(), Some(1));
        assert_eq!(buckets_per_point(Some("300")).ok(), Some(1));
        assert_eq!(buckets_per_point(Some("1h")).ok(), Some(12));
        assert_eq!(buckets_per_point(Some("24h")).ok(), Some(288));
        for bad in ["0", "7m", "25h", "2d", "soon", "", "-5m"] {
            assert!(buckets_per_point(Some(bad)).is_err(), "{bad}");
        }
    }
}
