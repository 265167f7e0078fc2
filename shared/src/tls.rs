//! Mutual TLS: the client certificate a connection presents, checked when it is given (the
//! PEM parses, the key matches the certificate, the certificate is valid now) so that a
//! mistake is a 400 at creation rather than failed deliveries later; and what is shown of it
//! (subject and expiry, never the key).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::model::FieldError;

/// A certificate expiring within this many days is flagged in the connection's health and in
/// `herald_client_certificates_expiring`.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// A connection's client identity for mutual TLS, and the CA it trusts for its destination.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ClientTls {
    /// The client certificate (and any intermediates after it), PEM.
    pub client_cert_pem: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1); sealed at rest, never shown.
    pub client_key_pem: String,
    /// A CA (PEM, one or more certificates) trusted for this connection alone, besides the
    /// public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The certificate's subject, e.g. `CN=herald,O=Acme`.
    pub subject: String,
    /// The certificate's `notAfter`, Unix milliseconds.
    pub not_after: i64,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("ca", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Checks what a caller gave and makes the stored form: refuses PEM that does not parse,
    /// a key that does not match the certificate, and a certificate that is expired (or not
    /// yet valid) at `now_ms`.
    pub fn new(
        client_cert_pem: String,
        client_key_pem: String,
        ca_pem: Option<String>,
        now_ms: i64,
    ) -> Result<Self, FieldError> {
        let bad = |field: &str, msg: &str| FieldError::new(format!("tls.{field}"), msg);
        if client_cert_pem.len() > 64 * 1024 || client_key_pem.len() > 64 * 1024 {
            return Err(bad("client_cert_pem", "must be at most 64 KiB"));
        }
        let chain = certificates(&client_cert_pem)
            .ok_or_else(|| bad("client_cert_pem", "is not PEM of one or more certificates"))?;
        let key = PrivateKeyDer::from_pem_slice(client_key_pem.as_bytes()).map_err(|_| {
            bad(
                "client_key_pem",
                "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            )
        })?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
            bad(
                "client_key_pem",
                "is not a supported key (RSA, ECDSA P-256/P-384 or Ed25519)",
            )
        })?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(bad(
                    "client_key_pem",
                    "does not match the certificate's public key",
                ))
            }
            Err(_) => {
                return Err(bad(
                    "client_cert_pem",
                    "is not a certificate that can be parsed",
                ))
            }
        }
        let (_, cert) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|_| bad("client_cert_pem", "is not a certificate that can be parsed"))?;
        let validity = cert.validity();
        let not_after = validity.not_after.timestamp().saturating_mul(1000);
        let not_before = validity.not_before.timestamp().saturating_mul(1000);
        if not_after <= now_ms {
            return Err(bad("client_cert_pem", "has expired"));
        }
        if not_before > now_ms {
            return Err(bad("client_cert_pem", "is not valid yet"));
        }
        if let Some(ca) = &ca_pem {
            if ca.len() > 256 * 1024 || certificates(ca).is_none() {
                return Err(bad("ca_pem", "is not PEM of one or more certificates"));
            }
        }
        Ok(Self {
            client_cert_pem,
            client_key_pem,
            ca_pem,
            subject: cert.subject().to_string(),
            not_after,
        })
    }

    /// Whether the certificate expires within [`EXPIRY_WARNING_DAYS`] of `now_ms`.
    pub fn expiring_soon(&self, now_ms: i64) -> bool {
        self.not_after - now_ms <= EXPIRY_WARNING_DAYS * 86_400_000
    }
}

/// Every certificate of a PEM text, or `None` when it holds none or one does not parse.
pub fn certificates(pem: &str) -> Option<Vec<CertificateDer<'static>>> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.ok().filter(|c| !c.is_empty())?;
    for c in &certs {
        x509_parser::parse_x509_certificate(c).ok()?;
    }
    Some(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(days: (i64, i64)) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["herald.test".into()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "herald-client");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    const NOW: fn() -> i64 = crate::now_ms;

    #[test]
    fn a_valid_identity_shows_its_subject_and_expiry() {
        let (c, k) = cert((-1, 30));
        let tls = ClientTls::new(c.clone(), k, Some(c), NOW()).expect("valid");
        assert_eq!(tls.subject, "CN=herald-client");
        assert!(tls.not_after > NOW() + 29 * 86_400_000);
        assert!(!tls.expiring_soon(NOW()));
        assert!(tls.expiring_soon(NOW() + 20 * 86_400_000));
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn each_mistake_is_refused_on_its_field() {
        let (c, k) = cert((-1, 30));
        let (_, other_key) = cert((-1, 30));
        let (old, old_key) = cert((-30, -1));
        let (future, future_key) = cert((2, 30));
        let field = |r: Result<ClientTls, FieldError>| r.expect_err("refused").field;
        let now = NOW();
        assert_eq!(
            field(ClientTls::new(c.clone(), other_key, None, now)),
            "tls.client_key_pem"
        );
        assert_eq!(
            field(ClientTls::new(old, old_key, None, now)),
            "tls.client_cert_pem"
        );
        assert_eq!(
            field(ClientTls::new(future, future_key, None, now)),
            "tls.client_cert_pem"
        );
        assert_eq!(
            field(ClientTls::new("not pem".into(), k.clone(), None, now)),
            "tls.client_cert_pem"
        );
        assert_eq!(
            field(ClientTls::new(c.clone(), "not pem".into(), None, now)),
            "tls.client_key_pem"
        );
        assert_eq!(
            field(ClientTls::new(c, k, Some("garbage".into()), now)),
            "tls.ca_pem"
        );
    }
}
