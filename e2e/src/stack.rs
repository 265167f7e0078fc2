//! Ingest, router and deliverer in-process on port 0, through their `start` entry points, in a
//! vhost and Redis prefix of the stack's own.

use std::time::Duration;

use herald_shared::config::{DelivererSettings, IngestSettings, RouterSettings, Source};
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::prefix::RedisPrefix;
use crate::settings;
use crate::vhost::{Vhost, AMQP_BASE};

/// One running service and its own stop switch.
struct Service {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Runs a started service until it ends by itself or `cancel` stops it.
    fn spawn<F>(cancel: CancellationToken, running: F) -> Self
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send,
    {
        let task = tokio::spawn(async move {
            let _ = running.await;
        });
        Self { cancel, task }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(40), self.task).await;
    }
}

/// Ingest, router and deliverer on port 0 in their own vhost and Redis prefix.
pub struct Stack {
    api: Api,
    /// The stack's Redis key prefix (its keys are `<prefix>:...`).
    pub prefix: String,
    source: Source,
    ingest: Option<Service>,
    router: Option<Service>,
    deliverer: Option<Service>,
    /// More replicas started by a test.
    replicas: Vec<Service>,
    // Dropped after the services, so nothing writes into them again.
    _redis: RedisPrefix,
    vhost: Vhost,
}

impl Stack {
    /// Starts a stack with the test settings.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a stack with extra settings (e.g. `HERALD_RETRY_SCHEDULE`).
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        let defaults = [
            ("HERALD_INGEST_ADDR", "127.0.0.1:0"),
            ("HERALD_ROUTER_ADDR", "127.0.0.1:0"),
            ("HERALD_DELIVERER_ADDR", "127.0.0.1:0"),
            ("HERALD_DRAIN_TIMEOUT", "5s"),
        ];
        let (vhost, redis, pairs) = settings::isolated(&defaults, extra);
        let mut stack = Self {
            api: Api::new(String::new()),
            prefix: redis.prefix.clone(),
            _redis: redis,
            source: Source::from_pairs(pairs),
            ingest: None,
            router: None,
            deliverer: None,
            replicas: Vec::new(),
            vhost,
        };
        stack.start_ingest().await;
        stack.start_router().await;
        stack.start_deliverer().await;
        stack.api.wait_ready().await;
        stack
    }

    /// The settings this stack's services read (to start another replica beside them).
    pub fn source(&self) -> &Source {
        &self.source
    }

    async fn start_ingest(&mut self) {
        let settings = IngestSettings::from_source(&self.source).expect("settings");
        let cancel = CancellationToken::new();
        let running = herald_ingest::start(settings, cancel.clone())
            .await
            .expect("ingest starts");
        self.api = Api::new(format!("http://{}", running.addr));
        self.ingest = Some(Service::spawn(cancel, running.wait()));
    }

    /// Stops the router (events wait in `herald.events`).
    pub async fn stop_router(&mut self) {
        if let Some(r) = self.router.take() {
            r.stop().await;
        }
    }

    /// The name of the stack's own vhost (for a policy set on it).
    pub fn vhost_name(&self) -> &str {
        &self.vhost.name
    }

    /// Starts the router (again, after a test stopped it).
    pub async fn start_router(&mut self) {
        self.router = Some(self.router_service().await);
    }

    /// Starts one more router beside the first (replicas share the events queue).
    pub async fn add_router(&mut self) {
        let r = self.router_service().await;
        self.replicas.push(r);
    }

    async fn router_service(&self) -> Service {
        let settings = RouterSettings::from_source(&self.source).expect("settings");
        let cancel = CancellationToken::new();
        let running = herald_router::start(settings, cancel.clone())
            .await
            .expect("router starts");
        Service::spawn(cancel, running.wait())
    }

    /// The broker URL of the stack's own vhost.
    pub fn amqp_url(&self) -> String {
        self.vhost.amqp_url(AMQP_BASE)
    }

    /// Starts the deliverer (again, after a test stopped it).
    pub async fn start_deliverer(&mut self) {
        self.start_deliverer_with(&[]).await;
    }

    /// Starts the deliverer with some settings of its own (a Redis reached through a relay).
    pub async fn start_deliverer_with(&mut self, own: &[(&str, &str)]) {
        let source = own
            .iter()
            .fold(self.source.clone(), |s, (name, value)| s.with(name, value));
        let settings = DelivererSettings::from_source(&source).expect("settings");
        let cancel = CancellationToken::new();
        let running = herald_deliverer::start(settings, cancel.clone())
            .await
            .expect("deliverer starts");
        self.deliverer = Some(Service::spawn(cancel, running.wait()));
    }

    /// Starts one more deliverer beside the first (replicas share the jobs queue).
    pub async fn add_deliverer(&mut self) {
        let settings = DelivererSettings::from_source(&self.source).expect("settings");
        let cancel = CancellationToken::new();
        let running = herald_deliverer::start(settings, cancel.clone())
            .await
            .expect("deliverer starts");
        self.replicas.push(Service::spawn(cancel, running.wait()));
    }

    /// Stops the deliverer (as a rolling restart would).
    pub async fn stop_deliverer(&mut self) {
        if let Some(d) = self.deliverer.take() {
            d.stop().await;
        }
    }

    /// Stops every service, then removes the stack's Redis keys and vhost.
    pub async fn stop(mut self) {
        for s in [
            self.deliverer.take(),
            self.router.take(),
            self.ingest.take(),
        ]
        .into_iter()
        .flatten()
        .chain(self.replicas.drain(..))
        {
            s.stop().await;
        }
    }
}

impl std::ops::Deref for Stack {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}
