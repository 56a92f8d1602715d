//! Hostile test plugin (admission): allocates and touches 1 MiB blocks until
//! memory runs out, so only the host's memory cap stops it (the allocation
//! failure aborts, which is a trap). Config: ignored.

use std::hint::black_box;

use cairn_guest_sdk::{Verdict, WriteRequest};

const BLOCK: usize = 1 << 20;

pub fn admit(_config: &[u8], _request: &WriteRequest) -> Verdict {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled with non-zero bytes so that every page is really written.
        blocks.push(black_box(vec![0xa5; BLOCK]));
        black_box(&blocks);
    }
}

cairn_guest_sdk::export_admission!(admit);
