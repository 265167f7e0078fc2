//! The portal, the support console and their assets, shipped inside the binary.
//!
//! Every page gets a strict Content-Security-Policy: no inline script or style, nothing from
//! another origin, requests only to this origin. The portal may be framed only by the origins
//! its workspace listed in `frame_ancestors`; the console by nobody.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::state::AppState;

const PORTAL_HTML: &str = include_str!("../../assets/portal/index.html");
const CONSOLE_HTML: &str = include_str!("../../assets/console/index.html");

/// The files under `/assets/`: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "herald.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/herald.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/common.js"),
    ),
    (
        "portal.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/portal/portal.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/console.js"),
    ),
];

/// The Content-Security-Policy of a page that may be framed by `frame_ancestors`.
pub fn csp(frame_ancestors: &[String]) -> String {
    let ancestors = if frame_ancestors.is_empty() {
        "'none'".to_string()
    } else {
        frame_ancestors.join(" ")
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; frame-ancestors {ancestors}; base-uri 'none'; form-action 'self'"
    )
}

fn page(html: &'static str, frame_ancestors: &[String]) -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp(frame_ancestors)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if frame_ancestors.is_empty() {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The portal of a workspace: framed only by the workspace's `frame_ancestors`. The session
/// token comes in the URL's fragment, which the browser never sends here.
#[utoipa::path(get, path = "/portal/{ws}/", tag = "pages", security(()),
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, description = "The portal page (HTML)", content_type = "text/html")))]
pub async fn portal(State(state): State<AppState>, Path(ws): Path<String>) -> Response {
    let ancestors = if ws.len() <= 128 {
        state
            .store
            .portal_settings(&ws)
            .await
            .map(|s| s.frame_ancestors)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    page(PORTAL_HTML, &ancestors)
}

/// The portal page at its short address: usable on its own, never framed.
#[utoipa::path(get, path = "/portal/", tag = "pages", security(()),
    responses((status = 200, description = "The portal page (HTML)", content_type = "text/html")))]
pub async fn portal_unframed() -> Response {
    page(PORTAL_HTML, &[])
}

/// The support console: never framed. It asks for the admin token and keeps it in the tab's
/// `sessionStorage`, never in a URL.
#[utoipa::path(get, path = "/console/", tag = "pages", security(()),
    responses((status = 200, description = "The console page (HTML)", content_type = "text/html")))]
pub async fn console() -> Response {
    page(CONSOLE_HTML, &[])
}

/// `/console` without the slash.
#[utoipa::path(get, path = "/console", tag = "pages", security(()),
    responses((status = 308, description = "To `/console/`")))]
pub async fn console_redirect() -> Redirect {
    Redirect::permanent("/console/")
}

/// A stylesheet or script of the pages.
#[utoipa::path(get, path = "/assets/{file}", tag = "pages", security(()),
    params(("file" = String, Path, description = "`herald.css`, `common.js`, `portal.js` or `console.js`")),
    responses((status = 200, description = "The file"), (status = 404, description = "No such file")))]
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, kind, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or(ApiError::NotFound("asset"))?;
    let mut r = ([(header::CONTENT_TYPE, *kind)], *body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}
