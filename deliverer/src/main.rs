use anyhow::Context;
use herald_shared::config::DelivererSettings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = DelivererSettings::from_env().context("reading settings")?;
    herald_shared::telemetry::init_logging(settings.common.log_format);
    let cancel = CancellationToken::new();
    herald_shared::shutdown::cancel_on_signal(cancel.clone());
    herald_shared::shutdown::dump_tasks_on_signal();
    let running = herald_deliverer::start(settings, cancel)
        .await
        .context("starting the deliverer")?;
    tracing::info!(addr = %running.addr, "herald-deliverer running");
    Ok(running.wait().await?)
}
