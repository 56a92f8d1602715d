//! Small conveniences over the generated WIT types.

use crate::{Entry, KeyValue, Mutation, PutOp, Verdict, WatchEvent, WriteRequest};

/// `bytes` as UTF-8 text, or `None` when it is not valid UTF-8. etcd keys and
/// values are arbitrary bytes, so a plugin must decide what non-text means.
pub fn key_str(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// Same as [`key_str`], named for values.
pub fn value_str(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// The range end that selects every key starting with `prefix`, by etcd's
/// convention (`etcdctl get --prefix`): the prefix with its last byte below
/// 0xff incremented and the rest dropped; `"\0"` (the whole keyspace from
/// `prefix` on) when every byte is 0xff or the prefix is empty.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The longest reason the host accepts, in bytes; a longer one is the
/// plugin failure `output too large` instead of the intended verdict.
pub const MAX_REASON_BYTES: usize = 4096;

/// `reason` cut to at most [`MAX_REASON_BYTES`] at a character boundary,
/// ending in `...` when cut.
pub fn truncate_reason(mut reason: String) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES - 3;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason.push_str("...");
    reason
}

impl Verdict {
    /// A denial with `reason`, which reaches the client in the gRPC error;
    /// cut to [`MAX_REASON_BYTES`].
    pub fn deny(reason: impl Into<String>) -> Self {
        Verdict::Deny(truncate_reason(reason.into()))
    }

    /// An acceptance that the member logs with `reason`; cut to
    /// [`MAX_REASON_BYTES`].
    pub fn warn(reason: impl Into<String>) -> Self {
        Verdict::Warn(truncate_reason(reason.into()))
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

impl Entry {
    pub fn key_str(&self) -> Option<&str> {
        key_str(&self.key)
    }

    pub fn value_str(&self) -> Option<&str> {
        value_str(&self.value)
    }
}

impl KeyValue {
    pub fn key_str(&self) -> Option<&str> {
        key_str(&self.key)
    }

    pub fn value_str(&self) -> Option<&str> {
        value_str(&self.value)
    }
}

impl PutOp {
    pub fn key_str(&self) -> Option<&str> {
        key_str(&self.key)
    }
}

impl WriteRequest {
    /// The puts of the request, in order (a txn's selected branch included).
    pub fn puts(&self) -> impl Iterator<Item = &PutOp> {
        self.mutations.iter().filter_map(|m| match m {
            Mutation::Put(p) => Some(p),
            Mutation::DeleteRange(_) => None,
        })
    }
}

impl WatchEvent {
    /// The event's current key-value and its previous one (when the watcher
    /// asked for it), for transforms that treat both alike.
    pub fn key_values_mut(&mut self) -> impl Iterator<Item = &mut KeyValue> {
        std::iter::once(&mut self.kv).chain(self.prev_kv.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn reasons_are_cut_at_a_char_boundary() {
        assert_eq!(truncate_reason("short".into()), "short");
        let long = "é".repeat(3000);
        let Verdict::Deny(cut) = Verdict::deny(long) else { unreachable!() };
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.ends_with("é..."));
    }

    #[test]
    fn puts_skips_deletes() {
        let req = WriteRequest {
            kind: crate::RequestKind::Txn,
            mutations: vec![
                Mutation::Put(PutOp {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                    lease: 0,
                }),
                Mutation::DeleteRange(crate::DeleteOp {
                    key: b"b".to_vec(),
                    range_end: vec![],
                }),
                Mutation::Put(PutOp {
                    key: b"c".to_vec(),
                    value: b"2".to_vec(),
                    lease: 0,
                }),
            ],
            identity: crate::Identity { user: String::new() },
            revision: 7,
        };
        let keys: Vec<&[u8]> = req.puts().map(|p| p.key.as_slice()).collect();
        assert_eq!(keys, vec![b"a".as_slice(), b"c".as_slice()]);
    }
}
