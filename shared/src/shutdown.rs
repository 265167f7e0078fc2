//! Turning SIGINT and SIGTERM into a cancellation every task watches.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received; draining");
        token.cancel();
    });
}

/// In a build with `--cfg tokio_unstable` and the `taskdump` feature (a diagnostic build, see
/// `docs/operations.md`), writes every task's stack to the log on each SIGUSR1: what a process
/// that stopped making progress is waiting on. Other builds have no such handler.
#[cfg(all(tokio_unstable, feature = "taskdump", target_os = "linux"))]
pub fn dump_tasks_on_signal() {
    tokio::spawn(async move {
        let kind = tokio::signal::unix::SignalKind::user_defined1();
        let Ok(mut usr1) = tokio::signal::unix::signal(kind) else {
            return;
        };
        while usr1.recv().await.is_some() {
            let handle = tokio::runtime::Handle::current();
            let Ok(dump) =
                tokio::time::timeout(std::time::Duration::from_secs(5), handle.dump()).await
            else {
                tracing::warn!("task dump timed out");
                continue;
            };
            for (i, task) in dump.tasks().iter().enumerate() {
                eprintln!("--- task {i} ---\n{}", task.trace());
            }
            eprintln!("--- {} tasks ---", dump.tasks().iter().count());
        }
    });
}

/// Without the diagnostic build there is nothing to dump.
#[cfg(not(all(tokio_unstable, feature = "taskdump", target_os = "linux")))]
pub fn dump_tasks_on_signal() {}
