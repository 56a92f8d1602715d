//! `cairn`: runs one member of a Cairn cluster.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cairn::config::ServerConfig;

fn main() -> anyhow::Result<()> {
    let mut cfg = ServerConfig::parse();
    if cfg.version {
        print!("{}", cfg.version_text());
        return Ok(());
    }
    let ignored_gates = cfg.resolve_feature_gates().map_err(anyhow::Error::msg)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{},raft=warn", cfg.log_level)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    for gate in ignored_gates {
        tracing::warn!(%gate, "ignoring feature gate");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(cairn::server::run(cfg, shutdown_signal()))
}

/// Resolves on SIGTERM or SIGINT, so in-flight requests finish and the
/// database closes cleanly.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
