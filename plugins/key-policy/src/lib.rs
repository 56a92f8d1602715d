//! Reference plugin (validate): naming and size rules for keys and values
//! under the bound prefix.
//!
//! Config (JSON; every field optional, unknown fields are an error):
//!
//! ```json
//! {
//!   "key_pattern": "^/apps/[a-z0-9-]+/[a-z0-9_.-]+$",
//!   "min_depth": 3,
//!   "max_depth": 3,
//!   "separator": "/",
//!   "max_key_bytes": 256,
//!   "max_value_bytes": 65536
//! }
//! ```
//!
//! - `key_pattern`: a regular expression (the `regex` crate's syntax, without
//!   Unicode classes) that the whole key, as UTF-8, must match somewhere;
//!   anchor it with `^...$` to match all of it. Non-UTF-8 keys never match.
//! - `min_depth` / `max_depth`: bounds on the key's depth, the number of
//!   non-empty segments between `separator`s (default `/`): `/apps/web/port`
//!   has depth 3.
//! - `max_key_bytes` / `max_value_bytes`: size limits in bytes.
//!
//! The first rule broken is the deny reason, e.g. `key depth is 2, below the
//! required 3` (the host's error already names the key).

use cairn_guest_sdk::{Entry, Verdict};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub key_pattern: Option<String>,
    pub min_depth: Option<usize>,
    pub max_depth: Option<usize>,
    pub separator: Option<String>,
    pub max_key_bytes: Option<usize>,
    pub max_value_bytes: Option<usize>,
}

pub fn validate(config: &[u8], entry: &Entry) -> Verdict {
    match check(config, &entry.key, &entry.value) {
        Ok(()) => Verdict::Allow,
        Err(reason) => Verdict::deny(reason),
    }
}

/// Whether `key` and `value` follow the policy in `config`; the error is the
/// deny reason.
pub fn check(config: &[u8], key: &[u8], value: &[u8]) -> Result<(), String> {
    let policy: Policy = cairn_guest_sdk::config::json_or_default(config)?;
    if let Some(max) = policy.max_key_bytes {
        if key.len() > max {
            return Err(format!("key is {} bytes, more than the allowed {max}", key.len()));
        }
    }
    if let Some(max) = policy.max_value_bytes {
        if value.len() > max {
            return Err(format!("value is {} bytes, more than the allowed {max}", value.len()));
        }
    }
    if let Some(pattern) = &policy.key_pattern {
        let regex = regex_lite::Regex::new(pattern).map_err(|e| format!("invalid plugin config: key_pattern: {e}"))?;
        let matches = std::str::from_utf8(key).is_ok_and(|k| regex.is_match(k));
        if !matches {
            return Err(format!("key does not match the pattern {pattern:?}"));
        }
    }
    if policy.min_depth.is_some() || policy.max_depth.is_some() {
        let separator = policy.separator.as_deref().unwrap_or("/").as_bytes();
        if separator.is_empty() {
            return Err("invalid plugin config: separator is empty".into());
        }
        let depth = depth(key, separator);
        if let Some(min) = policy.min_depth {
            if depth < min {
                return Err(format!("key depth is {depth}, below the required {min}"));
            }
        }
        if let Some(max) = policy.max_depth {
            if depth > max {
                return Err(format!("key depth is {depth}, above the allowed {max}"));
            }
        }
    }
    Ok(())
}

/// The number of non-empty segments of `key` between `separator`s.
pub fn depth(key: &[u8], separator: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = key;
    loop {
        let (segment, next) = match find(rest, separator) {
            Some(at) => (&rest[..at], Some(&rest[at + separator.len()..])),
            None => (rest, None),
        };
        if !segment.is_empty() {
            count += 1;
        }
        match next {
            Some(next) => rest = next,
            None => return count,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

cairn_guest_sdk::export_validate!(validate);

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &[u8] = br#"{
        "key_pattern": "^/apps/[a-z0-9-]+/[a-z0-9_.-]+$",
        "min_depth": 3,
        "max_depth": 3,
        "max_key_bytes": 40,
        "max_value_bytes": 8
    }"#;

    #[test]
    fn depth_counts_non_empty_segments() {
        assert_eq!(depth(b"/apps/web/port", b"/"), 3);
        assert_eq!(depth(b"apps//web/", b"/"), 2);
        assert_eq!(depth(b"", b"/"), 0);
        assert_eq!(depth(b"a::b::c", b"::"), 3);
    }

    #[test]
    fn conforming_keys_pass() {
        assert_eq!(check(POLICY, b"/apps/web/port", b"8080"), Ok(()));
        assert_eq!(check(b"", b"anything at all", b"any value"), Ok(()));
    }

    #[test]
    fn each_rule_denies_with_its_reason() {
        let reason = check(POLICY, b"/apps/Web/port", b"1").unwrap_err();
        assert!(reason.contains("does not match the pattern"), "{reason}");
        let reason = check(br#"{"min_depth": 3}"#, b"/apps/web", b"1").unwrap_err();
        assert_eq!(reason, "key depth is 2, below the required 3");
        let reason = check(br#"{"max_depth": 1}"#, b"/apps/web", b"1").unwrap_err();
        assert!(reason.contains("above the allowed 1"), "{reason}");
        let reason = check(POLICY, b"/apps/web/port", b"123456789").unwrap_err();
        assert_eq!(reason, "value is 9 bytes, more than the allowed 8");
        let reason = check(POLICY, &[b'a'; 41], b"").unwrap_err();
        assert!(reason.starts_with("key is 41 bytes"), "{reason}");
    }

    #[test]
    fn non_utf8_keys_never_match_a_pattern() {
        let reason = check(br#"{"key_pattern": ""}"#, b"\xff\xfe", b"").unwrap_err();
        assert!(reason.contains("does not match"), "{reason}");
    }

    #[test]
    fn bad_config_denies() {
        for config in [
            &br#"{"key_pattern": "("}"#[..],
            br#"{"max_depth": 2, "separator": ""}"#,
            br#"{"max_dept": 2}"#,
            b"[",
        ] {
            let reason = check(config, b"/k", b"").unwrap_err();
            assert!(reason.starts_with("invalid plugin config:"), "{reason}");
        }
    }

    #[test]
    fn the_export_glue_maps_to_verdicts() {
        let entry = Entry {
            key: b"/apps/web/port".to_vec(),
            value: b"1".to_vec(),
            lease: 0,
        };
        assert_eq!(validate(POLICY, &entry), Verdict::Allow);
        let entry = Entry {
            key: b"/x".to_vec(),
            value: b"1".to_vec(),
            lease: 0,
        };
        assert!(matches!(validate(POLICY, &entry), Verdict::Deny(_)));
    }
}
