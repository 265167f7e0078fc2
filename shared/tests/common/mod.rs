//! A store on the real Redis under a prefix of the test's own, whose keys are deleted when the
//! test ends, passed or not.

use herald_shared::config::{CommonSettings, Source};
use herald_shared::ids::random_base62;
use herald_shared::store::Store;
use tokio_util::sync::CancellationToken;

/// A store under a fresh prefix.
pub struct TestStore {
    /// The store.
    pub store: Store,
    /// Its key prefix (`herald-test-<random>`).
    pub prefix: String,
}

impl TestStore {
    /// Connects to the machine's Redis under `herald-test-<random>`.
    pub async fn new() -> Self {
        Self::with(&[]).await
    }

    /// The same, with some settings of the test's own (e.g. `HERALD_RETENTION`).
    pub async fn with(extra: &[(&str, &str)]) -> Self {
        let prefix = format!("herald-test-{}", random_base62(10));
        let mut pairs = vec![("HERALD_REDIS_PREFIX".to_string(), prefix.clone())];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = CommonSettings::from_source(&Source::from_pairs(pairs)).expect("settings");
        let store = Store::connect(&settings, &CancellationToken::new())
            .await
            .expect("redis");
        Self { store, prefix }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open("redis://127.0.0.1:6379") else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut c)
            .unwrap_or_default();
        for k in keys {
            let _: Result<(), _> = redis::cmd("DEL").arg(k).query(&mut c);
        }
    }
}
