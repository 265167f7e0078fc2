//! Fault tests: Herald's built binaries as separate processes, SIGKILLed, SIGTERMed and
//! restarted; the broker and Redis stopped and started under them. They stop shared services,
//! so they live in a test binary of their own (cargo runs test binaries one after another) and
//! take turns inside it.

mod alarm;
mod archive_outage;
mod broker_kill;
mod kills;
mod observe;
mod ordered_kills;
mod outages;
mod poison;
mod redis_failover;
mod shutdown;
mod stream;

use std::process::{Command, Stdio};

use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// One fault test at a time.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Runs a command of the machine's broker tools quietly; true when it succeeded.
pub fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
