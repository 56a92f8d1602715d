//! etcd's snapshot format: a bbolt database holding etcd's backend buckets,
//! as `etcdctl snapshot save` writes it (followed by a sha256 of the
//! database) and as `etcdutl snapshot restore` reads it.
//!
//! [`import`] turns such a file, from etcd 3.4, 3.5 or 3.6, into a Cairn
//! dump, which the one install path then restores; [`export`] writes the
//! state a RocksDB snapshot sees as such a file, which is what
//! `Maintenance.Snapshot` streams. The buckets and their encodings:
//!
//! | bucket | key | value | Cairn |
//! | --- | --- | --- | --- |
//! | `key` | main rev (8, BE) `_` sub rev (8, BE), `t` after a deletion | `mvccpb.KeyValue` (only the key for a deletion) | `kv_index`, `kv_rev` |
//! | `meta` | `finishedCompactRev`, `scheduledCompactRev` | a revision as in `key` | compaction marks |
//! | `meta` | `consistent_index` (3.4+), `term`, `confState` (3.5+) | the old cluster's Raft position | not carried |
//! | `lease` | lease id (8, BE) | `leasepb.Lease` | `lease/` records |
//! | `auth` | `authEnabled`, `authRevision` | one byte; u64 BE | auth flags |
//! | `authUsers`, `authRoles` | name | `authpb.User`, `authpb.Role` | auth records |
//! | `members`, `members_removed`, `cluster`, `alarm` | | the old cluster's members, version and alarms | not carried |
//! | `cairn` | column family, 0, key | the record | Cairn's own state etcd has no bucket for (plugin bindings) |
//!
//! The store's revision is not stored: like etcd, it is the newest revision
//! in `key`, or the compacted revision when that is newer.

pub mod export;
pub mod import;

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::storage::encoding::Revision;

pub const BUCKET_ALARM: &[u8] = b"alarm";
pub const BUCKET_AUTH: &[u8] = b"auth";
pub const BUCKET_AUTH_ROLES: &[u8] = b"authRoles";
pub const BUCKET_AUTH_USERS: &[u8] = b"authUsers";
pub const BUCKET_CAIRN: &[u8] = b"cairn";
pub const BUCKET_CLUSTER: &[u8] = b"cluster";
pub const BUCKET_KEY: &[u8] = b"key";
pub const BUCKET_LEASE: &[u8] = b"lease";
pub const BUCKET_MEMBERS: &[u8] = b"members";
pub const BUCKET_MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const BUCKET_META: &[u8] = b"meta";

pub const KEY_CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const KEY_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub const KEY_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub const KEY_AUTH_ENABLED: &[u8] = b"authEnabled";
pub const KEY_AUTH_REVISION: &[u8] = b"authRevision";

/// etcd's rule for a snapshot file: a length of a multiple of 512 plus 32
/// means a sha256 of the rest follows the database.
const TRAILER_ALIGN: u64 = 512;
const SHA_BYTES: u64 = 32;

/// A revision as etcd's `key` bucket spells it.
pub fn rev_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&(rev.main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(rev.sub as u64).to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// Parses a `key` bucket key: the revision and whether it marks a deletion.
pub fn parse_rev_key(k: &[u8]) -> Result<(Revision, bool)> {
    let bad = || Error::Corrupt(format!("etcd snapshot: {k:x?} is not a revision"));
    let tombstone = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return Err(bad()),
    };
    if k[8] != b'_' {
        return Err(bad());
    }
    let main = u64::from_be_bytes(k[..8].try_into().map_err(|_| bad())?) as i64;
    let sub = u64::from_be_bytes(k[9..17].try_into().map_err(|_| bad())?) as i64;
    if main < 0 || sub < 0 {
        return Err(bad());
    }
    Ok((Revision::new(main, sub), tombstone))
}

fn bolt_error(e: bbolt::Error) -> Error {
    match e {
        bbolt::Error::Io(e) => Error::Io(e),
        other => Error::Corrupt(format!("etcd snapshot: {other}")),
    }
}

/// Whether `path` starts like a bbolt database (a meta page's magic).
pub fn is_bbolt(path: &Path) -> Result<bool> {
    let mut head = [0u8; 20];
    let file = File::open(path)?;
    if file.metadata()?.len() < head.len() as u64 {
        return Ok(false);
    }
    file.read_exact_at(&mut head, 0)?;
    Ok(u32::from_le_bytes([head[16], head[17], head[18], head[19]]) == bbolt::MAGIC)
}

/// An etcd snapshot file, opened.
pub struct Snapshot {
    pub db: bbolt::Db,
    /// Whether the file ends in etcd's sha256 trailer (checked unless
    /// asked not to).
    pub has_trailer: bool,
    pub file_len: u64,
}

/// Opens an etcd snapshot, checking the trailing sha256 when there is one
/// and `check_hash` is set.
pub fn open(path: &Path, check_hash: bool) -> Result<Snapshot> {
    let file_len = std::fs::metadata(path)?.len();
    let has_trailer = file_len % TRAILER_ALIGN == SHA_BYTES;
    let db_len = if has_trailer { file_len - SHA_BYTES } else { file_len };
    if has_trailer && check_hash {
        let mut f = File::open(path)?;
        let mut hash = Sha256::new();
        std::io::copy(&mut BufReader::with_capacity(1 << 20, &mut f).take(db_len), &mut hash)?;
        let mut want = [0u8; SHA_BYTES as usize];
        f.read_exact_at(&mut want, db_len)?;
        if hash.finalize().as_slice() != want {
            return Err(Error::Corrupt("etcd snapshot: sha256 checksum mismatch".into()));
        }
    }
    let db = bbolt::Db::open(path, Some(db_len)).map_err(bolt_error)?;
    Ok(Snapshot { db, has_trailer, file_len })
}

/// What an etcd snapshot holds, as `etcdctl snapshot status` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The newest revision in `key` (etcd's own reading of it).
    pub revision: i64,
    /// Keys in all buckets.
    pub total_keys: u64,
    /// Bytes of the database, without the trailer.
    pub total_size: u64,
}

/// Reads every bucket of an etcd snapshot (so its every page) and tells
/// what it holds.
pub fn status(path: &Path) -> Result<Status> {
    let snap = open(path, true)?;
    let db = &snap.db;
    let mut status = Status {
        revision: 0,
        total_keys: 0,
        total_size: db.pages() * db.page_size() as u64,
    };
    for name in db.bucket_names().map_err(bolt_error)? {
        let Some(bucket) = db.bucket(&name).map_err(bolt_error)? else {
            continue;
        };
        let mut cursor = db.cursor(&bucket).map_err(bolt_error)?;
        while let Some(entry) = cursor.next_entry().map_err(bolt_error)? {
            status.total_keys += 1;
            if name == BUCKET_KEY {
                status.revision = parse_rev_key(&entry.key)?.0.main;
            }
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_round_trip_and_malformed_ones_are_refused() {
        for (rev, t) in [(Revision::new(5, 0), false), (Revision::new(1 << 40, 3), true)] {
            assert_eq!(parse_rev_key(&rev_key(rev, t)).unwrap(), (rev, t));
        }
        assert_eq!(rev_key(Revision::new(2, 1), false), b"\0\0\0\0\0\0\0\x02_\0\0\0\0\0\0\0\x01");
        let good = rev_key(Revision::new(2, 0), false);
        for bad in [
            &good[..16],
            &[good.as_slice(), b"x"].concat(),
            &[&good[..8], b"-", &good[9..]].concat(),
        ] {
            assert!(parse_rev_key(bad).is_err());
        }
    }
}
