//! Test fixture (admission): allows every request. Config: ignored.

use cairn_guest_sdk::{Verdict, WriteRequest};

pub fn admit(_config: &[u8], _request: &WriteRequest) -> Verdict {
    Verdict::Allow
}

cairn_guest_sdk::export_admission!(admit);
