//! The route table, and one module per resource of the API:
//!
//! - [`events`]: intake (single and bulk) and event history.
//! - [`connections`], [`rules`]: a workspace's destinations and what goes where.
//! - [`dead_letters`]: list, read, replay and discard.
//! - [`workspaces`]: tenants and their keys (admin token, then the secret key).
//! - [`sessions`]: portal sessions and the portal's settings.
//! - [`admin`]: the support console's API across workspaces.
//! - [`health`]: liveness, readiness and metrics.
//! - [`pages`]: the portal, the console and their assets.
//!
//! [`api_routes`] is the one place both the router and `/openapi.json` come from, so the
//! document cannot leave a route out.

pub mod admin;
pub mod connections;
pub mod dead_letters;
pub mod events;
pub mod health;
pub mod pages;
pub mod rules;
pub mod sessions;
pub mod workspaces;

use std::sync::OnceLock;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route with its OpenAPI description. `event_limit` and `bulk_limit` are the body
/// limits of intake.
pub fn api_routes(event_limit: usize, bulk_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(workspaces::create, workspaces::list))
        .routes(routes!(workspaces::roll_key))
        .routes(routes!(sessions::create))
        .routes(routes!(sessions::refresh))
        .routes(routes!(sessions::current, sessions::end_current))
        .routes(routes!(sessions::revoke))
        .routes(routes!(sessions::get_settings, sessions::update_settings))
        .routes(routes!(connections::create, connections::list))
        .routes(routes!(
            connections::get,
            connections::update,
            connections::delete
        ))
        .routes(routes!(connections::secrets::secret))
        .routes(routes!(connections::health::health))
        .routes(routes!(connections::stats::stats))
        .routes(routes!(connections::secrets::rotate_secret))
        .routes(routes!(rules::create, rules::list))
        .routes(routes!(rules::get, rules::update, rules::delete))
        .routes(limited(routes!(rules::test), event_limit))
        .routes(limited(routes!(events::create, events::list), event_limit))
        .routes(limited(routes!(events::bulk), bulk_limit))
        .routes(routes!(events::get))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay_many))
        .routes(routes!(dead_letters::replay_progress))
        .routes(routes!(dead_letters::get, dead_letters::discard))
        .routes(routes!(dead_letters::replay_one))
        .routes(routes!(admin::find_event))
        .routes(routes!(admin::search_events))
        .routes(routes!(admin::connections))
        .routes(routes!(admin::connection_health))
        .routes(routes!(admin::connection_stats))
        .routes(routes!(admin::dead_letters))
        .routes(routes!(admin::replay_dead_letters))
        .routes(routes!(admin::replay_progress))
        .routes(routes!(admin::replay_dead_letter))
        .routes(routes!(admin::discard_dead_letter))
        .routes(routes!(pages::portal))
        .routes(routes!(pages::portal_unframed))
        .routes(routes!(pages::console))
        .routes(routes!(pages::console_redirect))
        .routes(routes!(pages::asset))
}

/// A route group whose bodies may be up to `limit` bytes (instead of the 256 KiB default).
fn limited(
    (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
    limit: usize,
) -> UtoipaMethodRouter<AppState> {
    (
        schemas,
        paths,
        method_router.layer(DefaultBodyLimit::max(limit)),
    )
}

/// The whole route table.
pub fn router(state: AppState) -> Router {
    let (router, _) = api_routes(
        state.settings.max_event_bytes,
        state.settings.max_bulk_bytes,
    )
    .split_for_parts();
    router
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(256 * 1024))
        .layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

/// Counts every request by route template (not by path: ids would make a metric per object),
/// method and status, and times it.
async fn count_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("herald_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("herald_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// This API's OpenAPI 3.1 document, generated from the route table and its handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    static SPEC: OnceLock<String> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let mut doc = api_routes(0, 0).into_openapi();
        crate::openapi::optional_bodies_without_null(&mut doc);
        doc.to_pretty_json().unwrap_or_default()
    });
    if spec.is_empty() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], spec.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every `$ref` of `node` that does not resolve in `doc`.
    fn unresolved<'a>(doc: &Value, node: &'a Value, out: &mut Vec<&'a str>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    if doc.pointer(r.trim_start_matches('#')).is_none() {
                        out.push(r);
                    }
                }
                map.values().for_each(|v| unresolved(doc, v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| unresolved(doc, v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_of_the_document_resolves_and_optional_bodies_are_not_null() {
        let mut doc = super::api_routes(0, 0).into_openapi();
        crate::openapi::optional_bodies_without_null(&mut doc);
        let doc = serde_json::to_value(&doc).expect("JSON");
        let mut broken = Vec::new();
        unresolved(&doc, &doc, &mut broken);
        assert!(broken.is_empty(), "unresolved: {broken:?}");
        let replay = &doc["paths"]["/v1/dead-letters/replay"]["post"]["requestBody"];
        assert_eq!(
            replay["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ReplayFilter"
        );
    }
}
