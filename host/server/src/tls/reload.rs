//! A TLS configuration rebuilt when the files it was made from change on
//! disk, so certificates can be rotated without a restart. The files'
//! modification times and sizes are compared at most once per
//! [`CHECK_INTERVAL`], when a connection asks for the configuration. A
//! rebuild that fails (a half-written or mismatched file) keeps the old
//! configuration, logs why, and is tried again when the files change again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::TlsError;

pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;
type Stamp = Option<(SystemTime, u64)>;

pub struct Reloading<T> {
    /// Names the configuration in log lines ("client", "peer", "peer dialer").
    what: &'static str,
    files: Vec<PathBuf>,
    build: Build<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    current: Arc<T>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

impl<T> Reloading<T> {
    /// Builds the first configuration; failing here fails the start.
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        let before = stamps(&files);
        let current = Arc::new(build()?);
        Ok(Reloading {
            what,
            files,
            build: Box::new(build),
            state: Mutex::new(State {
                current,
                stamps: before,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for a new connection, rebuilt first if its files
    /// changed.
    pub fn current(&self) -> Arc<T> {
        let mut state = self.state.lock();
        if self.files.is_empty() || state.checked.elapsed() < CHECK_INTERVAL {
            return state.current.clone();
        }
        state.checked = Instant::now();
        let now = stamps(&self.files);
        if now != state.stamps {
            state.stamps = now;
            match (self.build)() {
                Ok(fresh) => {
                    state.current = Arc::new(fresh);
                    tracing::info!(tls = self.what, files = ?self.files, "TLS certificates reloaded");
                }
                Err(e) => tracing::warn!(tls = self.what, error = %e, "cannot reload TLS certificates; keeping the ones in use"),
            }
        }
        state.current.clone()
    }
}
