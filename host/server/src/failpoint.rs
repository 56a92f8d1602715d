//! Named crash points, so tests can kill a member at an exact step that a
//! `kill -9` from outside could only hit by chance: with
//! `CAIRN_FAILPOINT=<name>` in its environment, a member aborts when it
//! reaches the point of that name. Without the variable they cost one
//! environment lookup each, and they sit only on start-up paths.

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
