//! Hostile test plugin (admission): grows its linear memory by 1 MiB at a
//! time without bound, so only the host's memory cap stops it. The growth
//! is `memory.grow` itself, not an allocator filling pages, so it costs
//! almost no fuel: the cap, not fuel, is what ends the call. When a grow is
//! refused the plugin traps (`unreachable`). Config: ignored.

use cairn_guest_sdk::{Verdict, WriteRequest};

/// 1 MiB in Wasm pages of 64 KiB.
const PAGES_PER_STEP: usize = 16;

pub fn admit(_config: &[u8], _request: &WriteRequest) -> Verdict {
    loop {
        if !grow(PAGES_PER_STEP) {
            refused();
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> bool {
    core::arch::wasm32::memory_grow(0, pages) != usize::MAX
}

#[cfg(target_arch = "wasm32")]
fn refused() -> ! {
    core::arch::wasm32::unreachable()
}

// Native builds (unit tests of the other plugins build the whole workspace)
// never call these.
#[cfg(not(target_arch = "wasm32"))]
fn grow(_pages: usize) -> bool {
    false
}

#[cfg(not(target_arch = "wasm32"))]
fn refused() -> ! {
    std::process::abort()
}

cairn_guest_sdk::export_admission!(admit);
