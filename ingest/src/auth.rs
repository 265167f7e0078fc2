//! Who is calling, from `Authorization: Bearer <token>`, and what they may do: the admin token,
//! a portal session, or a workspace key; one extractor per kind of access an endpoint needs.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use herald_shared::model::workspace::hash_key;
use herald_shared::model::KeyScope;
use herald_shared::store::sessions::{Role, Session, TOKEN_PREFIX};
use secrecy::ExposeSecret;

use crate::error::ApiError;
use crate::state::AppState;

/// The token of `Authorization: Bearer <token>` (the scheme in either case), if one is given.
/// The one place the header is read.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
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
        role: Role,
        /// The session as stored.
        session: Session,
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
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if let Some(admin) = &state.settings.admin_token {
            // Compared as hashes, so neither the token's bytes nor its length show in timing.
            let admin = hash_key(admin.expose_secret());
            let given = hash_key(token);
            if subtle::ConstantTimeEq::ct_eq(admin.as_bytes(), given.as_bytes()).into() {
                return Ok(Caller::Admin);
            }
        }
        if token.starts_with(TOKEN_PREFIX) {
            // Sessions are looked up by their SHA-256, like keys; an expired one is gone.
            return match state.store.session(token).await? {
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

/// An extractor decided by who is calling: each kind of access says which callers it takes.
trait FromCaller: Sized {
    /// This access for `caller`, or why not.
    fn from_caller(caller: Caller, parts: &Parts) -> Result<Self, ApiError>;
}

/// Implements `FromRequestParts` for each `FromCaller` type: find the caller, then ask.
macro_rules! from_caller {
    ($($name:ident),*) => {$(
        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let caller = Caller::from_request_parts(parts, state).await?;
                <$name as FromCaller>::from_caller(caller, parts)
            }
        }
    )*};
}

from_caller!(SecretKey, Reader, Editor, PortalSession, AnyKey);

impl FromCaller for SecretKey {
    fn from_caller(caller: Caller, _: &Parts) -> Result<Self, ApiError> {
        workspace_for(caller, Need::SecretKey).map(SecretKey)
    }
}

impl FromCaller for Reader {
    fn from_caller(caller: Caller, _: &Parts) -> Result<Self, ApiError> {
        workspace_for(caller, Need::Read).map(Reader)
    }
}

impl FromCaller for Editor {
    fn from_caller(caller: Caller, _: &Parts) -> Result<Self, ApiError> {
        workspace_for(caller, Need::Edit).map(Editor)
    }
}

/// A portal session (its token and what it holds).
pub struct PortalSession {
    /// The token the caller presented.
    pub token: String,
    /// The session.
    pub session: Session,
}

impl FromCaller for PortalSession {
    fn from_caller(caller: Caller, parts: &Parts) -> Result<Self, ApiError> {
        match caller {
            Caller::Session { session, .. } => Ok(PortalSession {
                token: bearer(parts).unwrap_or_default().to_string(),
                session,
            }),
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

impl FromCaller for AnyKey {
    fn from_caller(caller: Caller, _: &Parts) -> Result<Self, ApiError> {
        match caller {
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

/// The operator acting on the workspace named by the path's `{ws}`, which exists (404 if not).
pub struct AdminOf(pub String);

/// The `{ws}` of a console path; other parameters of the path are the handler's.
#[derive(serde::Deserialize)]
struct WorkspaceParam {
    ws: String,
}

impl FromRequestParts<AppState> for AdminOf {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Admin::from_request_parts(parts, state).await?;
        let Path(WorkspaceParam { ws }) = Path::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("workspace"))?;
        existing_workspace(state, &ws).await?;
        Ok(AdminOf(ws))
    }
}

/// 404 unless the workspace exists.
pub async fn existing_workspace(state: &AppState, ws: &str) -> Result<(), ApiError> {
    if ws.len() > 128 || state.store.get_workspace(ws).await?.is_none() {
        return Err(ApiError::NotFound("workspace"));
    }
    Ok(())
}
