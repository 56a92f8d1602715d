//! Reference plugin (admission): at most `max_keys` keys under a prefix.
//!
//! Config (JSON): one limit, or several under `limits`:
//!
//! ```json
//! {"prefix": "/tenants/acme/", "max_keys": 1000}
//! ```
//! ```json
//! {"limits": [{"prefix": "/tenants/acme/", "max_keys": 1000},
//!             {"prefix": "/tenants/globex/", "max_keys": 50}]}
//! ```
//!
//! A request is denied when it would create keys under a prefix that
//! already holds `max_keys` or more, counting what exists through the
//! `state.range-count` import at the revision being applied. Only puts that
//! create a key count: overwriting an existing key, or a request that
//! creates nothing, is always allowed, so a tenant over its quota can still
//! update and delete. Deletes in the same txn are not subtracted (the check
//! is conservative). Deny reason, e.g.
//! `quota exceeded under "/tenants/acme/": 1000 keys exist, the limit is 1000, the request creates 1`.

use std::collections::BTreeSet;

use cairn_guest_sdk::{Verdict, WriteRequest};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub prefix: String,
    pub max_keys: u64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Config {
    Many { limits: Vec<Limit> },
    One(Limit),
}

/// What the quota needs to know about the store.
pub trait Store {
    fn exists(&self, key: &[u8]) -> bool;
    fn prefix_count(&self, prefix: &[u8]) -> u64;
}

/// The store as the host shows it, at the revision being applied.
pub struct HostState;

impl Store for HostState {
    fn exists(&self, key: &[u8]) -> bool {
        cairn_guest_sdk::state::exists(key)
    }

    fn prefix_count(&self, prefix: &[u8]) -> u64 {
        cairn_guest_sdk::state::prefix_count(prefix)
    }
}

pub fn admit(config: &[u8], request: &WriteRequest) -> Verdict {
    match check(config, request, &HostState) {
        Ok(()) => Verdict::Allow,
        Err(reason) => Verdict::deny(reason),
    }
}

pub fn parse_limits(config: &[u8]) -> Result<Vec<Limit>, String> {
    match cairn_guest_sdk::config::json::<Config>(config) {
        Ok(Config::Many { limits }) => Ok(limits),
        Ok(Config::One(limit)) => Ok(vec![limit]),
        Err(_) => Err("invalid plugin config: expected {\"prefix\": STRING, \"max_keys\": N} or {\"limits\": [...]}".into()),
    }
}

/// Whether `request` stays within every limit of `config`; the error is
/// the deny reason.
pub fn check(config: &[u8], request: &WriteRequest, store: &dyn Store) -> Result<(), String> {
    for limit in parse_limits(config)? {
        let prefix = limit.prefix.as_bytes();
        // A txn may put one key twice: it is created once.
        let created: BTreeSet<&[u8]> = request
            .puts()
            .map(|p| p.key.as_slice())
            .filter(|k| k.starts_with(prefix))
            .filter(|k| !store.exists(k))
            .collect();
        if created.is_empty() {
            continue;
        }
        let existing = store.prefix_count(prefix);
        let new = created.len() as u64;
        if existing.saturating_add(new) > limit.max_keys {
            return Err(format!(
                "quota exceeded under {:?}: {existing} keys exist, the limit is {}, the request creates {new}",
                limit.prefix, limit.max_keys
            ));
        }
    }
    Ok(())
}

cairn_guest_sdk::export_admission!(admit);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_guest_sdk::{DeleteOp, Identity, Mutation, PutOp, RequestKind};

    use super::*;

    struct Keys(BTreeMap<Vec<u8>, ()>);

    impl Keys {
        fn of(keys: &[&str]) -> Self {
            Keys(keys.iter().map(|k| (k.as_bytes().to_vec(), ())).collect())
        }
    }

    impl Store for Keys {
        fn exists(&self, key: &[u8]) -> bool {
            self.0.contains_key(key)
        }

        fn prefix_count(&self, prefix: &[u8]) -> u64 {
            self.0.keys().filter(|k| k.starts_with(prefix)).count() as u64
        }
    }

    fn put(key: &str) -> Mutation {
        Mutation::Put(PutOp {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: 0,
        })
    }

    fn request(mutations: Vec<Mutation>) -> WriteRequest {
        WriteRequest {
            kind: RequestKind::Txn,
            mutations,
            identity: Identity { user: String::new() },
            revision: 1,
        }
    }

    const TWO: &[u8] = br#"{"prefix": "/t/", "max_keys": 2}"#;

    #[test]
    fn creating_up_to_the_limit_is_allowed() {
        let store = Keys::of(&["/t/a"]);
        assert_eq!(check(TWO, &request(vec![put("/t/b")]), &store), Ok(()));
    }

    #[test]
    fn creating_past_the_limit_is_denied() {
        let store = Keys::of(&["/t/a", "/t/b"]);
        let reason = check(TWO, &request(vec![put("/t/c")]), &store).unwrap_err();
        assert_eq!(
            reason,
            r#"quota exceeded under "/t/": 2 keys exist, the limit is 2, the request creates 1"#
        );
        let store = Keys::of(&["/t/a"]);
        let reason = check(TWO, &request(vec![put("/t/b"), put("/t/c")]), &store).unwrap_err();
        assert!(reason.ends_with("the request creates 2"), "{reason}");
    }

    #[test]
    fn overwrites_deletes_and_other_prefixes_are_free() {
        let store = Keys::of(&["/t/a", "/t/b", "/t/c"]);
        let delete = Mutation::DeleteRange(DeleteOp {
            key: b"/t/a".to_vec(),
            range_end: vec![],
        });
        assert_eq!(check(TWO, &request(vec![put("/t/a"), delete]), &store), Ok(()));
        assert_eq!(check(TWO, &request(vec![put("/u/x")]), &store), Ok(()));
    }

    #[test]
    fn a_key_put_twice_is_created_once() {
        let store = Keys::of(&["/t/a"]);
        assert_eq!(check(TWO, &request(vec![put("/t/b"), put("/t/b")]), &store), Ok(()));
    }

    #[test]
    fn several_limits_each_apply() {
        let config = br#"{"limits": [{"prefix": "/a/", "max_keys": 5}, {"prefix": "/b/", "max_keys": 0}]}"#;
        let store = Keys::of(&[]);
        assert_eq!(check(config, &request(vec![put("/a/1")]), &store), Ok(()));
        let reason = check(config, &request(vec![put("/a/1"), put("/b/1")]), &store).unwrap_err();
        assert!(reason.contains(r#""/b/""#), "{reason}");
    }

    #[test]
    fn bad_config_denies() {
        for config in [&b""[..], b"{}", br#"{"prefix": "/t/"}"#, br#"{"prefix": "/t/", "max_keys": -1}"#] {
            let reason = check(config, &request(vec![put("/t/a")]), &Keys::of(&[])).unwrap_err();
            assert!(reason.starts_with("invalid plugin config:"), "{reason}");
        }
    }
}
