//! The portal, the support console and their assets, shipped inside the binary.
//!
//! Every page gets a strict Content-Security-Policy: no inline script or style, nothing from
//! another origin, requests only to this origin. The portal may be framed only by the origins
//! its workspace listed in `frame_ancestors`; the console by nobody.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The skeleton both pages share: head, header, tab list and panels.
const SKELETON: &str = include_str!("../../assets/page.html");

/// A page: its title, script and status line, what comes before its tabs, and the tabs.
struct PageSpec {
    title: &'static str,
    script: &'static str,
    status: &'static str,
    before_app: &'static str,
    nav_label: &'static str,
    tabs: &'static [Tab],
}

/// One tab and its panel.
struct Tab {
    id: &'static str,
    label: &'static str,
    heading: &'static str,
    /// `data-needs` of the tab: the role that may use it (the portal hides it from others).
    needs: Option<&'static str>,
    /// The panel's content under its heading, when it is more than the tab's one slot.
    body: Option<&'static str>,
}

const PORTAL: PageSpec = PageSpec {
    title: "Webhooks",
    script: "portal.js",
    status: r#"<p class="session" id="session-status" aria-live="polite"></p>"#,
    before_app: "  <div id=\"fatal\" class=\"notice bad\" role=\"alert\" hidden></div>\n",
    nav_label: "Webhook settings",
    tabs: &[
        Tab {
            body: Some(
                r#"<div id="secret-once" class="panel secret-once" role="status" hidden></div>
        <div id="connections-list"></div>
        <div id="connection-stats-slot"></div>
        <div id="connection-form-slot"></div>"#,
            ),
            ..tab("connections", "Connections", "Connections")
        },
        Tab {
            body: Some(
                r#"<div id="rules-list"></div>
        <div id="rule-form-slot"></div>"#,
            ),
            ..tab("rules", "Rules", "Rules")
        },
        Tab {
            needs: Some("editor"),
            ..tab("test", "Send test event", "Send a test event")
        },
        tab("history", "Delivery history", "Delivery history"),
        tab("dead", "Dead letters", "Dead letters"),
    ],
};

const CONSOLE: PageSpec = PageSpec {
    title: "Herald support console",
    script: "console.js",
    status: r#"<p class="session"><button type="button" id="sign-out" hidden>Sign out</button></p>"#,
    before_app: include_str!("../../assets/console/login.html"),
    nav_label: "Console",
    tabs: &[
        tab("events", "Events", "Find an event"),
        tab("dead", "Dead letters", "Dead letters"),
        tab("health", "Connection health", "Connection health"),
    ],
};

/// A tab any role may use, whose panel is one slot (`<div id="{id}-slot">`) its script fills.
const fn tab(id: &'static str, label: &'static str, heading: &'static str) -> Tab {
    Tab {
        id,
        label,
        heading,
        needs: None,
        body: None,
    }
}

/// The page's HTML: the skeleton filled in with its parts.
fn render(spec: &PageSpec) -> String {
    let mut tabs = String::new();
    let mut panels = String::new();
    for t in spec.tabs {
        let needs = t
            .needs
            .map(|n| format!(" data-needs=\"{n}\""))
            .unwrap_or_default();
        tabs += &format!(
            "      <button type=\"button\" role=\"tab\" data-tab=\"{id}\" id=\"tab-{id}\" \
             aria-controls=\"panel-{id}\"{needs}>{label}</button>\n",
            id = t.id,
            label = t.label,
        );
        let body = t
            .body
            .map(str::to_string)
            .unwrap_or_else(|| format!("<div id=\"{}-slot\"></div>", t.id));
        panels += &format!(
            "      <section role=\"tabpanel\" id=\"panel-{id}\" aria-labelledby=\"tab-{id}\" \
             hidden>\n        <h2>{heading}</h2>\n        {body}\n      </section>\n",
            id = t.id,
            heading = t.heading,
        );
    }
    SKELETON
        .replace("{title}", spec.title)
        .replace("{script}", spec.script)
        .replace("{status}", spec.status)
        .replace("{before_app}", spec.before_app)
        .replace("{nav_label}", spec.nav_label)
        .replace("{tabs}", &tabs)
        .replace("{panels}", &panels)
}

/// The portal's HTML, rendered once.
fn portal_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| render(&PORTAL))
}

/// The console's HTML, rendered once.
fn console_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| render(&CONSOLE))
}

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
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/charts.js"),
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
    page(portal_html(), &ancestors)
}

/// The portal page at its short address: usable on its own, never framed.
#[utoipa::path(get, path = "/portal/", tag = "pages", security(()),
    responses((status = 200, description = "The portal page (HTML)", content_type = "text/html")))]
pub async fn portal_unframed() -> Response {
    page(portal_html(), &[])
}

/// The support console: never framed. It asks for the admin token and keeps it in the tab's
/// `sessionStorage`, never in a URL.
#[utoipa::path(get, path = "/console/", tag = "pages", security(()),
    responses((status = 200, description = "The console page (HTML)", content_type = "text/html")))]
pub async fn console() -> Response {
    page(console_html(), &[])
}

/// `/console` without the slash.
#[utoipa::path(get, path = "/console", tag = "pages", security(()),
    responses((status = 308, description = "To `/console/`")))]
pub async fn console_redirect() -> Redirect {
    Redirect::permanent("/console/")
}

/// A stylesheet or script of the pages.
#[utoipa::path(get, path = "/assets/{file}", tag = "pages", security(()),
    params(("file" = String, Path, description = "`herald.css`, `common.js`, `charts.js`, `portal.js` or `console.js`")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_fill_every_slot_of_the_skeleton() {
        for html in [portal_html(), console_html()] {
            assert!(!html.contains('{'), "an unfilled slot: {html}");
            assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
        }
        assert!(portal_html().contains(
            r#"data-tab="test" id="tab-test" aria-controls="panel-test" data-needs="editor">"#
        ));
        assert!(console_html().contains(r#"<main id="login" hidden>"#));
    }
}
