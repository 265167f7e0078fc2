//! The OpenAPI document's named schemas that no request type of ingest derives by itself:
//!
//! - the constraints the server enforces on a string (`Token`, `EventType`, `Name`,
//!   `DestinationUrl`, ...), each stated once and referenced by every field it applies to;
//! - the request types `herald-shared` defines (`Envelope`, `Auth`, `HttpMethod`, `KeyScope`);
//! - in [`stored`], the document's view of the types shared stores and ingest shows as they are
//!   (`Rule`, `Workspace`, `EventRecord`, `DeadLetter`, ...).
//!
//! Shared does not depend on utoipa, so these schemas are declared here, field for field.
//!
//! Patterns are ECMA-262 and also valid Rust regular expressions (the contract test generates
//! requests from them). Where a pattern is narrower than the server (URLs, origins, secrets), a
//! value it describes is always accepted; lengths and ranges are exactly the server's.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

pub mod stored;

pub use stored::{
    BreakerChangeSchema, ConsoleEventSchema, DeadLetterSchema, EventRecordSchema, EventStatus,
    PreviousSecretSchema, RuleSchema, WorkspaceSchema,
};

/// A string schema: its description, length bounds and pattern.
fn string(description: &str, min: usize, max: usize, pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .into()
}

/// Declares named string schemas: each a unit type whose schema is `string(...)`, described by
/// its doc comment.
macro_rules! string_schemas {
    ($($(#[doc = $doc:literal])+ $name:ident($min:expr, $max:expr) = $pattern:expr;)+) => {$(
        $(#[doc = $doc])+
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string(concat!($($doc),+).trim(), $min, $max, $pattern)
            }
        }

        impl ToSchema for $name {}
    )+};
}

/// Control characters (Unicode `Cc`), which names and header values may not hold.
macro_rules! no_cc {
    () => {
        r"\x00-\x1F\x7F-\x9F"
    };
}

string_schemas! {
    /// An id, a resource type or a uuid: letters, digits and `_ - . :`; 1 to 128 characters.
    Token(1, 128) = r"^[A-Za-z0-9_.:-]+$";
    /// A list filter: letters, digits and `_ - . :`; at most 128 characters; empty: no filter.
    TokenFilter(0, 128) = r"^[A-Za-z0-9_.:-]*$";
    /// Dot-separated parts of letters, digits and `_ - :`, none empty (`order.completed`); 1 to 128
    /// characters; no wildcard.
    EventType(1, 128) = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$";
    /// An exact event type (`order.completed`), a prefix wildcard (`order.*`) or `*`.
    EventPattern(1, 128) = r"^(\*|[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*(\.\*)?)$";
    /// An exact resource type (letters, digits and `_ - . :`) or `*`.
    ResourcePattern(1, 128) = r"^(\*|[A-Za-z0-9_.:-]+)$";
    /// A name for people: 1 to 200 characters, not blank, without control characters.
    Name(1, 200) = concat!("^[^", no_cc!(), r"]*[^\s", no_cc!(), "][^", no_cc!(), "]*$");
    /// A resource's id: 1 to 256 bytes (UTF-8), without control characters.
    ResourceId(1, 256) = concat!("^[^", no_cc!(), "]+$");
    /// An absolute `https://` URL with a host and no credentials (`http://` only with
    /// HERALD_ALLOW_HTTP); a literal private or loopback address only with
    /// HERALD_ALLOW_PRIVATE_DESTINATIONS or HERALD_DESTINATION_ALLOWLIST.
    DestinationUrl(1, 2048) = r"^https://([A-Za-z0-9-]{1,20}\.){0,4}[A-Za-z][A-Za-z0-9-]{0,19}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$";
    /// `whsec_` and the base64 of 24 to 64 random bytes.
    Secret(38, 94) = r"^whsec_([A-Za-z0-9+/]{4}){8,15}([A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
    /// An Ed25519 public key: `whpk_` and the base64 of 32 bytes.
    PublicKey(49, 49) = r"^whpk_[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";
    /// An HTTP header name; not one Herald sets (`content-type`, `content-length`, `host`,
    /// `user-agent`, `webhook-id`, `webhook-timestamp`, `webhook-signature`,
    /// `transfer-encoding`, `connection`), nor `authorization` together with `auth`.
    HeaderName(1, 128) = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";
    /// A header value: at most 4096 bytes (UTF-8), without control characters other than tab.
    HeaderValue(0, 4096) = r"^[^\x00-\x08\x0A-\x1F\x7F-\x9F]*$";
    /// A bearer token: 1 to 4096 bytes (UTF-8), without control characters.
    BearerToken(1, 4096) = concat!("^[^", no_cc!(), "]+$");
    /// A basic-auth user name: 1 to 256 bytes (UTF-8), without `:` or control characters.
    BasicUsername(1, 256) = concat!("^[^:", no_cc!(), "]+$");
    /// An OAuth2 client id: 1 to 256 bytes (UTF-8), without control characters.
    OAuthText(1, 256) = concat!("^[^", no_cc!(), "]+$");
    /// An OAuth2 scope or audience: 1 to 1024 bytes (UTF-8), without control characters.
    OAuthScope(1, 1024) = concat!("^[^", no_cc!(), "]+$");
    /// A basic-auth password: at most 4096 bytes (UTF-8).
    BasicPassword(0, 4096) = r"^[\s\S]*$";
    /// An origin: `https://host[:port]` (or `http://`), nothing after it.
    Origin(1, 2048) = r"^https?://([A-Za-z0-9]{1,20}\.){0,3}[A-Za-z][A-Za-z0-9]{0,19}(:[1-9][0-9]{0,3})?$";
    /// The width of a stats point: a multiple of 5 minutes up to a day (`5m`, `15m`, `1h`,
    /// `24h`; the server also takes any other multiple, as minutes or seconds).
    StatsBucket(2, 5) = r"^((5|10|15|20|30|45|60|90|120|180|240|360|480|720|1440)m|(1|2|3|4|6|8|12|24)h)$";
    /// `next_cursor` of the previous page; empty: the first page.
    Cursor(0, 512) = r"^(-?[0-9]{1,18}~[A-Za-z0-9_.:-]*)?$";
}

/// A connection's custom headers: at most 32, names and values as [`HeaderName`] and
/// [`HeaderValue`] say.
pub struct Headers;

impl utoipa::PartialSchema for Headers {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("Custom headers sent with every request; at most 32."))
            .max_properties(Some(32))
            .property_names(Some(HeaderName::schema()))
            .additional_properties(Some(HeaderValue::schema()))
            .into()
    }
}

impl ToSchema for Headers {}

/// Any JSON value that nests arrays and objects at most 64 deep: a payload.
pub struct Payload;

impl utoipa::PartialSchema for Payload {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some(
                "Any JSON, `null` included, passed through byte for byte; arrays and objects nest at most 64 deep.",
            ))
            .into()
    }
}

impl ToSchema for Payload {}

/// A rule's payload filter (see the README, "Payload filters").
pub struct RuleFilter;

impl utoipa::PartialSchema for RuleFilter {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Only events that pass match the rule. Keys are dotted envelope paths (`payload.plan`, \
                 `payload.items.0.sku`, `resource_id`, `event`, `resource`, `uuid`, `time_created`) or \
                 `$and`/`$or` (non-empty arrays of filters) and `$not` (a filter). A path's value is a \
                 literal (equality) or an object of operators: `$eq`, `$ne` (any JSON), `$in`, `$nin` \
                 (arrays), `$gt`, `$gte`, `$lt`, `$lte` (a number or a string), `$exists` (a boolean). \
                 Numbers compare by value, strings by code point, never a string with a number; a \
                 missing field counts as `null` for `$eq $ne $in $nin`, and never satisfies \
                 `$gt $gte $lt $lte`. At most 4096 bytes as compact JSON and 8 levels of nested \
                 objects and arrays. Refused with 400 whose `field` names the part at fault, e.g. \
                 `filter.payload.plan.$in`. Example: `{\"payload.plan\": {\"$in\": [\"pro\", \"team\"]}, \
                 \"payload.total_cents\": {\"$gte\": 1000}}`.",
            ))
            .into()
    }
}

impl ToSchema for RuleFilter {}

/// The HTTP method a connection is called with.
#[derive(ToSchema)]
#[schema(as = HttpMethod, rename_all = "UPPERCASE")]
pub enum HttpMethodSchema {
    /// The default.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
}

/// In what order a connection's deliveries go out (see the README's "Ordered delivery").
#[derive(ToSchema)]
#[schema(as = DeliveryOrder, rename_all = "snake_case")]
pub enum DeliveryOrderSchema {
    /// As fast as they come, many at once (the default).
    None,
    /// One at a time per `resource` and `resource_id`, in the order intake accepted them.
    PerResource,
    /// One at a time for the whole connection, in the order intake accepted them.
    PerConnection,
}

/// How requests are signed.
#[derive(ToSchema)]
#[schema(as = SignatureScheme, rename_all = "snake_case")]
pub enum SignatureSchemeSchema {
    /// `v1`: HMAC-SHA256 with a `whsec_` secret (the default).
    HmacSha256,
    /// `v1a`: Ed25519 with a key pair Herald generates; the answer carries the `whpk_` public
    /// key, never the private key.
    Ed25519,
}

/// What a workspace key may do.
#[derive(ToSchema)]
#[schema(as = KeyScope, rename_all = "snake_case")]
pub enum KeyScopeSchema {
    /// Manage everything in the workspace (`sk_...`).
    Secret,
    /// Send events only (`pk_...`).
    Publishable,
}

/// Authentication sent with each request to the destination.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = Auth)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSchema {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        #[schema(value_type = BearerToken)]
        token: String,
    },
    /// `Authorization: Basic <base64(username:password)>`.
    Basic {
        /// User name.
        #[schema(value_type = BasicUsername)]
        username: String,
        /// Password.
        #[schema(value_type = BasicPassword)]
        password: String,
    },
    /// `Authorization: Bearer <token>` with a token of an OAuth 2.0 client credentials grant,
    /// cached across deliverers until 30 s before it expires (or half its lifetime).
    #[serde(rename = "oauth2_client_credentials")]
    #[schema(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        /// The token endpoint: the same destination policy as the connection's URL applies.
        #[schema(value_type = DestinationUrl)]
        token_url: String,
        /// The client's id.
        #[schema(value_type = OAuthText)]
        client_id: String,
        /// The client's secret; sealed at rest and masked on read.
        #[schema(value_type = BearerToken)]
        client_secret: String,
        /// `scope` of the token request.
        #[schema(value_type = Option<OAuthScope>)]
        scope: Option<String>,
        /// `audience` of the token request.
        #[schema(value_type = Option<OAuthScope>)]
        audience: Option<String>,
        /// `basic` (default): HTTP Basic to the token endpoint; `post`: in the form body.
        #[schema(value_type = Option<ClientAuthSchema>)]
        client_auth: Option<String>,
    },
}

/// How the client authenticates to the token endpoint.
#[derive(ToSchema)]
#[schema(as = ClientAuth, rename_all = "snake_case")]
pub enum ClientAuthSchema {
    /// HTTP Basic with the client id and secret (the default).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// What a rule does with a matching event: the only action today.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum RuleAction {
    /// Deliver the event to the rule's connection.
    SendWebhook,
}

/// What a producer sends: one event.
#[derive(ToSchema, serde::Deserialize)]
#[schema(as = Envelope)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSchema {
    /// Event type, e.g. `order.completed`.
    #[schema(value_type = EventType)]
    pub event: String,
    /// Resource type, e.g. `order`.
    #[schema(value_type = Token)]
    pub resource: String,
    /// The resource's id, e.g. `ord_77`.
    #[schema(value_type = ResourceId)]
    pub resource_id: String,
    /// Anything JSON, `null` included (but present).
    #[schema(value_type = Payload)]
    pub payload: serde_json::Value,
    /// The producer's id for this event, its idempotency key; made by Herald when left out.
    #[schema(value_type = Option<Token>)]
    pub uuid: Option<String>,
}
