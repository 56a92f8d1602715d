//! Named failpoints, so tests can make a member misbehave at an exact step
//! that no fault from outside could hit but by chance: with
//! `CAIRN_FAILPOINT=<name>` in its environment, a member aborts when it
//! reaches the crash point of that name, or takes the faulty branch of
//! that name. Without the `failpoints` feature they compile to nothing.

/// Aborts the process if `CAIRN_FAILPOINT` names this point. Compiled in
/// only with the `failpoints` feature, which the test build turns on.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    if std::env::var_os("CAIRN_FAILPOINT").is_some_and(|v| v == name) {
        tracing::error!(failpoint = name, "CAIRN_FAILPOINT reached: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Whether `CAIRN_FAILPOINT` names this faulty branch (read once: such
/// branches sit on hot paths).
#[cfg(feature = "failpoints")]
pub fn is_set(name: &str) -> bool {
    static SET: std::sync::LazyLock<Option<std::ffi::OsString>> = std::sync::LazyLock::new(|| std::env::var_os("CAIRN_FAILPOINT"));
    SET.as_deref().is_some_and(|v| v == name)
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn is_set(_name: &str) -> bool {
    false
}
