//! Hostile test plugin (admission): loops forever, so only fuel metering
//! stops it. Config: ignored.

use std::hint::black_box;

use cairn_guest_sdk::{Verdict, WriteRequest};

pub fn admit(_config: &[u8], _request: &WriteRequest) -> Verdict {
    // black_box keeps the optimiser from proving anything about the loop.
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

cairn_guest_sdk::export_admission!(admit);
