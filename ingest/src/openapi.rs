//! The OpenAPI document's frame: title, security scheme, the error shape, the 4XX answer every
//! endpoint shares ([`Refused`]) and the list envelope ([`ListOf`]). The paths come from the
//! route table itself (`routes::api_routes`), so the document cannot leave a route out; the
//! named constraint schemas are in `schemas`.

use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The API's description; `routes::api_routes` adds every path to it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Self-hosted durable webhook delivery: intake, configuration, history, dead letters, the embeddable portal and the support console. `Authorization: Bearer <token>` with a workspace secret key (`sk_...`), a publishable key (`pk_...`, events only), a portal session (`sess_...`) or the operator's admin token."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    // Query parameters refer to these by name, and parameters do not register what they use.
    components(schemas(
        ErrorBody,
        ErrorDetail,
        crate::schemas::Token,
        crate::schemas::TokenFilter,
        crate::schemas::Cursor,
        crate::schemas::EventStatus,
        crate::schemas::StatsBucket
    )),
    tags(
        (name = "events", description = "Intake and history"),
        (name = "connections", description = "Destinations and their signing secrets"),
        (name = "rules", description = "What goes where"),
        (name = "dead letters", description = "Deliveries that ran out of attempts"),
        (name = "workspaces", description = "Tenants and their keys"),
        (name = "portal", description = "Sessions for the embeddable portal, and the workspace's settings: portal framing, operational webhooks"),
        (name = "console", description = "The support console's API (admin token), across workspaces"),
        (name = "pages", description = "The portal, the console and their assets"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A workspace key, a portal session token or the admin token",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every 4xx and 5xx answer.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// `invalid_field`, `invalid_json`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `rate_limited`, `broker_unavailable`, `store_unavailable`,
    /// `internal`.
    pub code: String,
    /// What to fix, for people.
    pub message: String,
    /// The field to fix (`events[2].event`, `url`, `body`), when one is at fault.
    pub field: Option<String>,
}

/// The answer of a refused request, shared by every endpoint that can refuse one: named once
/// here and listed in each endpoint's `responses(...)`.
#[derive(IntoResponses)]
#[response(
    status = "4XX",
    description = "Refused: `{\"error\": {code, message, field}}`; `field` names what to fix"
)]
pub struct Refused(pub ErrorBody);

/// A page of a list: `{data, next_cursor}`.
#[derive(ToSchema, serde::Serialize)]
pub struct ListOf<T> {
    /// The items, newest first.
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// An optional request body is left out, never sent as `null` (the server refuses a `null`
/// body): utoipa writes `request_body = Option<T>` as `oneOf: [null, T]`, so this keeps `T`.
pub fn optional_bodies_without_null(doc: &mut utoipa::openapi::OpenApi) {
    let operations = doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
    });
    for op in operations.flatten() {
        let Some(body) = op.request_body.as_mut() else {
            continue;
        };
        if matches!(body.required, Some(Required::True)) {
            continue;
        }
        for content in body.content.values_mut() {
            if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                let mut rest = one_of.items.iter().filter(|s| !is_null(s));
                if let (Some(only), None) = (rest.next(), rest.next()) {
                    content.schema = Some(only.clone());
                }
            }
        }
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}
