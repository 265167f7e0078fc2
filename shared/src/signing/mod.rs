//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): `v1,` + base64 of
//! HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64-decoded
//! part of a `whsec_` secret; or `v1a,` + base64 of an Ed25519 signature of the same content
//! ([`ed25519`]). Several signatures are sent space-separated while a secret rotates, of either
//! kind when a connection switches schemes.

pub mod ed25519;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a request's timestamp may be from the receiver's clock (the spec's default).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// A signing secret that is not `whsec_` + base64 of 24 to 64 bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a signing secret is \"whsec_\" followed by the base64 of 24 to 64 random bytes")]
pub struct InvalidSecret;

/// The decoded key of a `whsec_` secret.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>`. The reference libraries also accept a bare base64 key.
    pub fn parse(secret: &str) -> Result<Self, InvalidSecret> {
        let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key = STANDARD.decode(b64).map_err(|_| InvalidSecret)?;
        if key.is_empty() {
            return Err(InvalidSecret);
        }
        Ok(Self(key))
    }

    /// Like [`SigningKey::parse`], but also demands the length Herald requires of new secrets.
    pub fn parse_strict(secret: &str) -> Result<Self, InvalidSecret> {
        if !secret.starts_with(SECRET_PREFIX) {
            return Err(InvalidSecret);
        }
        let key = Self::parse(secret)?;
        if !(24..=64).contains(&key.0.len()) {
            return Err(InvalidSecret);
        }
        Ok(key)
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(msg_id, timestamp, body)))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes any key length"),
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header value: one signature per key, space-separated.
pub fn signature_header(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One key a request is signed with: a `whsec_` secret (`v1`, HMAC-SHA256) or a `whsk_`
/// Ed25519 private key (`v1a`).
#[derive(Debug, Clone)]
pub enum Signer {
    /// `v1`.
    Hmac(SigningKey),
    /// `v1a`.
    Ed25519(ed25519::PrivateKey),
}

impl Signer {
    /// Decodes a stored signing secret: `whsk_` is an Ed25519 key, anything else a `whsec_`
    /// secret.
    pub fn parse(secret: &str) -> Result<Self, InvalidSecret> {
        if secret.starts_with(ed25519::PRIVATE_PREFIX) {
            ed25519::PrivateKey::parse(secret)
                .map(Self::Ed25519)
                .map_err(|_| InvalidSecret)
        } else {
            SigningKey::parse(secret).map(Self::Hmac)
        }
    }

    /// `v1,<base64>` or `v1a,<base64>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            Self::Hmac(k) => k.sign(msg_id, timestamp, body),
            Self::Ed25519(k) => k.sign(msg_id, timestamp, body),
        }
    }
}

/// The `webhook-signature` header value of signers of either kind, space-separated.
pub fn signatures(signers: &[Signer], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    signers
        .iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a request did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The timestamp header is not a number.
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    /// The timestamp is too far from now (a replay, or a skewed clock).
    #[error("webhook-timestamp is outside the tolerance")]
    Expired,
    /// No signature of the key's kind matched.
    #[error("no matching signature")]
    NoMatch,
}

/// Verifies a request as a receiver would: the timestamp within [`TOLERANCE_SECS`] of
/// `now_secs`, and any one `v1` signature of the header matching (compared in constant time).
pub fn verify(
    key: &SigningKey,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if (now_secs - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Expired);
    }
    let expected = key.mac(msg_id, ts, body);
    let matched = signature_header
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| subtle::ConstantTimeEq::ct_eq(sig.as_slice(), expected.as_slice()).into());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Standard Webhooks reference libraries.
    const VECTORS: [(&str, &str, i64, &str, &str); 2] = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];

    #[test]
    fn signs_the_specification_vectors() {
        for (secret, id, ts, body, expected) in VECTORS {
            let key = SigningKey::parse(secret).expect("valid secret");
            assert_eq!(key.sign(id, ts, body.as_bytes()), expected);
        }
    }

    #[test]
    fn verifies_the_specification_vectors_and_rejects_tampering() {
        for (secret, id, ts, body, expected) in VECTORS {
            let key = SigningKey::parse(secret).expect("valid secret");
            let header = format!("v1,bm90IGl0 {expected}");
            assert_eq!(
                verify(&key, id, &ts.to_string(), &header, body.as_bytes(), ts),
                Ok(())
            );
            assert_eq!(
                verify(&key, id, &ts.to_string(), expected, b"{}", ts),
                Err(VerifyError::NoMatch)
            );
            assert_eq!(
                verify(
                    &key,
                    id,
                    &ts.to_string(),
                    expected,
                    body.as_bytes(),
                    ts + 301
                ),
                Err(VerifyError::Expired)
            );
        }
    }

    #[test]
    fn rotation_sends_both_signatures() {
        let old = SigningKey::parse(&generate_secret()).expect("valid");
        let new = SigningKey::parse(&generate_secret()).expect("valid");
        let header = signature_header(&[new.clone(), old.clone()], "evt_1", 100, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(verify(&old, "evt_1", "100", &header, b"{}", 100), Ok(()));
        assert_eq!(verify(&new, "evt_1", "100", &header, b"{}", 100), Ok(()));
    }

    #[test]
    fn switching_schemes_sends_a_v1_and_a_v1a_signature_both_verifiable() {
        let hmac = generate_secret();
        let ed = ed25519::PrivateKey::generate();
        let signers = [
            Signer::parse(&ed.encode()).expect("ed25519"),
            Signer::parse(&hmac).expect("hmac"),
        ];
        let header = signatures(&signers, "evt_1", 100, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert!(parts[0].starts_with("v1a,") && parts[1].starts_with("v1,"));
        let key = SigningKey::parse(&hmac).expect("valid");
        assert_eq!(verify(&key, "evt_1", "100", &header, b"{}", 100), Ok(()));
        assert_eq!(
            ed25519::verify(&ed.public_key(), "evt_1", "100", &header, b"{}", 100),
            Ok(())
        );
    }

    #[test]
    fn generated_secrets_are_strictly_valid() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert!(SigningKey::parse_strict(&s).is_ok());
        assert_eq!(
            SigningKey::parse_strict("whsec_c2hvcnQ=").err(),
            Some(InvalidSecret)
        );
        assert_eq!(SigningKey::parse_strict("nope").err(), Some(InvalidSecret));
    }
}
