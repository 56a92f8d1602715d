//! Diagnostics through the host's `log` import. The host may drop or
//! rate-limit messages; they never influence a decision.
//!
//! Outside Wasm (native unit tests of plugin logic) messages go to stderr, so
//! that logic which logs can be tested without a host.

pub use crate::bindings::admission::cairn::plugin::log::Level;

/// Sends `message` at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::admission::cairn::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin {level:?}] {message}");
}

pub fn debug(message: &str) {
    log(Level::Debug, message)
}

pub fn info(message: &str) {
    log(Level::Info, message)
}

pub fn warn(message: &str) {
    log(Level::Warn, message)
}

pub fn error(message: &str) {
    log(Level::Error, message)
}
