//! Asymmetric Standard Webhooks signatures (the specification's `v1a`): Ed25519 (RFC 8032)
//! over `{webhook-id}.{webhook-timestamp}.{body}`, so a receiver verifies with a public key and
//! holds no secret. Herald generates the key pair: the private key is `whsk_` + base64 of its
//! 32-byte seed (sealed at rest like every secret, never shown), the public key `whpk_` + base64
//! of its 32 bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer as _, Verifier as _};
use rand::RngCore;

use super::{VerifyError, TOLERANCE_SECS};

/// The prefix of an Ed25519 private key.
pub const PRIVATE_PREFIX: &str = "whsk_";

/// The prefix of an Ed25519 public key.
pub const PUBLIC_PREFIX: &str = "whpk_";

/// A key that is not the prefix followed by the base64 of 32 bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an Ed25519 key is \"{0}\" followed by the base64 of 32 bytes")]
pub struct InvalidKey(&'static str);

/// An Ed25519 private key.
#[derive(Clone)]
pub struct PrivateKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

fn decode32(text: &str, prefix: &'static str) -> Result<[u8; 32], InvalidKey> {
    let b64 = text.strip_prefix(prefix).ok_or(InvalidKey(prefix))?;
    let bytes = STANDARD.decode(b64).map_err(|_| InvalidKey(prefix))?;
    bytes.try_into().map_err(|_| InvalidKey(prefix))
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Decodes `whsk_<base64 of the 32-byte seed>`.
    pub fn parse(text: &str) -> Result<Self, InvalidKey> {
        let seed = decode32(text, PRIVATE_PREFIX)?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// `whsk_<base64>`: how the key is stored (sealed).
    pub fn encode(&self) -> String {
        format!("{PRIVATE_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }

    /// `whpk_<base64>`: what receivers verify with.
    pub fn public_key(&self) -> String {
        format!(
            "{PUBLIC_PREFIX}{}",
            STANDARD.encode(self.0.verifying_key().to_bytes())
        )
    }

    /// `v1a,<base64 signature>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let signature = self.0.sign(&signed_content(msg_id, timestamp, body));
        format!("v1a,{}", STANDARD.encode(signature.to_bytes()))
    }
}

fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(msg_id.len() + body.len() + 24);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// Verifies a request as a receiver would: the timestamp within [`TOLERANCE_SECS`] of
/// `now_secs`, and any one `v1a` signature of the header made by `public_key` (`whpk_...`).
pub fn verify(
    public_key: &str,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    let key = decode32(public_key, PUBLIC_PREFIX)
        .ok()
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
        .ok_or(VerifyError::NoMatch)?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if (now_secs - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Expired);
    }
    let content = signed_content(msg_id, ts, body);
    let matched = signature_header
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1a,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .filter_map(|sig| ed25519_dalek::Signature::from_slice(&sig).ok())
        .any(|sig| key.verify(&content, &sig).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, tests 1 to 3: (seed, public key, message, signature), in hex.
    const RFC8032: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    fn key_of(seed_hex: &str) -> PrivateKey {
        let seed = hex::decode(seed_hex).expect("hex");
        PrivateKey::parse(&format!("{PRIVATE_PREFIX}{}", STANDARD.encode(seed))).expect("key")
    }

    #[test]
    fn the_rfc_8032_vectors_give_their_public_keys_and_signatures() {
        for (seed, public, message, signature) in RFC8032 {
            let key = key_of(seed);
            let public = hex::decode(public).expect("hex");
            assert_eq!(
                key.public_key(),
                format!("{PUBLIC_PREFIX}{}", STANDARD.encode(&public))
            );
            let message = hex::decode(message).expect("hex");
            let made = key.0.sign(&message).to_bytes();
            assert_eq!(hex::encode(made), signature);
        }
    }

    #[test]
    fn a_v1a_signature_is_over_id_timestamp_and_body_and_verifies() {
        let key = key_of(RFC8032[0].0);
        let header = key.sign("msg_1", 1_614_265_330, br#"{"test": 2432232314}"#);
        let b64 = header.strip_prefix("v1a,").expect("v1a");
        let sig = STANDARD.decode(b64).expect("base64");
        // The signature is exactly Ed25519 over the Standard Webhooks signed content.
        let expected = key
            .0
            .sign(br#"msg_1.1614265330.{"test": 2432232314}"#)
            .to_bytes();
        assert_eq!(sig, expected.to_vec());
        let public = key.public_key();
        let body = br#"{"test": 2432232314}"#;
        let verify_at = |h: &str, b: &[u8], now| verify(&public, "msg_1", "1614265330", h, b, now);
        assert_eq!(verify_at(&header, body, 1_614_265_330), Ok(()));
        assert_eq!(
            verify_at(&format!("v1,AAAA {header}"), body, 1_614_265_330),
            Ok(())
        );
        assert_eq!(
            verify_at(&header, b"{}", 1_614_265_330),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify_at(&header, body, 1_614_265_330 + 301),
            Err(VerifyError::Expired)
        );
        let other = PrivateKey::generate().public_key();
        assert_eq!(
            verify(&other, "msg_1", "1614265330", &header, body, 1_614_265_330),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_refused() {
        let key = PrivateKey::generate();
        let again = PrivateKey::parse(&key.encode()).expect("parses");
        assert_eq!(again.public_key(), key.public_key());
        assert!(PrivateKey::parse("whsk_c2hvcnQ=").is_err());
        assert!(PrivateKey::parse(&key.public_key()).is_err());
        assert!(PrivateKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    }
}
