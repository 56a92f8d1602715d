//! Byte layouts of the MVCC column families.
//!
//! `kv_index` keys are the user key, escaped so that byte order is preserved
//! and a terminator can follow it, then the revision inverted so that the
//! newest version of a key sorts first:
//!
//! ```text
//! escape(user_key) 0x00 0x00 | !main (8, BE) | !sub (8, BE)
//! ```
//!
//! Inside `escape`, 0x00 becomes 0x00 0xFF, which keeps the order of any two
//! user keys, and keeps all versions of one key contiguous.
//!
//! `kv_rev` keys are `main (8, BE) | sub (8, BE)`, so that history can be
//! scanned in revision order (watch replay, hashing).

use crate::error::{Error, Result};
use crate::proto::mvccpb::KeyValue;
use prost::Message;

/// A point in the store's history: one main revision per write request, and
/// a sub-revision per change inside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != 16 {
            return Err(Error::Corrupt(format!("revision of {} bytes", b.len())));
        }
        let main = be_u64(&b[..8])? as i64;
        let sub = be_u64(&b[8..])? as i64;
        Ok(Revision { main, sub })
    }
}

const TERMINATOR: [u8; 2] = [0x00, 0x00];

/// Appends the order-preserving escape of `key`, without terminator.
fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    out.reserve(key.len() + 2 + 16);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// The smallest index key of any version of any user key >= `key`.
pub fn index_lower_bound(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    escape_into(key, &mut out);
    out
}

/// An exclusive upper bound for the index keys of all user keys < `end`.
pub fn index_upper_bound(end: &[u8]) -> Vec<u8> {
    index_lower_bound(end)
}

/// The first index key holding a version of `key` at or below `rev.main`.
pub fn index_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = Vec::new();
    escape_into(key, &mut out);
    out.extend_from_slice(&TERMINATOR);
    out.extend_from_slice(&(!(rev.main as u64)).to_be_bytes());
    out.extend_from_slice(&(!(rev.sub as u64)).to_be_bytes());
    out
}

/// Every index key of `key` sorts below this bound, and every index key of
/// a larger user key sorts above it.
pub fn index_key_end(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    escape_into(key, &mut out);
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

fn be_u64(b: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = b
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{} bytes where 8 were stored", b.len())))?;
    Ok(u64::from_be_bytes(raw))
}

/// Splits an index key into the user key and its revision.
pub fn decode_index_key(k: &[u8]) -> Result<(Vec<u8>, Revision)> {
    let corrupt = || Error::Corrupt("malformed index key".into());
    if k.len() < 18 {
        return Err(corrupt());
    }
    let (escaped, rev) = k.split_at(k.len() - 16);
    let body = escaped.strip_suffix(&TERMINATOR).ok_or_else(corrupt)?;
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        key.push(body[i]);
        if body[i] == 0 {
            if body.get(i + 1) != Some(&0xFF) {
                return Err(corrupt());
            }
            i += 1;
        }
        i += 1;
    }
    let main = !be_u64(&rev[..8])? as i64;
    let sub = !be_u64(&rev[8..])? as i64;
    Ok((key, Revision { main, sub }))
}

/// The user-key part (still escaped, with terminator) of an index key; equal
/// prefixes mean the same user key.
pub fn index_key_prefix(k: &[u8]) -> &[u8] {
    &k[..k.len().saturating_sub(16)]
}

const LIVE: u8 = b'L';
const TOMBSTONE: u8 = b'T';

/// What one index entry records: a version of the key, or its deletion.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexValue {
    Live(KeyValue),
    Tombstone,
}

impl IndexValue {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            IndexValue::Live(kv) => {
                let mut out = Vec::with_capacity(1 + kv.encoded_len());
                out.push(LIVE);
                kv.encode(&mut out).expect("vec has room");
                out
            }
            IndexValue::Tombstone => vec![TOMBSTONE],
        }
    }

    pub fn decode(v: &[u8]) -> Result<Self> {
        match v.split_first() {
            Some((&LIVE, rest)) => Ok(IndexValue::Live(KeyValue::decode(rest)?)),
            Some((&TOMBSTONE, _)) => Ok(IndexValue::Tombstone),
            _ => Err(Error::Corrupt("malformed index value".into())),
        }
    }
}

/// `kv_rev` value: whether the change was a put or a delete, then the key.
pub fn encode_rev_value(key: &[u8], tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(if tombstone { TOMBSTONE } else { LIVE });
    out.extend_from_slice(key);
    out
}

pub fn decode_rev_value(v: &[u8]) -> Result<(bool, &[u8])> {
    match v.split_first() {
        Some((&LIVE, key)) => Ok((false, key)),
        Some((&TOMBSTONE, key)) => Ok((true, key)),
        _ => Err(Error::Corrupt("malformed revision value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_or_malformed_keys_are_corrupt_not_a_panic() {
        let key = index_key(b"k", Revision::new(5, 1));
        for n in 0..key.len() {
            assert!(matches!(decode_index_key(&key[..n]), Err(Error::Corrupt(_))), "{n} bytes");
        }
        for n in [0, 8, 15, 17] {
            assert!(matches!(Revision::from_bytes(&vec![1; n]), Err(Error::Corrupt(_))), "{n} bytes");
        }
        assert!(decode_rev_value(b"").is_err());
        assert!(IndexValue::decode(b"").is_err());
    }

    proptest! {
        #[test]
        fn index_keys_round_trip(key in proptest::collection::vec(any::<u8>(), 0..16), main in 0i64..i64::MAX, sub in 0i64..1000) {
            let rev = Revision::new(main, sub);
            let (k, r) = decode_index_key(&index_key(&key, rev)).unwrap();
            prop_assert_eq!(k, key);
            prop_assert_eq!(r, rev);
        }

        #[test]
        fn index_keys_order_by_user_key_then_newest_first(
            a in proptest::collection::vec(0u8..3, 0..6), b in proptest::collection::vec(0u8..3, 0..6),
            ra in 0i64..100, rb in 0i64..100,
        ) {
            let ka = index_key(&a, Revision::new(ra, 0));
            let kb = index_key(&b, Revision::new(rb, 0));
            let expected = a.cmp(&b).then(rb.cmp(&ra));
            prop_assert_eq!(ka.cmp(&kb), expected);
            // Bounds bracket a key's versions.
            prop_assert!(index_lower_bound(&a) <= ka);
            prop_assert!(ka < index_key_end(&a));
            if a < b {
                prop_assert!(ka < index_upper_bound(&b));
                prop_assert!(index_key_end(&a) <= index_lower_bound(&b) || b.starts_with(&a));
            }
        }
    }
}
