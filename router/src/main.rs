use anyhow::Context;
use herald_shared::config::RouterSettings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = RouterSettings::from_env().context("reading settings")?;
    herald_shared::telemetry::init_logging(settings.common.log_format);
    let cancel = CancellationToken::new();
    herald_shared::shutdown::cancel_on_signal(cancel.clone());
    herald_shared::shutdown::dump_tasks_on_signal();
    let running = herald_router::start(settings, cancel)
        .await
        .context("starting the router")?;
    tracing::info!(addr = %running.addr, "herald-router running");
    Ok(running.wait().await?)
}
