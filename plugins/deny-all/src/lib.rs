//! Test fixture (admission): denies every request with the reason
//! "denied by deny-all". Config: ignored.

use cairn_guest_sdk::{Verdict, WriteRequest};

pub const REASON: &str = "denied by deny-all";

pub fn admit(_config: &[u8], _request: &WriteRequest) -> Verdict {
    Verdict::deny(REASON)
}

cairn_guest_sdk::export_admission!(admit);
