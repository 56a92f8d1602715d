//! Hostile test plugin (admission): recurses without bound until a stack
//! runs out: the engine's (the host's fixed `max_wasm_stack`) or the shadow
//! stack Rust keeps in linear memory (1 MiB, whose overflow is an
//! out-of-bounds access), whichever comes first. Both are traps. Config:
//! ignored.

use std::hint::black_box;

use cairn_guest_sdk::{Verdict, WriteRequest};

#[allow(unconditional_recursion)]
#[inline(never)]
fn descend(depth: u64) -> u64 {
    // The addition after the call keeps it from being a tail call.
    black_box(descend(black_box(depth + 1))).wrapping_add(1)
}

pub fn admit(_config: &[u8], _request: &WriteRequest) -> Verdict {
    Verdict::deny(format!("unreachable: depth {}", descend(0)))
}

cairn_guest_sdk::export_admission!(admit);
