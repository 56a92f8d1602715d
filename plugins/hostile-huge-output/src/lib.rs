//! Hostile test plugin (admission): denies with a huge reason, to check that
//! the host caps what it copies out of a plugin.
//!
//! Config: the reason's length in bytes as ASCII decimal (e.g. `1048576`);
//! empty or unparsable means 64 MiB. The reason is that many `x`s, so the
//! plugin needs a memory cap above that length to get as far as returning.

use cairn_guest_sdk::{Verdict, WriteRequest};

pub const DEFAULT_LEN: usize = 64 << 20;

pub fn reason_len(config: &[u8]) -> usize {
    std::str::from_utf8(config)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_LEN)
}

pub fn admit(config: &[u8], _request: &WriteRequest) -> Verdict {
    Verdict::Deny("x".repeat(reason_len(config)))
}

cairn_guest_sdk::export_admission!(admit);

#[cfg(test)]
mod tests {
    #[test]
    fn config_sets_the_length() {
        assert_eq!(super::reason_len(b"1048576\n"), 1 << 20);
        assert_eq!(super::reason_len(b""), super::DEFAULT_LEN);
        assert_eq!(super::reason_len(b"lots"), super::DEFAULT_LEN);
    }
}
