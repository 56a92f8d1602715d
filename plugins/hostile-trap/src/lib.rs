//! Hostile test plugin (admission): traps on every call.
//!
//! Config: `panic` makes it a Rust panic (which aborts: an `unreachable`
//! after the panic machinery ran); anything else, the empty config included,
//! executes Wasm's `unreachable` instruction directly.

use cairn_guest_sdk::{Verdict, WriteRequest};

pub fn admit(config: &[u8], _request: &WriteRequest) -> Verdict {
    if config == b"panic" {
        panic!("hostile-trap panics on purpose");
    }
    trap()
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}

cairn_guest_sdk::export_admission!(admit);
