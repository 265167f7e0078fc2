//! Connections: create, list, read, change and delete; their secrets ([`secrets`]), health
//! ([`health`]) and charts ([`stats`]) are beside them.

pub mod health;
pub mod secrets;
pub mod stats;

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_shared::model::connection::{
    is_sensitive_header, validate_url, ShownSecret, SignatureScheme, DEFAULT_TIMEOUT_MS, MASK,
};
use herald_shared::model::{Auth, Connection, DeliveryOrder, HttpMethod};
use herald_shared::opwebhooks;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{Editor, Reader};
use crate::error::ApiError;
use crate::extract::{not_null, ApiJson, ApiQuery, NoQuery};
use crate::openapi::{ListOf, Refused};
use crate::schemas::{
    AuthSchema, DeliveryOrderSchema, DestinationUrl, Headers, HttpMethodSchema, Name, PublicKey,
    Secret, SignatureSchemeSchema,
};
use crate::state::AppState;

/// `POST /v1/connections` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    /// A name for people.
    #[schema(value_type = Name)]
    name: String,
    /// Where requests go.
    #[schema(value_type = DestinationUrl)]
    url: String,
    /// The signing secret; generated when left out. Only for `hmac_sha256`: Ed25519 key pairs
    /// are always generated.
    #[schema(value_type = Option<Secret>)]
    secret: Option<String>,
    /// `hmac_sha256` (default, `v1` signatures) or `ed25519` (`v1a`; the answer carries the
    /// `public_key` instead of a `secret`).
    #[schema(value_type = Option<SignatureSchemeSchema>)]
    signature_scheme: Option<SignatureScheme>,
    /// `POST` (default), `PUT` or `PATCH`.
    #[schema(value_type = Option<HttpMethodSchema>)]
    method: Option<HttpMethod>,
    /// Custom headers sent with every request.
    #[schema(value_type = Option<Headers>)]
    headers: Option<BTreeMap<String, String>>,
    /// `{"type": "bearer", "token"}`, `{"type": "basic", "username", "password"}` or
    /// `{"type": "oauth2_client_credentials", "token_url", "client_id", "client_secret",
    /// "scope"?, "audience"?, "client_auth"?}`.
    #[schema(value_type = Option<AuthSchema>)]
    auth: Option<Auth>,
    /// Mutual TLS: the client certificate Herald presents, and a CA trusted for this
    /// destination alone.
    tls: Option<TlsInput>,
    /// Request timeout; 15000 by default.
    #[schema(minimum = 100, maximum = 120000)]
    timeout_ms: Option<u64>,
    /// Most requests per second to this destination; unlimited when left out or `null`.
    #[schema(minimum = 1, maximum = 100000)]
    rate_limit_per_s: Option<u32>,
    /// `none` (default): as fast as they come; `per_resource`: one at a time per `resource`
    /// and `resource_id`, in the order intake accepted them; `per_connection`: one at a time
    /// for the whole connection.
    #[schema(value_type = Option<DeliveryOrderSchema>)]
    ordering: Option<DeliveryOrder>,
    /// Disabled connections get no new deliveries; `true` by default.
    enabled: Option<bool>,
}

/// `PATCH /v1/connections/{id}` body: only what changes. `null` clears `auth` and
/// `rate_limit_per_s`, and is refused for the other fields.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    /// A name for people.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Name, required = false)]
    name: Option<String>,
    /// Where requests go.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = DestinationUrl, required = false)]
    url: Option<String>,
    /// A new signing secret, in place at once (see `rotate-secret` for a grace period).
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Secret, required = false)]
    secret: Option<String>,
    /// Another signature scheme: a rotation (a new secret or key pair, read it with
    /// `GET /v1/connections/{id}/secret`), the old one signing through the grace period.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = SignatureSchemeSchema, required = false)]
    signature_scheme: Option<SignatureScheme>,
    /// `POST`, `PUT` or `PATCH`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = HttpMethodSchema, required = false)]
    method: Option<HttpMethod>,
    /// Replaces the custom headers; a masked value sent back (`********`) keeps that header's
    /// value.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Headers, required = false)]
    headers: Option<BTreeMap<String, String>>,
    /// `{"type": "bearer", "token"}`, `{"type": "basic", "username", "password"}`, or `null`
    /// to remove it.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Option<AuthSchema>, required = false)]
    auth: Option<Option<Auth>>,
    /// Replaces the client certificate; `client_key_pem` sent back masked (`********`) keeps
    /// the key; `null` removes mutual TLS.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Option<TlsInput>, required = false)]
    tls: Option<Option<TlsInput>>,
    /// Request timeout.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(minimum = 100, maximum = 120000, nullable = false)]
    timeout_ms: Option<u64>,
    /// Most requests per second to this destination; `null` removes the limit.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    rate_limit_per_s: Option<Option<u32>>,
    /// `none`, `per_resource` or `per_connection`; the routers follow a change within a
    /// second, and jobs already queued finish as they were queued.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = DeliveryOrderSchema, required = false)]
    ordering: Option<DeliveryOrder>,
    /// Disabled connections get no new deliveries. `true` on a connection Herald disabled
    /// clears `disabled_reason` and `disabled_at` and restarts its failing clock.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    enabled: Option<bool>,
}

/// A client certificate for mutual TLS, as given.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsInput {
    /// The client certificate (then any intermediates), PEM. Refused when it does not parse,
    /// has expired or is not valid yet.
    client_cert_pem: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1): sealed at rest, never shown. Refused
    /// when it does not match the certificate.
    client_key_pem: String,
    /// A CA (PEM) trusted for this connection's destination alone, besides the public roots.
    ca_pem: Option<String>,
}

/// Mutual TLS as the API shows it: never the key.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TlsView {
    /// The client certificate's subject, e.g. `CN=herald,O=Acme`.
    subject: String,
    /// When it expires, Unix milliseconds.
    not_after: i64,
    /// Whether it expires within 14 days.
    expiring_soon: bool,
    /// Always `********`.
    client_key_pem: &'static str,
    /// Whether a CA of the connection's own is trusted.
    custom_ca: bool,
}

/// The stored form of a given client certificate; a masked key keeps `old`'s.
fn tls_of(
    input: TlsInput,
    old: Option<&herald_shared::tls::ClientTls>,
) -> Result<herald_shared::tls::ClientTls, ApiError> {
    let key = match (input.client_key_pem.as_str(), old) {
        (MASK, Some(old)) => old.client_key_pem.clone(),
        (MASK, None) => {
            return Err(ApiError::field(
                "tls.client_key_pem",
                "the masked value stands for the current key; send the real key",
            ))
        }
        _ => input.client_key_pem,
    };
    Ok(herald_shared::tls::ClientTls::new(
        input.client_cert_pem,
        key,
        input.ca_pem,
        herald_shared::now_ms(),
    )?)
}

/// A connection as the API shows it: the secret is never shown after creation (use
/// `GET /v1/connections/{id}/secret`); auth credentials and the values of custom headers whose
/// name says they carry a secret are masked (`********`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    /// `con_...`.
    id: String,
    /// Always `webhook` for now.
    kind: String,
    /// A name for people.
    name: String,
    /// Where requests go.
    url: String,
    /// HTTP method.
    #[schema(value_type = HttpMethodSchema)]
    method: HttpMethod,
    /// Custom headers, secret-bearing values masked.
    headers: BTreeMap<String, String>,
    /// `hmac_sha256` or `ed25519`.
    #[schema(value_type = SignatureSchemeSchema)]
    signature_scheme: SignatureScheme,
    /// The `whpk_` public key receivers verify `v1a` signatures with (Ed25519 only).
    #[schema(value_type = Option<PublicKey>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// Authentication, credentials masked.
    #[schema(value_type = Option<AuthSchema>)]
    auth: Option<Value>,
    /// Mutual TLS: the certificate's subject and expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsView>,
    /// Request timeout.
    timeout_ms: u64,
    /// Most requests per second to this destination, if limited.
    rate_limit_per_s: Option<u32>,
    /// `none`, `per_resource` or `per_connection`.
    #[schema(value_type = DeliveryOrderSchema)]
    ordering: DeliveryOrder,
    /// Disabled connections get no new deliveries.
    enabled: bool,
    /// `failing` when Herald disabled it because every attempt failed for
    /// `HERALD_AUTO_DISABLE_AFTER`; `null` otherwise. Cleared by enabling it.
    #[schema(value_type = Option<String>, example = "failing")]
    disabled_reason: Option<String>,
    /// When Herald disabled it, Unix milliseconds; `null` otherwise.
    disabled_at: Option<i64>,
    /// Unix milliseconds.
    created_at: i64,
    /// Unix milliseconds.
    updated_at: i64,
}

/// A created connection, with its signing secret (shown this once); an Ed25519 connection
/// shows its `public_key` and no secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedConnection {
    /// The connection.
    #[serde(flatten)]
    connection: ConnectionView,
    /// The `whsec_` signing secret (HMAC-SHA256 only).
    #[schema(value_type = Option<Secret>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// The connection as the API shows it (see [`ConnectionView`]).
pub fn view(c: &Connection) -> ConnectionView {
    let auth = c.auth.as_ref().map(|a| match a {
        Auth::Bearer { .. } => json!({"type": "bearer", "token": MASK}),
        Auth::Basic { username, .. } => {
            json!({"type": "basic", "username": username, "password": MASK})
        }
        Auth::OAuth2ClientCredentials(o) => {
            let mut shown = json!({
                "type": "oauth2_client_credentials",
                "token_url": o.token_url,
                "client_id": o.client_id,
                "client_secret": MASK,
                "client_auth": o.client_auth,
            });
            for (name, value) in [("scope", &o.scope), ("audience", &o.audience)] {
                if let (Some(v), Some(obj)) = (value, shown.as_object_mut()) {
                    obj.insert(name.into(), json!(v));
                }
            }
            shown
        }
    });
    let headers = c
        .headers
        .iter()
        .map(|(n, v)| {
            let shown = if is_sensitive_header(n) { MASK } else { v };
            (n.clone(), shown.to_string())
        })
        .collect();
    let public_key = match ShownSecret::of(&c.secret) {
        ShownSecret::PublicKey(k) => Some(k),
        ShownSecret::Secret(_) => None,
    };
    let now = herald_shared::now_ms();
    let tls = c.tls.as_ref().map(|t| TlsView {
        subject: t.subject.clone(),
        not_after: t.not_after,
        expiring_soon: t.expiring_soon(now),
        client_key_pem: MASK,
        custom_ca: t.ca_pem.is_some(),
    });
    ConnectionView {
        id: c.id.clone(),
        kind: c.kind.clone(),
        name: c.name.clone(),
        url: c.url.clone(),
        method: c.method,
        headers,
        signature_scheme: c.signature_scheme(),
        public_key,
        auth,
        tls,
        timeout_ms: c.timeout_ms,
        rate_limit_per_s: c.rate_limit_per_s,
        ordering: c.ordering,
        enabled: c.enabled,
        disabled_reason: c.disabled_reason.clone(),
        disabled_at: c.disabled_at,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

/// Checks a connection as it would be stored, and its literal destination address.
pub(crate) fn validate(state: &AppState, c: &Connection) -> Result<(), ApiError> {
    c.validate(state.settings.allow_http)?;
    // Literal IPs are checked now; names are checked at send time against what they resolve to.
    check_literal(state, "url", &c.url)?;
    if let Some(Auth::OAuth2ClientCredentials(o)) = &c.auth {
        check_literal(state, "auth.token_url", &o.token_url)?;
    }
    Ok(())
}

/// Refuses a URL whose host is a literal address the destination policy forbids.
pub(crate) fn check_literal(state: &AppState, field: &str, url: &str) -> Result<(), ApiError> {
    let url = validate_url(url, state.settings.allow_http)
        .map_err(|e| ApiError::field(field, e.message))?;
    if let Some(host) = url.host_str() {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if !state.settings.destinations.allows(ip) {
                return Err(ApiError::field(
                    field,
                    "points at a private, loopback or otherwise special address; allowed only with HERALD_ALLOW_PRIVATE_DESTINATIONS or HERALD_DESTINATION_ALLOWLIST",
                ));
            }
        }
    }
    Ok(())
}

/// The workspace's connection `id`, or 404.
pub(crate) async fn load(state: &AppState, ws: &str, id: &str) -> Result<Connection, ApiError> {
    state
        .store
        .get_connection(ws, id)
        .await?
        .ok_or(ApiError::NotFound("connection"))
}

/// Creates a connection. The response carries the signing secret (generated when not given).
#[utoipa::path(post, path = "/v1/connections", tag = "connections", request_body = NewConnection, responses((status = 201, description = "The connection, with its signing secret (shown this once)", body = CreatedConnection), Refused))]
pub async fn create(
    State(state): State<AppState>,
    Editor(ws): Editor,
    ApiJson(body): ApiJson<NewConnection>,
) -> Result<(StatusCode, Json<CreatedConnection>), ApiError> {
    let now = herald_shared::now_ms();
    let scheme = body.signature_scheme.unwrap_or_default();
    let secret = secrets::new_secret(scheme, body.secret)?;
    let tls = body.tls.map(|t| tls_of(t, None)).transpose()?;
    let conn = Connection {
        id: herald_shared::ids::new_id("con"),
        workspace_id: ws,
        kind: "webhook".into(),
        name: body.name,
        url: body.url,
        secret,
        previous_secrets: Vec::new(),
        method: body.method.unwrap_or_default(),
        headers: body.headers.unwrap_or_default(),
        auth: body.auth,
        tls,
        timeout_ms: body.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        rate_limit_per_s: body.rate_limit_per_s,
        ordering: body.ordering.unwrap_or_default(),
        enabled: body.enabled.unwrap_or(true),
        disabled_reason: None,
        disabled_at: None,
        created_at: now,
        updated_at: now,
    };
    validate(&state, &conn)?;
    state.store.put_connection(&conn).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedConnection {
            connection: view(&conn),
            secret: match ShownSecret::of(&conn.secret) {
                ShownSecret::Secret(s) => Some(s),
                ShownSecret::PublicKey(_) => None,
            },
        }),
    ))
}

/// Lists the workspace's connections, newest first.
#[utoipa::path(get, path = "/v1/connections", tag = "connections", responses((status = 200, description = "The connections (one page); secrets are never shown", body = ListOf<ConnectionView>), Refused))]
pub async fn list(
    State(state): State<AppState>,
    Reader(ws): Reader,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<ListOf<ConnectionView>>, ApiError> {
    list_of(&state, &ws).await
}

/// A workspace's connections as the API shows them (the portal's and the console's list).
pub async fn list_of(state: &AppState, ws: &str) -> Result<Json<ListOf<ConnectionView>>, ApiError> {
    let data = state
        .store
        .list_connections(ws)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(ListOf {
        data,
        next_cursor: None,
    }))
}

/// One connection.
#[utoipa::path(get, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 200, description = "The connection; the secret is never shown", body = ConnectionView), Refused))]
pub async fn get(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    Ok(Json(view(&load(&state, &ws, &id).await?)))
}

/// Changes the given fields.
#[utoipa::path(patch, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path, description = "Connection id")), request_body = ConnectionPatch, responses((status = 200, description = "The changed connection", body = ConnectionView), Refused))]
pub async fn update(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ConnectionPatch>,
) -> Result<Json<ConnectionView>, ApiError> {
    let mut c = load(&state, &ws, &id).await?;
    if let Some(v) = patch.name {
        c.name = v;
    }
    // Credentials belong to the destination they were given for: when the URL moves to
    // another origin, they are dropped unless given again in the same request (an editor
    // could otherwise point a connection at their own server and read them off the wire).
    let moved = patch
        .url
        .as_deref()
        .is_some_and(|new| origin(new) != origin(&c.url));
    if let Some(v) = patch.url {
        c.url = v;
    }
    if moved {
        if patch.auth.is_none() {
            c.auth = None;
        }
        c.headers.retain(|name, _| !is_sensitive_header(name));
    }
    let now = herald_shared::now_ms();
    match (patch.signature_scheme, patch.secret) {
        (Some(scheme), given) if scheme != c.signature_scheme() => {
            let new = secrets::new_secret(scheme, given)?;
            let expires_at = now + state.settings.secret_grace.as_millis() as i64;
            secrets::rotate_into(&mut c, new, now, expires_at);
        }
        (scheme, Some(given)) => {
            c.secret = secrets::new_secret(scheme.unwrap_or(c.signature_scheme()), Some(given))?;
        }
        (_, None) => {}
    }
    if let Some(v) = patch.method {
        c.method = v;
    }
    if let Some(mut v) = patch.headers {
        // A masked value read back from the API and sent again means "unchanged".
        for (name, value) in &mut v {
            if value == MASK {
                // Header names are case-insensitive; a mask for a header that was not there
                // would be sent to the receiver literally.
                let old = c
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone());
                match old {
                    Some(old) => *value = old,
                    None if moved => {
                        return Err(ApiError::field(
                            format!("headers.{name}"),
                            "a secret header does not follow the connection to another host; send its value again",
                        ))
                    }
                    None => {
                        return Err(ApiError::field(
                            format!("headers.{name}"),
                            "the masked value stands for an existing header's value; send the real value",
                        ))
                    }
                }
            }
        }
        c.headers = v;
    }
    if let Some(mut v) = patch.auth {
        // A masked client secret read back and sent again means "unchanged", for the same
        // token endpoint only: a secret never follows the token URL to another origin.
        if let Some(Auth::OAuth2ClientCredentials(new)) = &mut v {
            if new.client_secret == MASK {
                match &c.auth {
                    Some(Auth::OAuth2ClientCredentials(old))
                        if origin(&old.token_url) == origin(&new.token_url) =>
                    {
                        new.client_secret.clone_from(&old.client_secret);
                    }
                    _ => {
                        return Err(ApiError::field(
                            "auth.client_secret",
                            "the masked value stands for the current secret of the same token endpoint; send the real value",
                        ))
                    }
                }
            }
        }
        c.auth = v;
    }
    if let Some(v) = patch.tls {
        c.tls = v.map(|t| tls_of(t, c.tls.as_ref())).transpose()?;
    }
    if let Some(v) = patch.timeout_ms {
        c.timeout_ms = v;
    }
    if let Some(v) = patch.rate_limit_per_s {
        c.rate_limit_per_s = v;
    }
    if let Some(v) = patch.ordering {
        c.ordering = v;
    }
    let was_enabled = c.enabled;
    if let Some(v) = patch.enabled {
        c.enabled = v;
        if v {
            c.disabled_reason = None;
            c.disabled_at = None;
        }
    }
    c.updated_at = now;
    validate(&state, &c)?;
    if c.enabled && !was_enabled {
        // A fresh start: failures from before it was disabled do not count towards the next.
        state.store.clear_failing(&ws, &c.id).await?;
    }
    state.store.put_connection(&c).await?;
    if c.enabled != was_enabled {
        let (kind, extra) = if c.enabled {
            (opwebhooks::CONNECTION_ENABLED, json!({}))
        } else {
            (opwebhooks::CONNECTION_DISABLED, json!({"reason": "manual"}))
        };
        // The change is made; a notice that cannot be sent is logged, not an error to the caller.
        if let Err(e) = state.ops.notify(kind, &ws, &c.id, extra).await {
            tracing::warn!(error = %e, connection_id = %c.id, "cannot send {kind}");
        }
    }
    Ok(Json(view(&c)))
}

/// A URL's origin (scheme, host and port), the unit credentials are bound to.
fn origin(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// Deletes a connection and the rules that point at it.
#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 204, description = "Deleted (no body)"), Refused))]
pub async fn delete(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_connection(&ws, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("connection"))
    }
}
