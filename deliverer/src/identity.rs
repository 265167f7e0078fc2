//! Mutual TLS: one HTTP client per connection that presents a client certificate (and trusts
//! its own CA, besides the public roots), built like the shared client: the destination
//! guard's resolver, no redirects, no proxy of the environment. Clients are kept while their
//! connection's TLS settings stay the same, so connections are pooled as for any destination.
//! Each send to such a connection updates the certificate's expiry metrics.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_shared::netguard::DestinationPolicy;
use herald_shared::tls::ClientTls;

use crate::dispatch::GuardedResolver;

/// Most per-connection clients kept; past it, the cache starts afresh (each client is rebuilt
/// on its connection's next send).
const MAX_CLIENTS: usize = 10_000;

/// How every client of the deliverer is built.
#[derive(Clone)]
pub struct ClientConfig {
    /// The destination policy its resolver enforces.
    pub policy: DestinationPolicy,
    /// `HERALD_EGRESS_PROXY`.
    pub egress_proxy: Option<String>,
}

impl ClientConfig {
    /// A builder with everything but the TLS identity.
    pub fn builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(proxy) = &self.egress_proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy)?);
        }
        Ok(builder
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.policy.clone(),
            }))
            .user_agent(herald_shared::USER_AGENT)
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true))
    }
}

/// The clients of connections with a client certificate.
pub struct Identities {
    config: ClientConfig,
    /// Connection id -> (fingerprint of its TLS settings, its client, its certificate's expiry).
    clients: Mutex<HashMap<String, (u64, reqwest::Client, i64)>>,
}

impl Identities {
    /// No clients yet.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client of connection `id` presenting `tls`, built on first use or after a change.
    pub fn client(&self, id: &str, tls: &ClientTls) -> Result<reqwest::Client, String> {
        let mut h = DefaultHasher::new();
        tls.hash(&mut h);
        let fp = h.finish();
        let now = herald_shared::now_ms();
        metrics::gauge!("herald_client_certificate_expires_in_seconds", "connection_id" => id.to_string())
            .set((tls.not_after - now) as f64 / 1000.0);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, client, _)) = clients.get(id) {
            if *seen == fp {
                return Ok(client.clone());
            }
        }
        let client = self.build(tls)?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(id.to_string(), (fp, client.clone(), tls.not_after));
        let expiring = clients
            .values()
            .filter(|(_, _, not_after)| {
                not_after - now <= herald_shared::tls::EXPIRY_WARNING_DAYS * 86_400_000
            })
            .count();
        metrics::gauge!("herald_client_certificates_expiring").set(expiring as f64);
        Ok(client)
    }

    fn build(&self, tls: &ClientTls) -> Result<reqwest::Client, String> {
        let pem = format!("{}\n{}", tls.client_key_pem, tls.client_cert_pem);
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|e| format!("the client certificate cannot be used: {e}"))?;
        let mut builder = self
            .config
            .builder()
            .map_err(|e| e.to_string())?
            .use_rustls_tls()
            .identity(identity);
        if let Some(ca) = &tls.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| format!("the connection's CA cannot be used: {e}"))?;
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        builder
            .build()
            .map_err(|e| format!("cannot build the mutual TLS client: {e}"))
    }
}
