//! Workspaces (tenants) and their API keys.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One customer of the SaaS that runs Herald.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Workspace {
    /// `ws_...`.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Manage everything in the workspace (`sk_...`).
    Secret,
    /// Send events only (`pk_...`).
    Publishable,
}

/// A stored API key: only its hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    /// The workspace the key belongs to.
    pub workspace_id: String,
    /// What the key may do.
    pub scope: KeyScope,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl KeyScope {
    /// The prefix that makes a leaked key recognisable.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyScope::Secret => "sk",
            KeyScope::Publishable => "pk",
        }
    }
}

/// A new random key of the scope, e.g. `sk_...` (190 bits of randomness).
pub fn generate_key(scope: KeyScope) -> String {
    format!("{}_{}", scope.prefix(), crate::ids::random_base62(32))
}

/// The hash a key is stored under. Keys are long and random, so a plain SHA-256 suffices
/// (no password hashing needed) and lookups stay one Redis read.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
