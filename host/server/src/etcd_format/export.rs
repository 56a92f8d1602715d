//! RocksDB snapshot → etcd snapshot file: each bucket written in key order
//! straight from the column families, so the file is built page by page.

use std::path::Path;

use rocksdb::{Direction, IteratorMode, Snapshot};

use super::{
    bolt_error, rev_key, BUCKET_ALARM, BUCKET_AUTH, BUCKET_AUTH_ROLES, BUCKET_AUTH_USERS, BUCKET_CAIRN, BUCKET_CLUSTER, BUCKET_KEY,
    BUCKET_LEASE, BUCKET_MEMBERS, BUCKET_MEMBERS_REMOVED, BUCKET_META, KEY_AUTH_ENABLED, KEY_AUTH_REVISION, KEY_CONSISTENT_INDEX,
    KEY_FINISHED_COMPACT, KEY_SCHEDULED_COMPACT,
};
use crate::error::{Error, Result};
use crate::proto::leasepb::Lease;
use crate::storage::encoding::{decode_rev_value, index_key, Revision};
use crate::storage::schema::{self, Class};
use crate::storage::schema::{
    META_APPLIED_INDEX, META_AUTH_ENABLED, META_AUTH_REVISION, META_AUTH_ROLE_PREFIX, META_AUTH_USER_PREFIX, META_CURRENT_REV,
    META_FINISHED_COMPACT, META_LEASE_PREFIX, META_SCHEDULED_COMPACT,
};
use crate::storage::{Database, CF_KV_INDEX, CF_KV_REV, CF_META};
use prost::Message;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Bytes of the database file.
    pub len: u64,
    pub revisions: u64,
    pub leases: u64,
}

/// Whether a replicated record has a place in etcd's own buckets (or, for
/// the store's revision, is derived from them), so that the `cairn` bucket
/// must not hold it.
pub fn in_etcd_buckets(cf: &str, key: &[u8]) -> bool {
    cf != CF_META
        || [
            META_CURRENT_REV,
            META_SCHEDULED_COMPACT,
            META_FINISHED_COMPACT,
            META_AUTH_ENABLED,
            META_AUTH_REVISION,
        ]
        .contains(&key)
        || [META_LEASE_PREFIX, META_AUTH_USER_PREFIX, META_AUTH_ROLE_PREFIX]
            .iter()
            .any(|p| key.starts_with(p))
}

/// Calls `visit` with every meta record under `prefix`, in key order, name
/// part only.
fn meta_prefixed(engine: &Database, snap: &Snapshot<'_>, prefix: &[u8], mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
    for item in snap.iterator_cf(engine.cf(CF_META), IteratorMode::From(prefix, Direction::Forward)) {
        let (k, v) = item?;
        let Some(rest) = k.strip_prefix(prefix) else {
            break;
        };
        visit(rest, &v)?;
    }
    Ok(())
}

fn meta_u64(engine: &Database, snap: &Snapshot<'_>, key: &[u8]) -> Result<Option<u64>> {
    match snap.get_cf(engine.cf(CF_META), key)? {
        None => Ok(None),
        Some(v) => {
            let raw: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt(format!("meta record {:?}", String::from_utf8_lossy(key))))?;
            Ok(Some(u64::from_be_bytes(raw)))
        }
    }
}

/// Writes the state `snap` sees to `path` as an etcd snapshot database
/// (without the sha256 trailer, which the stream adds). Blocking.
pub fn write(engine: &Database, snap: &Snapshot<'_>, path: &Path, page_size: u32) -> Result<Exported> {
    let mut w = bbolt::Writer::create(path, page_size).map_err(bolt_error)?;
    let mut found = Exported {
        len: 0,
        revisions: 0,
        leases: 0,
    };
    w.bucket(BUCKET_ALARM).map_err(bolt_error)?.finish().map_err(bolt_error)?;

    let mut auth = w.bucket(BUCKET_AUTH).map_err(bolt_error)?;
    if let Some(v) = snap.get_cf(engine.cf(CF_META), META_AUTH_ENABLED)? {
        auth.put(KEY_AUTH_ENABLED, &[u8::from(v.first() == Some(&1))]).map_err(bolt_error)?;
    }
    if let Some(rev) = meta_u64(engine, snap, META_AUTH_REVISION)? {
        auth.put(KEY_AUTH_REVISION, &rev.to_be_bytes()).map_err(bolt_error)?;
    }
    auth.finish().map_err(bolt_error)?;

    for (bucket, prefix) in [
        (BUCKET_AUTH_ROLES, META_AUTH_ROLE_PREFIX),
        (BUCKET_AUTH_USERS, META_AUTH_USER_PREFIX),
    ] {
        let mut b = w.bucket(bucket).map_err(bolt_error)?;
        meta_prefixed(engine, snap, prefix, |name, v| b.put(name, v).map_err(bolt_error))?;
        b.finish().map_err(bolt_error)?;
    }

    let mut cairn = w.bucket(BUCKET_CAIRN).map_err(bolt_error)?;
    for item in snap.iterator_cf(engine.cf(CF_META), IteratorMode::Start) {
        let (k, v) = item?;
        if schema::class_of(CF_META, &k) == Some(Class::Replicated) && !in_etcd_buckets(CF_META, &k) {
            cairn.put(&[CF_META.as_bytes(), &[0], &k].concat(), &v).map_err(bolt_error)?;
        }
    }
    cairn.finish().map_err(bolt_error)?;

    w.bucket(BUCKET_CLUSTER).map_err(bolt_error)?.finish().map_err(bolt_error)?;

    let mut keys = w.bucket(BUCKET_KEY).map_err(bolt_error)?;
    let index = engine.cf(CF_KV_INDEX);
    for item in snap.iterator_cf(engine.cf(CF_KV_REV), IteratorMode::Start) {
        let (k, v) = item?;
        let rev = Revision::from_bytes(&k)?;
        let (tombstone, user_key) = decode_rev_value(&v)?;
        if tombstone {
            // etcd records a deletion as a key-value holding the key alone.
            let kv = crate::proto::mvccpb::KeyValue {
                key: user_key.to_vec(),
                ..Default::default()
            };
            keys.put(&rev_key(rev, true), &kv.encode_to_vec()).map_err(bolt_error)?;
        } else {
            let stored = snap
                .get_cf(index, index_key(user_key, rev))?
                .ok_or_else(|| Error::Corrupt(format!("revision {} is missing from the key index", rev.main)))?;
            // A live version is stored as 'L' and the key-value's encoding.
            let kv = stored
                .strip_prefix(b"L")
                .ok_or_else(|| Error::Corrupt(format!("revision {} is a deletion in the key index", rev.main)))?;
            keys.put(&rev_key(rev, false), kv).map_err(bolt_error)?;
        }
        found.revisions += 1;
    }
    keys.finish().map_err(bolt_error)?;

    let mut leases = w.bucket(BUCKET_LEASE).map_err(bolt_error)?;
    meta_prefixed(engine, snap, META_LEASE_PREFIX, |id, v| {
        let bad = || Error::Corrupt("malformed lease record".into());
        let id_raw: [u8; 8] = id.try_into().map_err(|_| bad())?;
        let ttl: [u8; 8] = v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        let remaining: [u8; 8] = v.get(8..16).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        let lease = Lease {
            id: i64::from_be_bytes(id_raw),
            ttl: i64::from_be_bytes(ttl),
            remaining_ttl: i64::from_be_bytes(remaining),
        };
        found.leases += 1;
        leases.put(id, &lease.encode_to_vec()).map_err(bolt_error)
    })?;
    leases.finish().map_err(bolt_error)?;

    // The members are the new cluster's business: `etcdutl snapshot
    // restore` writes them from its flags.
    w.bucket(BUCKET_MEMBERS).map_err(bolt_error)?.finish().map_err(bolt_error)?;
    w.bucket(BUCKET_MEMBERS_REMOVED).map_err(bolt_error)?.finish().map_err(bolt_error)?;

    let mut meta = w.bucket(BUCKET_META).map_err(bolt_error)?;
    if let Some(applied) = meta_u64(engine, snap, META_APPLIED_INDEX)? {
        meta.put(KEY_CONSISTENT_INDEX, &applied.to_be_bytes()).map_err(bolt_error)?;
    }
    let finished = meta_u64(engine, snap, META_FINISHED_COMPACT)?;
    let scheduled = meta_u64(engine, snap, META_SCHEDULED_COMPACT)?;
    for (key, rev) in [(KEY_FINISHED_COMPACT, finished), (KEY_SCHEDULED_COMPACT, scheduled)] {
        if let Some(rev) = rev {
            meta.put(key, &rev_key(Revision::new(rev as i64, 0), false)).map_err(bolt_error)?;
        }
    }
    meta.finish().map_err(bolt_error)?;
    found.len = w.finish().map_err(bolt_error)?;
    Ok(found)
}
