//! Fault tests: Herald's built binaries as separate processes, SIGKILLed, SIGTERMed and
//! restarted; the broker and Redis stopped and started under them. They stop shared services,
//! so they live in a test binary of their own (cargo runs test binaries one after another) and
//! take turns inside it.

#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;
mod kills;
mod observe;
mod outages;
mod poison;
mod procs;
mod shutdown;
mod stream;

use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// One fault test at a time.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A workspace whose rule sends `order.*` events to one connection per path of `receiver`;
/// returns its secret key.
pub async fn wire(api: &helpers::Api, receiver: &helpers::TestReceiver, paths: &[&str]) -> String {
    let (_, sk, _) = api.workspace().await;
    for path in paths {
        let (conn, _) = api
            .connection(&sk, &receiver.url(path), serde_json::json!({}))
            .await;
        api.rule(&sk, "order.*", "order", &conn).await;
    }
    // The services see configuration changes within their refresh interval (100 ms here).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    sk
}
