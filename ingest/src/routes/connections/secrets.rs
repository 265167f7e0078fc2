//! A connection's signing secrets: read them (secret key only) and rotate them with a grace
//! period during which the old one still signs. An Ed25519 connection's private key is never
//! shown: its `whpk_` public key is, in its place.

use axum::extract::{Path, State};
use axum::Json;
use herald_shared::model::connection::{PreviousSecret, ShownSecret, SignatureScheme};
use herald_shared::model::Connection;
use herald_shared::signing::SigningKey;
use serde::{Deserialize, Serialize};

use super::{load, validate};
use crate::auth::{Editor, SecretKey};
use crate::error::ApiError;
use crate::extract::OptionalJson;
use crate::openapi::Refused;
use crate::schemas::{PreviousSecretSchema, PublicKey, Secret, SignatureSchemeSchema};
use crate::state::AppState;

/// A signing secret as its owner sees it: a `whsec_` secret, or an Ed25519 key's `whpk_`
/// public key.
#[derive(Serialize, Default)]
pub struct Shown {
    /// The `whsec_` secret (HMAC-SHA256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The `whpk_` public key (Ed25519).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl Shown {
    /// How `secret` is shown.
    pub fn of(secret: &str) -> Self {
        match ShownSecret::of(secret) {
            ShownSecret::Secret(s) => Self {
                secret: Some(s),
                public_key: None,
            },
            ShownSecret::PublicKey(k) => Self {
                secret: None,
                public_key: Some(k),
            },
        }
    }
}

/// A rotated-out secret as shown: the secret or public key, and when it stops signing.
#[derive(Serialize)]
pub struct ShownPrevious {
    #[serde(flatten)]
    shown: Shown,
    /// Unix milliseconds after which it no longer signs.
    expires_at: i64,
}

/// The signing secrets of a connection.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionSecret {
    /// `hmac_sha256` or `ed25519`.
    #[schema(value_type = SignatureSchemeSchema)]
    signature_scheme: SignatureScheme,
    /// The current `whsec_` secret (HMAC-SHA256 only).
    #[schema(value_type = Option<Secret>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// The current `whpk_` public key (Ed25519 only).
    #[schema(value_type = Option<PublicKey>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// Rotated-out secrets (or public keys) still in their grace period.
    #[schema(value_type = Vec<PreviousSecretSchema>)]
    previous_secrets: Vec<ShownPrevious>,
}

/// A rotated secret: the new one (shown this once; for Ed25519 its public key) and when the
/// old one stops signing.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    /// The connection.
    id: String,
    /// `hmac_sha256` or `ed25519`.
    #[schema(value_type = SignatureSchemeSchema)]
    signature_scheme: SignatureScheme,
    /// The new `whsec_` secret (HMAC-SHA256 only).
    #[schema(value_type = Option<Secret>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// The new `whpk_` public key (Ed25519 only).
    #[schema(value_type = Option<PublicKey>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// Unix milliseconds after which the previous secret no longer signs.
    previous_secret_expires_at: i64,
}

/// The current signing secret (and any still in their grace period); for an Ed25519
/// connection the public keys instead. Secret key only: a portal session never reads a secret
/// after it was created.
#[utoipa::path(get, path = "/v1/connections/{id}/secret", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 200, description = "The current secret (or public key) and those still in their grace period", body = ConnectionSecret), Refused))]
pub async fn secret(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    Path(id): Path<String>,
) -> Result<Json<ConnectionSecret>, ApiError> {
    let c = load(&state, &ws, &id).await?;
    let now = herald_shared::now_ms();
    let previous_secrets = c
        .previous_secrets
        .iter()
        .filter(|p| p.expires_at > now)
        .map(|p| ShownPrevious {
            shown: Shown::of(&p.secret),
            expires_at: p.expires_at,
        })
        .collect();
    let Shown { secret, public_key } = Shown::of(&c.secret);
    Ok(Json(ConnectionSecret {
        signature_scheme: c.signature_scheme(),
        secret,
        public_key,
        previous_secrets,
    }))
}

/// `POST /v1/connections/{id}/rotate-secret` body (optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// The new `whsec_` signing secret; generated when left out. Ed25519 keys are always
    /// generated.
    #[schema(value_type = Option<Secret>)]
    secret: Option<String>,
    /// The scheme to sign with from now on; the connection's current one when left out.
    /// Switching keeps the old secret signing through the grace period, so receivers see
    /// both a `v1` and a `v1a` signature meanwhile.
    #[schema(value_type = Option<SignatureSchemeSchema>)]
    signature_scheme: Option<SignatureScheme>,
}

/// The signing secret a connection of `scheme` gets: the one given (a `whsec_` secret, only
/// for HMAC-SHA256), or a new one.
pub(crate) fn new_secret(
    scheme: SignatureScheme,
    given: Option<String>,
) -> Result<String, ApiError> {
    match (scheme, given) {
        (_, None) => Ok(scheme.generate()),
        (SignatureScheme::Ed25519, Some(_)) => Err(ApiError::field(
            "secret",
            "Ed25519 key pairs are generated by Herald; leave secret out (the public key is in the answer)",
        )),
        (SignatureScheme::HmacSha256, Some(s)) => match SigningKey::parse_strict(&s) {
            Ok(_) => Ok(s),
            Err(e) => Err(ApiError::field("secret", e.to_string())),
        },
    }
}

/// Puts `new` in place as the connection's secret; the current one keeps signing until
/// `expires_at` (at most five rotated-out secrets are kept).
pub(crate) fn rotate_into(c: &mut Connection, new: String, now: i64, expires_at: i64) {
    let old = std::mem::replace(&mut c.secret, new);
    c.previous_secrets.retain(|p| p.expires_at > now);
    c.previous_secrets.insert(
        0,
        PreviousSecret {
            secret: old,
            expires_at,
        },
    );
    c.previous_secrets.truncate(5);
}

/// Makes a new signing secret (or Ed25519 key pair, or switches the scheme); the old one keeps
/// signing alongside it for the grace period (`HERALD_SECRET_GRACE`, 24 h by default). The new
/// secret is shown this once; for Ed25519 the answer carries the public key.
#[utoipa::path(post, path = "/v1/connections/{id}/rotate-secret", tag = "connections", params(("id" = String, Path, description = "Connection id")), request_body = Option<Rotate>, responses((status = 200, description = "The new secret (or public key)", body = RotatedSecret), Refused))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Rotate>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let mut c = load(&state, &ws, &id).await?;
    let now = herald_shared::now_ms();
    let expires_at = now + state.settings.secret_grace.as_millis() as i64;
    let scheme = body.signature_scheme.unwrap_or(c.signature_scheme());
    let new = new_secret(scheme, body.secret)?;
    rotate_into(&mut c, new, now, expires_at);
    c.updated_at = now;
    validate(&state, &c)?;
    state.store.put_connection(&c).await?;
    let Shown { secret, public_key } = Shown::of(&c.secret);
    Ok(Json(RotatedSecret {
        id: c.id.clone(),
        signature_scheme: c.signature_scheme(),
        secret,
        public_key,
        previous_secret_expires_at: expires_at,
    }))
}
