//! The OpenAPI document's frame: title, security scheme and shared schemas. The paths come
//! from the route table itself (`app::api_routes`), so the document cannot leave a route out.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The API's description; `app::api_routes` adds every path to it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Self-hosted durable webhook delivery: intake, configuration, history, dead letters, the embeddable portal and the support console. `Authorization: Bearer <token>` with a workspace secret key (`sk_...`), a publishable key (`pk_...`, events only), a portal session (`sess_...`) or the operator's admin token."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "events", description = "Intake and history"),
        (name = "connections", description = "Destinations and their signing secrets"),
        (name = "rules", description = "What goes where"),
        (name = "dead letters", description = "Deliveries that ran out of attempts"),
        (name = "workspaces", description = "Tenants and their keys"),
        (name = "portal", description = "Sessions for the embeddable portal, and its settings"),
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
