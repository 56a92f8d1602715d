//! etcd snapshot → Cairn dump: every bucket read in one pass, each record
//! converted and written as it is read.

use std::path::Path;

use prost::Message;

use super::{
    bolt_error, export::in_etcd_buckets, parse_rev_key, Snapshot, BUCKET_AUTH, BUCKET_AUTH_ROLES, BUCKET_AUTH_USERS, BUCKET_CAIRN,
    BUCKET_KEY, BUCKET_LEASE, BUCKET_META, KEY_AUTH_ENABLED, KEY_AUTH_REVISION, KEY_FINISHED_COMPACT, KEY_SCHEDULED_COMPACT,
};
use crate::error::{Error, Result};
use crate::proto::authpb::{Role, User};
use crate::proto::leasepb::Lease;
use crate::proto::mvccpb::KeyValue;
use crate::storage::dump::{FileWriter, Written};
use crate::storage::encoding::{encode_rev_value, index_key, IndexValue};
use crate::storage::schema::{self, Class};
use crate::storage::schema::{
    META_AUTH_ENABLED, META_AUTH_REVISION, META_AUTH_ROLE_PREFIX, META_AUTH_USER_PREFIX, META_CURRENT_REV, META_FINISHED_COMPACT,
    META_LEASE_PREFIX, META_SCHEDULED_COMPACT,
};
use crate::storage::{CF_KV_INDEX, CF_KV_REV, CF_META};

/// What a conversion found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub dump: Written,
    /// The store's revision: the newest in `key`, or the compacted one.
    pub revision: i64,
    pub compacted: i64,
    /// Versions and deletions in the history.
    pub revisions: u64,
    pub leases: u64,
    pub users: u64,
    pub roles: u64,
    /// Buckets of the file that hold nothing Cairn restores (the old
    /// cluster's members and Raft position, alarms, unknown ones).
    pub skipped_buckets: Vec<String>,
}

fn bad(why: String) -> Error {
    Error::Corrupt(format!("etcd snapshot: {why}"))
}

fn compaction_rev(value: &[u8]) -> Result<i64> {
    Ok(parse_rev_key(value)?.0.main)
}

/// Writes the dump of the state `snap` holds to `out`.
pub fn to_dump(snap: &Snapshot, out: &Path) -> Result<Imported> {
    let db = &snap.db;
    let mut w = FileWriter::create(out)?;
    let mut found = Imported {
        dump: crate::storage::dump::Written {
            len: 0,
            sha256: [0; 32],
            records: 0,
        },
        revision: 1,
        compacted: 0,
        revisions: 0,
        leases: 0,
        users: 0,
        roles: 0,
        skipped_buckets: Vec::new(),
    };
    let mut scheduled = 0;
    let mut newest = 0;
    for name in db.bucket_names().map_err(bolt_error)? {
        let Some(bucket) = db.bucket(&name).map_err(bolt_error)? else {
            continue;
        };
        let known = [
            BUCKET_KEY,
            BUCKET_META,
            BUCKET_LEASE,
            BUCKET_AUTH,
            BUCKET_AUTH_USERS,
            BUCKET_AUTH_ROLES,
            BUCKET_CAIRN,
        ];
        if !known.contains(&name.as_slice()) {
            found.skipped_buckets.push(String::from_utf8_lossy(&name).into_owned());
            continue;
        }
        let mut cursor = db.cursor(&bucket).map_err(bolt_error)?;
        while let Some(entry) = cursor.next_entry().map_err(bolt_error)? {
            if entry.is_bucket {
                return Err(bad(format!("a bucket nested in {:?}", String::from_utf8_lossy(&name))));
            }
            let (k, v) = (entry.key.as_slice(), entry.value.as_slice());
            match name.as_slice() {
                BUCKET_KEY => {
                    let (rev, tombstone) = parse_rev_key(k)?;
                    let kv = KeyValue::decode(v).map_err(|e| bad(format!("key-value at revision {}: {e}", rev.main)))?;
                    if kv.key.is_empty() {
                        return Err(bad(format!("a version without a key at revision {}", rev.main)));
                    }
                    let value = if tombstone {
                        IndexValue::Tombstone
                    } else {
                        IndexValue::Live(kv.clone())
                    };
                    w.put(CF_KV_INDEX, &index_key(&kv.key, rev), &value.encode())?;
                    w.put(CF_KV_REV, &rev.to_bytes(), &encode_rev_value(&kv.key, tombstone))?;
                    newest = newest.max(rev.main);
                    found.revisions += 1;
                }
                BUCKET_META if k == KEY_FINISHED_COMPACT => found.compacted = compaction_rev(v)?,
                BUCKET_META if k == KEY_SCHEDULED_COMPACT => scheduled = compaction_rev(v)?,
                // The old cluster's Raft position (consistent_index, term,
                // confState) and storage version.
                BUCKET_META => {}
                BUCKET_LEASE => {
                    let lease = Lease::decode(v).map_err(|e| bad(format!("lease record: {e}")))?;
                    let id: [u8; 8] = k.try_into().map_err(|_| bad("lease id of other than 8 bytes".into()))?;
                    if i64::from_be_bytes(id) != lease.id {
                        return Err(bad(format!("lease {:x} stored under id {:x}", lease.id, i64::from_be_bytes(id))));
                    }
                    let mut record = Vec::with_capacity(16);
                    record.extend_from_slice(&lease.ttl.to_be_bytes());
                    record.extend_from_slice(&lease.remaining_ttl.to_be_bytes());
                    w.put(CF_META, &[META_LEASE_PREFIX, k].concat(), &record)?;
                    found.leases += 1;
                }
                BUCKET_AUTH if k == KEY_AUTH_ENABLED => {
                    let on = v.first() == Some(&1);
                    w.put(CF_META, META_AUTH_ENABLED, &[u8::from(on)])?;
                }
                BUCKET_AUTH if k == KEY_AUTH_REVISION => {
                    let raw: [u8; 8] = v.try_into().map_err(|_| bad("auth revision of other than 8 bytes".into()))?;
                    w.put(CF_META, META_AUTH_REVISION, &raw)?;
                }
                BUCKET_AUTH => {}
                BUCKET_AUTH_USERS => {
                    let user = User::decode(v).map_err(|e| bad(format!("user record: {e}")))?;
                    if user.name != k {
                        return Err(bad("a user stored under another name".into()));
                    }
                    w.put(CF_META, &[META_AUTH_USER_PREFIX, k].concat(), &user.encode_to_vec())?;
                    found.users += 1;
                }
                BUCKET_AUTH_ROLES => {
                    let role = Role::decode(v).map_err(|e| bad(format!("role record: {e}")))?;
                    if role.name != k {
                        return Err(bad("a role stored under another name".into()));
                    }
                    w.put(CF_META, &[META_AUTH_ROLE_PREFIX, k].concat(), &role.encode_to_vec())?;
                    found.roles += 1;
                }
                _ => {
                    // BUCKET_CAIRN: a Cairn record etcd has no bucket for.
                    let at = k
                        .iter()
                        .position(|b| *b == 0)
                        .ok_or_else(|| bad("cairn record without a column family".into()))?;
                    let cf = std::str::from_utf8(&k[..at])
                        .ok()
                        .and_then(schema::column_family)
                        .ok_or_else(|| bad("cairn record of an unknown column family".into()))?;
                    let key = &k[at + 1..];
                    if schema::class_of(cf, key) != Some(Class::Replicated) || in_etcd_buckets(cf, key) {
                        return Err(bad(format!(
                            "cairn record {cf}/{:?} is not Cairn-only replicated state",
                            String::from_utf8_lossy(key)
                        )));
                    }
                    w.put(cf, key, v)?;
                }
            }
        }
    }
    // etcd's reading: the compacted revision when every newer one was
    // compacted away; a pending compaction stays pending.
    found.revision = newest.max(found.compacted).max(scheduled).max(1);
    if found.compacted > 0 {
        w.put(CF_META, META_FINISHED_COMPACT, &(found.compacted as u64).to_be_bytes())?;
    }
    if scheduled.max(found.compacted) > 0 {
        w.put(
            CF_META,
            META_SCHEDULED_COMPACT,
            &(scheduled.max(found.compacted) as u64).to_be_bytes(),
        )?;
    }
    w.put(CF_META, META_CURRENT_REV, &(found.revision as u64).to_be_bytes())?;
    found.dump = w.finish()?;
    Ok(found)
}
