//! Extractors: JSON bodies and query strings whose errors name the field, and the caller.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use herald_shared::model::workspace::hash_key;
use herald_shared::model::KeyScope;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON body. Errors come back as `invalid_json` or `invalid_field` with the field's path.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A raw body whose rejections (too large, unreadable) use the API's error shape.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadJson(e.body_text())
                }
            })
    }
}

/// Parses JSON, naming the offending field when the shape is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadJson(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadJson(format!("the body is not valid JSON: {inner}"));
        }
        let message = strip_position(&inner.to_string());
        // A missing field is reported at its parent; name the field itself.
        let field = backticked(&message)
            .filter(|_| message.starts_with("missing field"))
            .map(|f| {
                if path == "." {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                }
            })
            .unwrap_or(path);
        ApiError::field(
            if field == "." {
                "body".to_string()
            } else {
                field
            },
            message,
        )
    })
}

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A query string; errors name the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                let field = backticked(&message)
                    .filter(|_| message.starts_with("missing field"))
                    .map(str::to_string)
                    .unwrap_or(path);
                ApiError::field(field, message)
            })
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator's admin token.
    Admin,
    /// A portal session, confined to one workspace and its role.
    Session {
        /// The workspace.
        id: String,
        /// What the session may do.
        role: crate::sessions::Role,
        /// The session as stored.
        session: crate::sessions::Session,
    },
    /// A workspace key.
    Workspace {
        /// The workspace.
        id: String,
        /// What the key may do.
        scope: KeyScope,
        /// The key's SHA-256 (what rate limits count against).
        key_hash: String,
    },
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        if let Some(admin) = &state.settings.admin_token {
            // Compared as hashes, so neither the token's bytes nor its length show in timing.
            let admin = hash_key(admin.expose_secret());
            let given = hash_key(token);
            if subtle::ConstantTimeEq::ct_eq(admin.as_bytes(), given.as_bytes()).into() {
                return Ok(Caller::Admin);
            }
        }
        if token.starts_with(crate::sessions::TOKEN_PREFIX) {
            // Sessions are looked up by their SHA-256, like keys; an expired one is gone.
            return match crate::sessions::lookup(&state.store, token).await? {
                Some(session) => Ok(Caller::Session {
                    id: session.workspace_id.clone(),
                    role: session.role,
                    session,
                }),
                None => Err(ApiError::Unauthorized),
            };
        }
        if !(token.starts_with("sk_") || token.starts_with("pk_")) {
            return Err(ApiError::Unauthorized);
        }
        // Keys are looked up by their SHA-256: the comparison is of hashes inside Redis, so
        // timing reveals nothing about the key.
        match state.keys.lookup(&state.store, token).await? {
            Some(key) => Ok(Caller::Workspace {
                id: key.workspace_id,
                scope: key.scope,
                key_hash: hash_key(token),
            }),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// What an endpoint asks of its workspace caller.
#[derive(Clone, Copy)]
enum Need {
    /// The workspace's secret key.
    SecretKey,
    /// The secret key or a portal session of either role.
    Read,
    /// The secret key or an editor session.
    Edit,
}

/// The workspace a caller may act on for `need`, or why not (403).
fn workspace_for(caller: Caller, need: Need) -> Result<String, ApiError> {
    use crate::sessions::Role;
    match (caller, need) {
        (
            Caller::Workspace {
                id,
                scope: KeyScope::Secret,
                ..
            },
            _,
        ) => Ok(id),
        (Caller::Session { id, .. }, Need::Read) => Ok(id),
        (
            Caller::Session {
                id,
                role: Role::Editor,
                ..
            },
            Need::Edit,
        ) => Ok(id),
        (Caller::Session { .. }, Need::Edit) => Err(ApiError::Forbidden(
            "a viewer session may only read; mint an editor session to change anything",
        )),
        (Caller::Session { .. }, Need::SecretKey) => Err(ApiError::Forbidden(SESSION_REFUSED)),
        (Caller::Workspace { .. }, _) => Err(ApiError::Forbidden(PUBLISHABLE_REFUSED)),
        (Caller::Admin, _) => Err(ApiError::Forbidden(ADMIN_REFUSED)),
    }
}

const SESSION_REFUSED: &str =
    "a portal session cannot do this; the workspace's secret key can (from the SaaS backend)";
const ADMIN_REFUSED: &str =
    "the admin token manages workspaces only; use the workspace's secret key";
const PUBLISHABLE_REFUSED: &str =
    "a publishable key may only send events; use the workspace's secret key";

/// A caller holding a workspace's secret key: may manage everything in it.
pub struct SecretKey(pub String);

/// A caller who may read the workspace's configuration and history: its secret key, or a
/// portal session of either role.
pub struct Reader(pub String);

/// A caller who may change the workspace's connections and rules, send test events and
/// replay: its secret key, or an editor session.
pub struct Editor(pub String);

macro_rules! workspace_extractor {
    ($name:ident, $need:expr) => {
        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let caller = Caller::from_request_parts(parts, state).await?;
                workspace_for(caller, $need).map($name)
            }
        }
    };
}

workspace_extractor!(SecretKey, Need::SecretKey);
workspace_extractor!(Reader, Need::Read);
workspace_extractor!(Editor, Need::Edit);

/// A portal session (its token and what it holds).
pub struct PortalSession {
    /// The token the caller presented.
    pub token: String,
    /// The session.
    pub session: crate::sessions::Session,
}

impl FromRequestParts<AppState> for PortalSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Session { session, .. } => {
                let token = parts
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.get(7..))
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default();
                Ok(PortalSession { token, session })
            }
            _ => Err(ApiError::Forbidden(
                "this endpoint takes a portal session token (sess_...)",
            )),
        }
    }
}

/// A caller holding a workspace key of either scope: may send events.
pub struct AnyKey {
    /// The workspace.
    pub workspace_id: String,
    /// The key's SHA-256.
    pub key_hash: String,
}

impl FromRequestParts<AppState> for AnyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Workspace { id, key_hash, .. } => Ok(AnyKey {
                workspace_id: id,
                key_hash,
            }),
            Caller::Session { .. } => Err(ApiError::Forbidden(
                "a portal session cannot send events; send events with a workspace key",
            )),
            Caller::Admin => Err(ApiError::Forbidden(
                "the admin token manages workspaces only; send events with a workspace key",
            )),
        }
    }
}

/// The operator.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.settings.admin_token.is_none() {
            return Err(ApiError::Forbidden(
                "the admin API is disabled: set HERALD_ADMIN_TOKEN",
            ));
        }
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Workspace { .. } | Caller::Session { .. } => {
                Err(ApiError::Forbidden("this endpoint needs the admin token"))
            }
        }
    }
}

/// The query of an endpoint that takes no parameters: any parameter is refused, so a typo or
/// a filter this endpoint does not have is not silently ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Deserialises a field that may be left out but, when present, must not be `null`.
pub fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Checks an optional id or type given as a filter: a token of at most 128 characters.
pub fn filter_token(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            herald_shared::model::check_token(field, &v, 128)?;
            Ok(Some(v))
        }
    }
}

/// `limit` and `cursor` of a list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// 1 to 250; 50 by default.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Checks `limit` and decodes `cursor`.
pub fn page(
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<(usize, Option<herald_shared::store::Cursor>), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=250).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 250"));
    }
    let cursor = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            herald_shared::store::Cursor::decode(c)
                .filter(|_| c.len() <= 512)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API returned"))?,
        ),
    };
    Ok((limit, cursor))
}

/// `{"data": [...], "next_cursor": ...}`.
pub fn list<T: serde::Serialize>(
    data: Vec<T>,
    next: Option<herald_shared::store::Cursor>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"data": data, "next_cursor": next.map(|c| c.encode())}))
}
