//! Encryption at rest of the secrets Herald keeps in Redis: connection signing secrets and
//! destination credentials. XChaCha20-Poly1305 (an AEAD with 24-byte random nonces, so nonces
//! never need coordinating between replicas), keyed by `HERALD_SECRETS_KEY`.
//!
//! A sealed value is self-describing: `enc:v1:<key id>:<base64 of nonce || ciphertext>`, where
//! the key id is the first 8 hex digits of the key's SHA-256. The caller's context (the
//! connection id) is the associated data, so a sealed value copied to another connection does
//! not open. Keys listed in `HERALD_SECRETS_KEYS_OLD` still open what they sealed (rotation);
//! a value that is not sealed at all (written before encryption existed) is read as it is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every sealed value.
pub const SEALED_PREFIX: &str = "enc:v1:";

const NONCE_LEN: usize = 24;

/// A sealed value that cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    /// Sealed with a key that is neither `HERALD_SECRETS_KEY` nor in `HERALD_SECRETS_KEYS_OLD`.
    #[error("sealed with key {0}, which is not configured (HERALD_SECRETS_KEY, HERALD_SECRETS_KEYS_OLD)")]
    UnknownKey(String),
    /// Not of the form `enc:v1:<key id>:<base64>`.
    #[error("a sealed value is malformed")]
    Malformed,
    /// The ciphertext or its context was altered, or the key is wrong.
    #[error("a sealed value does not authenticate (altered, or sealed for another object)")]
    Tampered,
}

/// One 32-byte key and its id.
#[derive(Clone)]
struct SealKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SealKey {
    fn new(bytes: &[u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        Self {
            id,
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }
}

/// The keys in force: one that seals, and every one that may open.
#[derive(Clone)]
pub struct SecretsKeys {
    current: SealKey,
    old: Vec<SealKey>,
    development: bool,
}

impl std::fmt::Debug for SecretsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKeys")
            .field("current", &self.current.id)
            .field("old", &self.old.iter().map(|k| &k.id).collect::<Vec<_>>())
            .field("development", &self.development)
            .finish()
    }
}

/// The key used when `HERALD_SECRETS_KEY` is unset: fixed and public, so every service on one
/// machine agrees without configuration. It hides secrets from a casual look at Redis and from
/// backups read by someone without Herald's source, and from nobody else.
const DEVELOPMENT_KEY: [u8; 32] = *b"herald-development-key-not-safe!";

/// Decodes a key given as base64 of 32 bytes.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    let bytes = STANDARD.decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

impl SecretsKeys {
    /// Seals with `current`; opens with it and with each of `old` (and the development key).
    pub fn new(current: &[u8; 32], old: &[[u8; 32]]) -> Self {
        let mut old: Vec<SealKey> = old.iter().map(SealKey::new).collect();
        old.push(SealKey::new(&DEVELOPMENT_KEY));
        Self {
            current: SealKey::new(current),
            old,
            development: current == &DEVELOPMENT_KEY,
        }
    }

    /// The development key (no `HERALD_SECRETS_KEY`), with any old keys for opening.
    pub fn development(old: &[[u8; 32]]) -> Self {
        Self::new(&DEVELOPMENT_KEY, old)
    }

    /// True when sealing with the public development key.
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plain` for the object `context` (e.g. a connection id).
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: context.as_bytes(),
        };
        // Encryption with a valid key and nonce only fails for messages near 256 GiB.
        let sealed = self
            .current
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!(
            "{SEALED_PREFIX}{}:{}",
            self.current.id,
            STANDARD.encode(out)
        )
    }

    /// Opens a value sealed for `context`; a value that is not sealed is returned as it is.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, SecretsError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, b64) = rest.split_once(':').ok_or(SecretsError::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| SecretsError::UnknownKey(id.to_string()))?;
        let bytes = STANDARD.decode(b64).map_err(|_| SecretsError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretsError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: context.as_bytes(),
        };
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SecretsError::Tampered)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Tampered)
    }

    /// True when `stored` is sealed with the current key (nothing to re-seal).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(SEALED_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.current.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> SecretsKeys {
        SecretsKeys::new(&[n; 32], &[])
    }

    #[test]
    fn a_sealed_value_opens_to_the_original() {
        let k = keys(1);
        let sealed = k.seal("whsec_abc", "con_1");
        assert!(sealed.starts_with("enc:v1:"), "{sealed}");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(k.open(&sealed, "con_1").expect("opens"), "whsec_abc");
        assert!(k.is_current(&sealed));
    }

    #[test]
    fn the_same_value_seals_differently_each_time() {
        let k = keys(1);
        assert_ne!(k.seal("x", "c"), k.seal("x", "c"));
    }

    #[test]
    fn a_wrong_key_is_named_and_refused() {
        let sealed = keys(1).seal("whsec_abc", "con_1");
        let other = keys(2);
        assert!(matches!(
            other.open(&sealed, "con_1"),
            Err(SecretsError::UnknownKey(_))
        ));
    }

    #[test]
    fn an_old_key_still_opens_after_rotation() {
        let sealed = keys(1).seal("whsec_abc", "con_1");
        let rotated = SecretsKeys::new(&[2; 32], &[[1; 32]]);
        assert_eq!(rotated.open(&sealed, "con_1").expect("opens"), "whsec_abc");
        assert!(!rotated.is_current(&sealed));
    }

    #[test]
    fn tampering_or_another_context_is_detected() {
        let k = keys(1);
        let sealed = k.seal("whsec_abc", "con_1");
        assert_eq!(k.open(&sealed, "con_2"), Err(SecretsError::Tampered));
        let (head, b64) = sealed.rsplit_once(':').expect("shape");
        let mut bytes = STANDARD.decode(b64).expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = format!("{head}:{}", STANDARD.encode(bytes));
        assert_eq!(k.open(&altered, "con_1"), Err(SecretsError::Tampered));
        let id = k.current_id().to_string();
        assert_eq!(
            k.open(&format!("enc:v1:{id}:AAAA"), "con_1"),
            Err(SecretsError::Malformed)
        );
        assert_eq!(k.open("enc:v1:nocolon", "c"), Err(SecretsError::Malformed));
    }

    #[test]
    fn a_plaintext_value_from_before_encryption_reads_as_it_is() {
        assert_eq!(
            keys(1).open("whsec_legacy", "con_1").expect("plain"),
            "whsec_legacy"
        );
    }

    #[test]
    fn the_development_key_always_opens_what_it_sealed() {
        let dev = SecretsKeys::development(&[]);
        assert!(dev.is_development());
        let sealed = dev.seal("s", "c");
        assert_eq!(keys(3).open(&sealed, "c").expect("opens"), "s");
        assert!(!keys(3).is_development());
    }

    #[test]
    fn keys_decode_from_base64_of_32_bytes() {
        assert_eq!(decode_key(&STANDARD.encode([7u8; 32])), Some([7u8; 32]));
        assert_eq!(decode_key(&STANDARD.encode([7u8; 16])), None);
        assert_eq!(decode_key("not base64!"), None);
    }
}
