//! Mutual TLS in tests: a private PKI made in the test ([`TestPki`], with `rcgen`; no file is
//! checked in) and an HTTPS receiver that demands a client certificate issued by it
//! ([`TlsReceiver`]), recording each request with the subject of the certificate it came with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::receiver::Received;

/// A CA made for one test.
pub struct TestPki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).expect("CA");
        Self {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) with common name `cn`, valid from
    /// `from_days` to `to_days` days from now; returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        cn: &str,
        names: &[&str],
        from_days: i64,
        to_days: i64,
    ) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("issued");
        (cert.pem(), key.serialize_pem())
    }
}

/// A server configuration with a certificate for `localhost` and `127.0.0.1` from `pki` that
/// completes a handshake only with a client certificate from `client_ca` (PEM).
pub fn server_config(pki: &TestPki, client_ca: &str) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in herald_shared::tls::certificates(client_ca).expect("client CA") {
        roots.add(c).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let (cert, key) = pki.issue("localhost", &["localhost", "127.0.0.1"], -1, 30);
    let chain = herald_shared::tls::certificates(&cert).expect("server cert");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    Arc::new(config)
}

/// Serves `app` over TLS with `config` on `listener`, one task per connection.
pub fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

type Log = Arc<Mutex<Vec<(Received, Option<String>)>>>;

/// An HTTPS receiver on loopback that completes a handshake only with a client certificate
/// issued by its PKI, and answers 200 to any `/{path}`.
#[derive(Clone)]
pub struct TlsReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Log,
    handshake_failures: Arc<Mutex<Vec<String>>>,
}

impl TlsReceiver {
    /// Starts with a server certificate for `localhost` from `pki`, demanding client
    /// certificates from `client_ca` (PEM).
    pub async fn start(pki: &TestPki, client_ca: &str) -> Self {
        let config = server_config(pki, client_ca);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = Self {
            addr: listener.local_addr().expect("addr"),
            log: Arc::default(),
            handshake_failures: Arc::default(),
        };
        let this = receiver.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let this = this.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            this.lock_failures().push(e.to_string());
                            return;
                        }
                    };
                    let subject = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| {
                            x509_parser::parse_x509_certificate(c)
                                .ok()
                                .map(|(_, c)| c.subject().to_string())
                        });
                    let app = Router::new()
                        .route("/{path}", any(receive))
                        .with_state((this.log.clone(), subject));
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        receiver
    }

    /// The URL of one path, by name (`localhost`, as its certificate says).
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}/{path}", self.addr.port())
    }

    /// Every request `path` got, with the subject of the client certificate it came with.
    pub fn received(&self, path: &str) -> Vec<(Received, Option<String>)> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(r, _)| r.path == path)
            .cloned()
            .collect()
    }

    /// Why each refused handshake failed.
    pub fn handshake_failures(&self) -> Vec<String> {
        self.lock_failures().clone()
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.handshake_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

use rustls_pki_types::pem::PemObject;

async fn receive(
    State((log, subject)): State<(Log, Option<String>)>,
    Path(path): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    log.lock().unwrap_or_else(|e| e.into_inner()).push((
        Received {
            path,
            method: method.to_string(),
            headers,
            body,
        },
        subject,
    ));
    StatusCode::OK
}
