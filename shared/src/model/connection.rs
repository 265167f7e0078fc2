//! Connections: the destinations of a workspace. (Over 400 lines only for the unit tests of
//! its validation and masking.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{check_name, FieldError};

/// The HTTP method a connection is called with.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// The default.
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
}

impl HttpMethod {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// How requests are signed: the kind of the connection's current signing secret.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// `v1`: HMAC-SHA256 with a `whsec_` secret (the default).
    #[default]
    HmacSha256,
    /// `v1a`: Ed25519 with a key pair Herald generates; receivers hold the `whpk_` public key.
    Ed25519,
}

impl SignatureScheme {
    /// The scheme of a stored signing secret (`whsk_` is an Ed25519 private key).
    pub fn of_secret(secret: &str) -> Self {
        if secret.starts_with(crate::signing::ed25519::PRIVATE_PREFIX) {
            Self::Ed25519
        } else {
            Self::HmacSha256
        }
    }

    /// A new signing secret of this scheme: a `whsec_` secret or a `whsk_` private key.
    pub fn generate(self) -> String {
        match self {
            Self::HmacSha256 => crate::signing::generate_secret(),
            Self::Ed25519 => crate::signing::ed25519::PrivateKey::generate().encode(),
        }
    }
}

/// In what order a connection's deliveries go out (`"ordering"`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrder {
    /// As fast as they come, many at once (the default).
    #[default]
    None,
    /// One at a time per `resource` and `resource_id`, in the order intake accepted them.
    PerResource,
    /// One at a time for the whole connection, in the order intake accepted them.
    PerConnection,
}

impl DeliveryOrder {
    /// The setting as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::PerResource => "per_resource",
            Self::PerConnection => "per_connection",
        }
    }

    /// Whether deliveries go out one at a time per key.
    pub fn is_ordered(self) -> bool {
        self != Self::None
    }

    /// The key an event's deliveries are ordered by (`None` when they are not ordered): the
    /// resource type and id, or one key for the whole connection.
    pub fn key_of(self, event: &super::Event) -> Option<String> {
        match self {
            Self::None => None,
            Self::PerResource => Some(format!("r:{}:{}", event.resource, event.resource_id)),
            Self::PerConnection => Some("c".to_string()),
        }
    }
}

/// What a signing secret shows to its owner: a `whsec_` secret itself, or the `whpk_` public
/// key of a `whsk_` private key (which is never shown).
pub enum ShownSecret {
    /// `whsec_...`.
    Secret(String),
    /// `whpk_...`.
    PublicKey(String),
}

impl ShownSecret {
    /// How `secret` is shown.
    pub fn of(secret: &str) -> Self {
        match crate::signing::ed25519::PrivateKey::parse(secret) {
            Ok(key) => Self::PublicKey(key.public_key()),
            Err(_) => Self::Secret(secret.to_string()),
        }
    }
}

/// Authentication sent with each request to the destination.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// `Authorization: Basic <base64(username:password)>`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>` with a token from an OAuth 2.0 token endpoint, client
    /// credentials grant (RFC 6749 section 4.4), cached across deliverers until shortly before
    /// it expires.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials(OAuth2),
}

/// The settings of an OAuth 2.0 client credentials grant.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    /// The token endpoint (subject to the same destination policy as the connection's URL).
    pub token_url: String,
    /// The client's id.
    pub client_id: String,
    /// The client's secret (sealed at rest, masked on read).
    pub client_secret: String,
    /// `scope` of the token request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `audience` of the token request (as some providers require), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// How the client authenticates to the token endpoint (`null` or absent: the default).
    #[serde(default, deserialize_with = "null_is_default")]
    pub client_auth: ClientAuth,
}

fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// How a client authenticates to a token endpoint (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the id and secret (the default, which every server must support).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// A signing secret that was rotated out and still signs until `expires_at`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviousSecret {
    /// The old `whsec_` secret.
    pub secret: String,
    /// Unix milliseconds after which it no longer signs.
    pub expires_at: i64,
}

/// A webhook destination.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connection {
    /// `con_...`.
    pub id: String,
    /// The workspace it belongs to.
    pub workspace_id: String,
    /// Always `webhook` for now.
    pub kind: String,
    /// A name for people.
    pub name: String,
    /// Where requests go.
    pub url: String,
    /// The current signing secret: `whsec_` (HMAC-SHA256) or `whsk_` (an Ed25519 private
    /// key); its kind is the connection's [`SignatureScheme`].
    pub secret: String,
    /// Secrets rotated out that still sign during their grace period.
    #[serde(default)]
    pub previous_secrets: Vec<PreviousSecret>,
    /// HTTP method.
    pub method: HttpMethod,
    /// Custom headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Optional authentication.
    pub auth: Option<Auth>,
    /// Mutual TLS: the client certificate presented, and a CA trusted for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::ClientTls>,
    /// Request timeout.
    pub timeout_ms: u64,
    /// Most requests per second to this destination, if limited.
    pub rate_limit_per_s: Option<u32>,
    /// In what order its deliveries go out.
    #[serde(default, skip_serializing_if = "is_unordered")]
    pub ordering: DeliveryOrder,
    /// Disabled connections get no new deliveries.
    pub enabled: bool,
    /// Why Herald disabled it (`failing`: every attempt failed for `HERALD_AUTO_DISABLE_AFTER`);
    /// cleared when it is enabled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When Herald disabled it, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

fn is_unordered(order: &DeliveryOrder) -> bool {
    !order.is_ordered()
}

/// What is shown in place of a secret.
pub const MASK: &str = "********";

// Debug output ends up in logs and panic messages: it never shows a secret or a credential.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer { .. } => f.debug_struct("Bearer").field("token", &MASK).finish(),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &MASK)
                .finish(),
            Auth::OAuth2ClientCredentials(o) => f
                .debug_struct("OAuth2ClientCredentials")
                .field("token_url", &o.token_url)
                .field("client_id", &o.client_id)
                .field("client_secret", &MASK)
                .field("scope", &o.scope)
                .field("audience", &o.audience)
                .field("client_auth", &o.client_auth)
                .finish(),
        }
    }
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("secret", &MASK)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("workspace_id", &self.workspace_id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &MASK)
            .field("previous_secrets", &self.previous_secrets)
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("timeout_ms", &self.timeout_ms)
            .field("rate_limit_per_s", &self.rate_limit_per_s)
            .field("ordering", &self.ordering)
            .field("enabled", &self.enabled)
            .field("disabled_reason", &self.disabled_reason)
            .finish_non_exhaustive()
    }
}

/// Whether a header's value is shown masked in the attempt history: credentials and
/// signatures, and custom headers whose name says they carry a secret.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "webhook-signature"
    ) || [
        "token",
        "secret",
        "key",
        "password",
        "auth",
        "signature",
        "session",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// A header value as the history shows it: the scheme of an `Authorization` and the version
/// of each signature are kept, the rest masked.
pub fn mask_header_value(name: &str, value: &str) -> String {
    if !is_sensitive_header(name) {
        return value.to_string();
    }
    if name.eq_ignore_ascii_case("webhook-signature") {
        return value
            .split_whitespace()
            .map(|sig| match sig.split_once(',') {
                Some((version, _)) => format!("{version},{MASK}"),
                None => MASK.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    match value.split_once(' ') {
        Some((scheme, _)) if name.to_ascii_lowercase().ends_with("authorization") => {
            format!("{scheme} {MASK}")
        }
        _ => MASK.to_string(),
    }
}

/// Headers a connection may not set: Herald owns them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "transfer-encoding",
    "connection",
];

/// `disabled_reason` of a connection Herald disabled because every attempt failed for
/// `HERALD_AUTO_DISABLE_AFTER`.
pub const DISABLED_FAILING: &str = "failing";

/// Default request timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;

impl Connection {
    /// A connection of `workspace_id` to `url`, signed with `secret`, with every optional part
    /// at its default: kind `webhook`, named after its id, POST, no headers, auth or client
    /// certificate, the default timeout, no rate limit, enabled, created at `now_ms`. Callers
    /// set the rest with struct update syntax.
    pub fn new(workspace_id: &str, id: &str, url: &str, secret: String, now_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            workspace_id: workspace_id.to_string(),
            kind: "webhook".into(),
            name: id.to_string(),
            url: url.to_string(),
            secret,
            previous_secrets: Vec::new(),
            method: HttpMethod::default(),
            headers: BTreeMap::new(),
            auth: None,
            tls: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            rate_limit_per_s: None,
            ordering: DeliveryOrder::None,
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }

    /// A fingerprint of what decides whether a delivery can succeed: URL, method, credentials,
    /// headers and whether it is enabled. It changes when a customer fixes their endpoint.
    pub fn delivery_fingerprint(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        self.url.hash(&mut h);
        self.method.as_str().hash(&mut h);
        serde_json::to_string(&self.auth).ok().hash(&mut h);
        self.tls.hash(&mut h);
        self.headers.hash(&mut h);
        self.enabled.hash(&mut h);
        h.finish()
    }

    /// How requests are signed now (the kind of the current secret).
    pub fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::of_secret(&self.secret)
    }

    /// The secrets that sign a request sent at `now_ms`: the current one first.
    pub fn signing_secrets(&self, now_ms: i64) -> impl Iterator<Item = &str> {
        std::iter::once(self.secret.as_str()).chain(
            self.previous_secrets
                .iter()
                .filter(move |p| p.expires_at > now_ms)
                .map(|p| p.secret.as_str()),
        )
    }

    /// Checks every field a caller can set.
    pub fn validate(&self, allow_http: bool) -> Result<(), FieldError> {
        check_name("name", &self.name, 200)?;
        validate_url(&self.url, allow_http)?;
        match self.signature_scheme() {
            SignatureScheme::HmacSha256 => {
                crate::signing::SigningKey::parse_strict(&self.secret)
                    .map_err(|e| FieldError::new("secret", e.to_string()))?;
            }
            SignatureScheme::Ed25519 => {
                crate::signing::ed25519::PrivateKey::parse(&self.secret)
                    .map_err(|e| FieldError::new("secret", e.to_string()))?;
            }
        }
        if self.headers.len() > 32 {
            return Err(FieldError::new("headers", "at most 32 headers"));
        }
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            if http_header_name_ok(name).is_err() {
                return Err(FieldError::new(field, "is not a valid header name"));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(FieldError::new(
                    field,
                    "is set by Herald and cannot be overridden",
                ));
            }
            if name.eq_ignore_ascii_case("authorization") && self.auth.is_some() {
                return Err(FieldError::new(field, "conflicts with auth"));
            }
            if value.len() > 4096 || value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(FieldError::new(field, "is not a valid header value"));
            }
        }
        match &self.auth {
            Some(Auth::Bearer { token }) if token.is_empty() || token.len() > 4096 => {
                return Err(FieldError::new(
                    "auth.token",
                    "must be 1 to 4096 characters",
                ))
            }
            Some(Auth::Basic { username, .. })
                if username.is_empty()
                    || username.len() > 256
                    || username.contains(':')
                    || username.chars().any(char::is_control) =>
            {
                return Err(FieldError::new(
                    "auth.username",
                    "must be 1 to 256 characters, without ':' or control characters",
                ))
            }
            Some(Auth::Basic { password, .. }) if password.len() > 4096 => {
                return Err(FieldError::new(
                    "auth.password",
                    "must be at most 4096 characters",
                ))
            }
            Some(Auth::Bearer { token }) if token.chars().any(char::is_control) => {
                return Err(FieldError::new(
                    "auth.token",
                    "must not contain control characters",
                ))
            }
            Some(Auth::OAuth2ClientCredentials(o)) => o.validate(allow_http)?,
            _ => {}
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            return Err(FieldError::new(
                "timeout_ms",
                "must be between 100 and 120000",
            ));
        }
        if let Some(r) = self.rate_limit_per_s {
            if r == 0 || r > 100_000 {
                return Err(FieldError::new(
                    "rate_limit_per_s",
                    "must be between 1 and 100000",
                ));
            }
        }
        Ok(())
    }
}

impl OAuth2 {
    /// Checks every field; the token URL as a destination URL.
    pub fn validate(&self, allow_http: bool) -> Result<(), FieldError> {
        validate_url(&self.token_url, allow_http)
            .map_err(|e| FieldError::new("auth.token_url", e.message))?;
        let text = |field: &str, value: &str, min: usize, max: usize| {
            if value.len() < min || value.len() > max || value.chars().any(char::is_control) {
                return Err(FieldError::new(
                    format!("auth.{field}"),
                    format!("must be {min} to {max} characters, without control characters"),
                ));
            }
            Ok(())
        };
        text("client_id", &self.client_id, 1, 256)?;
        text("client_secret", &self.client_secret, 1, 4096)?;
        if let Some(scope) = &self.scope {
            text("scope", scope, 1, 1024)?;
        }
        if let Some(audience) = &self.audience {
            text("audience", audience, 1, 1024)?;
        }
        Ok(())
    }

    /// A fingerprint of what decides which token the endpoint issues: a changed client,
    /// secret, URL, scope or audience never reuses a token cached for the old ones.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&sha2::Sha256::digest(json)[..12])
    }
}

fn http_header_name_ok(name: &str) -> Result<(), ()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(());
    }
    Ok(())
}

/// Checks a destination URL: absolute, `https` (or `http` when allowed), with a host, no
/// credentials in it.
pub fn validate_url(url: &str, allow_http: bool) -> Result<url::Url, FieldError> {
    if url.len() > 2048 {
        return Err(FieldError::new("url", "must be at most 2048 characters"));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| FieldError::new("url", format!("is not a valid URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(FieldError::new(
                "url",
                "must use https:// (plain http is allowed only when HERALD_ALLOW_HTTP is set)",
            ))
        }
        _ => return Err(FieldError::new("url", "must be an https:// URL")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new("url", "must have a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FieldError::new(
            "url",
            "must not contain credentials; use auth instead",
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        Connection {
            name: "n".into(),
            ..Connection::new(
                "ws_1",
                "con_1",
                "https://example.com/hook",
                crate::signing::generate_secret(),
                0,
            )
        }
    }

    #[test]
    fn urls_must_be_https_unless_allowed() {
        assert!(validate_url("https://example.com", false).is_ok());
        assert_eq!(
            validate_url("http://example.com", false)
                .expect_err("http")
                .field,
            "url"
        );
        assert!(validate_url("http://example.com", true).is_ok());
        assert!(validate_url("ftp://example.com", true).is_err());
        assert!(validate_url("https://u:p@example.com", false).is_err());
        assert!(validate_url("not a url", false).is_err());
    }

    #[test]
    fn reserved_headers_are_refused_by_name() {
        let mut c = conn();
        c.headers.insert("Webhook-Signature".into(), "x".into());
        assert_eq!(
            c.validate(false).expect_err("reserved").field,
            "headers.Webhook-Signature"
        );
        let mut c = conn();
        c.headers.insert("x-team".into(), "payments".into());
        assert!(c.validate(false).is_ok());
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let mut c = conn();
        c.auth = Some(Auth::Basic {
            username: "u".into(),
            password: "hunter2-password".into(),
        });
        c.previous_secrets = vec![PreviousSecret {
            secret: "whsec_previous".into(),
            expires_at: 1,
        }];
        c.headers.insert("x-api-key".into(), "header-secret".into());
        let shown = format!("{c:?}");
        for secret in [
            c.secret.as_str(),
            "hunter2-password",
            "whsec_previous",
            "header-secret",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn sensitive_headers_are_masked_in_history() {
        assert_eq!(
            mask_header_value("Authorization", "Bearer abc"),
            "Bearer ********"
        );
        assert_eq!(
            mask_header_value("webhook-signature", "v1,AAA= v1,BBB="),
            "v1,******** v1,********"
        );
        assert_eq!(mask_header_value("X-Api-Key", "k"), MASK);
        assert_eq!(mask_header_value("x-team", "payments"), "payments");
        assert_eq!(mask_header_value("webhook-id", "evt_1"), "evt_1");
    }

    #[test]
    fn an_ed25519_connection_validates_and_shows_only_its_public_key() {
        let mut c = conn();
        c.secret = SignatureScheme::Ed25519.generate();
        assert_eq!(c.signature_scheme(), SignatureScheme::Ed25519);
        assert!(c.validate(false).is_ok());
        match ShownSecret::of(&c.secret) {
            ShownSecret::PublicKey(k) => assert!(k.starts_with("whpk_")),
            ShownSecret::Secret(_) => panic!("a private key is never shown"),
        }
        c.secret = "whsk_c2hvcnQ=".into();
        assert_eq!(c.validate(false).expect_err("short key").field, "secret");
    }

    #[test]
    fn expired_previous_secrets_stop_signing() {
        let mut c = conn();
        c.previous_secrets = vec![
            PreviousSecret {
                secret: "old".into(),
                expires_at: 100,
            },
            PreviousSecret {
                secret: "older".into(),
                expires_at: 10,
            },
        ];
        let s: Vec<&str> = c.signing_secrets(50).collect();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1], "old");
        assert_eq!(c.signing_secrets(100).count(), 1);
    }
}
