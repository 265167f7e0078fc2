use anyhow::Context;
use herald_shared::config::IngestSettings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = IngestSettings::from_env().context("reading settings")?;
    herald_shared::telemetry::init_logging(settings.common.log_format);
    if settings.admin_token.is_none() {
        tracing::warn!("HERALD_ADMIN_TOKEN is not set: the admin API (/v1/workspaces) is disabled");
    }
    let cancel = CancellationToken::new();
    herald_shared::shutdown::cancel_on_signal(cancel.clone());
    herald_shared::shutdown::dump_tasks_on_signal();
    let running = herald_ingest::start(settings, cancel)
        .await
        .context("starting ingest")?;
    tracing::info!(addr = %running.addr, "herald-ingest listening");
    Ok(running.wait().await?)
}
